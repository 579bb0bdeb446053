"""Fine-tuning Metric3D on your own RGB-D data (``metro finetune``): losses, canonical camera, data, loop.

Needs torch (the ``metrocli[train]`` extra adds nothing else); importing this package does not import torch.
"""
