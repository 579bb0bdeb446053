"""Metric3D networks (v2 ViT + DPT/ConvGRU decoder, v1 ConvNeXt + hourglass), presets, checkpoint
remapping and loading, canonical pre/post-processing.
torch only; the torch → numpy boundary is :meth:`metrocli.model.metric3d.Metric3D.predict`."""
