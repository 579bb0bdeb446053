"""The five published Metric3D models: architecture hyper-parameters and checkpoint file names.

Pure data (no torch import) so that the CLI can list models without loading anything heavy.
Values follow the official configs ``mono/configs/HourglassDecoder/{vit.raft5.*,convtiny.*,convlarge.*}.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

from metrocli.errors import MetroUsageError

#: Network family: Metric3D v2 (DINOv2 ViT + DPT/ConvGRU) or v1 (ConvNeXt + hourglass).
Family = Literal["vit", "convnext"]

#: Focal length (pixels) of Metric3D's canonical camera: depth is predicted as if seen by it.
CANONICAL_FOCAL_PX = 1000.0
#: ImageNet mean / std of the 8-bit RGB channels, used to normalise the network input.
RGB_MEAN = (123.675, 116.28, 103.53)
RGB_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Preset:
    """Architecture and checkpoint of one published Metric3D model.

    Attributes:
        name: preset name used on the command line, e.g. ``"vit-small"``.
        family: ``"vit"`` (Metric3D v2: DINOv2 + DPT/ConvGRU, depth and normals) or ``"convnext"``
            (Metric3D v1: ConvNeXt + hourglass decoder, depth only).
        filename: file name of the official checkpoint in the Hugging Face repository ``hf_repo``.
        hf_repo: Hugging Face repository holding the official checkpoints.
        input_size: (H, W) pixels of the padded network input.
        depth_range_m: (min, max) canonical depth in metres the decoder regresses over.
        gru_iters: ConvGRU refinement iterations (ViT only; 0 for ConvNeXt).
        embed_dim: width of the encoder tokens (ViT) or of the last ConvNeXt stage.
        depth: number of transformer blocks (ViT) or 0.
        num_heads: attention heads (ViT) or 0.
        ffn: ``"mlp"`` (GELU MLP, ratio 4) or ``"swiglu"`` (giant2) feed-forward layers (ViT).
        ffn_hidden: hidden width of one feed-forward branch (ViT).
        num_register_tokens: DINOv2 register tokens (ViT).
        patch_size: ViT patch size in pixels.
        intermediate_features: ViT only: True when the decoder reads the (un-normalised) outputs of the
            blocks at each quarter of the depth (giant2); False when it reads the final normalised tokens
            four times (small, large).
        feature_channels: decoder feature widths at [1/4, 1/7, 1/14, 1/14] (ViT).
        decoder_channels: DPT fusion widths [-, 1/4, 1/7, 1/14, 1/14] (ViT).
        hidden_channels: ConvGRU hidden width (ViT).
        convnext_dims: channel widths of the four ConvNeXt stages (ConvNeXt).
        convnext_depths: blocks per ConvNeXt stage (ConvNeXt).
        hourglass_channels: hourglass feature-pyramid widths at (unused, 1/4, 1/8, 1/16), the official
            ``decoder_channel`` (ConvNeXt).
    """

    name: str
    family: Family
    filename: str
    input_size: tuple[int, int]
    depth_range_m: tuple[float, float]
    hf_repo: str = "JUGGHM/Metric3D"
    gru_iters: int = 0
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    ffn: Literal["mlp", "swiglu"] = "mlp"
    ffn_hidden: int = 0
    num_register_tokens: int = 4
    patch_size: int = 14
    intermediate_features: bool = False
    feature_channels: tuple[int, int, int, int] = (0, 0, 0, 0)
    decoder_channels: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    hidden_channels: int = 0
    convnext_dims: tuple[int, int, int, int] = (0, 0, 0, 0)
    convnext_depths: tuple[int, int, int, int] = (0, 0, 0, 0)
    hourglass_channels: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def has_normals(self) -> bool:
        """True for the models that also predict surface normals (Metric3D v2, ViT)."""
        return self.family == "vit"

    @property
    def size_multiple_px(self) -> int:
        """The network input's height and width are multiples of this: two ViT patches (28 px, so that the
        decoder's 1/28 level has whole cells), or the 32 px stride of ConvNeXt's last stage."""
        return 2 * self.patch_size if self.family == "vit" else 32


_vit = partial(Preset, family="vit", input_size=(616, 1064), depth_range_m=(0.1, 200.0))
_convnext = partial(Preset, family="convnext", input_size=(544, 1216), depth_range_m=(0.3, 150.0))

PRESETS: dict[str, Preset] = {
    "vit-small": _vit(
        name="vit-small",
        filename="metric_depth_vit_small_800k.pth",
        gru_iters=4,
        embed_dim=384,
        depth=12,
        num_heads=6,
        ffn="mlp",
        ffn_hidden=1536,
        feature_channels=(96, 192, 384, 768),
        decoder_channels=(48, 96, 192, 384, 384),
        hidden_channels=48,
    ),
    "vit-large": _vit(
        name="vit-large",
        filename="metric_depth_vit_large_800k.pth",
        gru_iters=8,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        ffn="mlp",
        ffn_hidden=4096,
        feature_channels=(256, 512, 1024, 1024),
        decoder_channels=(128, 256, 512, 1024, 1024),
        hidden_channels=128,
    ),
    "vit-giant2": _vit(
        name="vit-giant2",
        filename="metric_depth_vit_giant2_800k.pth",
        gru_iters=8,
        embed_dim=1536,
        depth=40,
        num_heads=24,
        ffn="swiglu",
        ffn_hidden=4096,
        intermediate_features=True,
        feature_channels=(384, 768, 1536, 1536),
        decoder_channels=(192, 384, 768, 1536, 1536),
        hidden_channels=192,
    ),
    "convnext-tiny": _convnext(
        name="convnext-tiny",
        filename="convtiny_hourglass_v1.pth",
        embed_dim=768,
        convnext_dims=(96, 192, 384, 768),
        convnext_depths=(3, 3, 9, 3),
        hourglass_channels=(64, 64, 128, 256),
    ),
    "convnext-large": _convnext(
        name="convnext-large",
        filename="convlarge_hourglass_0.3_150_step750k_v1.1.pth",
        embed_dim=1536,
        convnext_dims=(192, 384, 768, 1536),
        convnext_depths=(3, 3, 27, 3),
        hourglass_channels=(128, 128, 256, 512),
    ),
}

#: Preset used when the user names none.
DEFAULT_MODEL = "vit-small"


def get_preset(name: str) -> Preset:
    """The preset called ``name``; raises :class:`MetroUsageError` listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(PRESETS)
        raise MetroUsageError(f"unknown model {name!r}; choose one of: {valid}") from None
