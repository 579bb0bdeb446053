"""Metric3D v1: a ConvNeXt encoder with the hourglass depth decoder (depth only).

The network maps a normalised, padded image ``(B, 3, H, W)`` (``H`` and ``W`` multiples of 32; the published
models run at 544x1216) to canonical-camera metric depth and a confidence logit at the input resolution:

1. ConvNeXt (stem /4, then stages at /4, /8, /16, /32) gives four feature maps.
2. A U-Net-like feature pyramid (ELU convolutions, reflection padding, nearest upsampling) fuses them into one
   /4 map; a small encoder-decoder (``unet``) turns that into 256 depth features plus one confidence channel.
3. Depth at /4 is the expectation over 512 log-spaced depth bins spanning the configured range (softmax over
   the bin logits of ``bin_head``).
4. Full resolution: the /4 depth is nearest-upsampled x4 and a residual, computed from the /4 depth, the pixel
   grid and the depth features, is added (weighted 0.1). The confidence is nearest-upsampled x4 (raw logit).

There is no clamp in this decoder: ``depth`` is the official ``prediction`` unchanged.

Module names are metrocli's own; :data:`metrocli.model.remap.CONVNEXT_RULES` maps official checkpoint keys
(``depth_model.encoder.*`` / ``depth_model.decoder.*``) onto this module's ``state_dict`` keys
(``encoder.*`` / ``decoder.*``, relative to :class:`ConvNeXtHourglass` itself).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metrocli.errors import MetroUsageError
from metrocli.model.layers import LayerNorm2d, Mlp
from metrocli.model.presets import Preset, get_preset

#: Log-spaced depth bins of the depth regressor.
DEPTH_BINS = 512
#: Width of the hourglass U-Net's first level.
UNET_CHANNELS = 128
#: Depth-feature channels the U-Net outputs (plus one confidence channel).
DEPTH_FEATURE_CHANNELS = 256
#: Width of the full-resolution refinement head.
REFINE_CHANNELS = 16
#: LayerNorm epsilon of ConvNeXt.
LAYER_NORM_EPS = 1e-6


# ----------------------------------------------------------------------------------------------------------
# ConvNeXt encoder
# ----------------------------------------------------------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    """Residual block: 7x7 depth-wise conv, LayerNorm, MLP (channels-last), per-channel layer scale."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, 4 * dim)
        self.layer_scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.layer_scale * self.mlp(self.norm(y))
        return x + y.permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """LayerNorm over channels, then a 2x2 stride-2 convolution (halves H and W)."""

    def __init__(self, in_dim: int, out_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = LayerNorm2d(in_dim, eps=eps)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x))


class Stem(nn.Module):
    """4x4 stride-4 patchify convolution followed by a channel LayerNorm."""

    def __init__(self, in_chans: int, dim: int, eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel_size=4, stride=4)
        self.norm = LayerNorm2d(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class ConvNeXtStage(nn.Module):
    """Optional :class:`Downsample` (all stages but the first), then ``depth`` :class:`ConvNeXtBlock`."""

    def __init__(self, in_dim: int, dim: int, depth: int, eps: float, downsample: bool) -> None:
        super().__init__()
        self.downsample: nn.Module = Downsample(in_dim, dim, eps) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim, eps) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXtEncoder(nn.Module):
    """ConvNeXt feature extractor without classification head.

    ``forward(x)``: x (B,3,H,W) float -> 4 maps (B, dims[i], H/2^(i+2), W/2^(i+2)) for i = 0..3.
    """

    def __init__(self, depths: tuple[int, ...], dims: tuple[int, ...], eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.stem = Stem(3, dims[0], eps)
        self.stages = nn.ModuleList(
            ConvNeXtStage(dims[max(i - 1, 0)], dims[i], depths[i], eps, downsample=i > 0) for i in range(4)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


# ----------------------------------------------------------------------------------------------------------
# Hourglass decoder
# ----------------------------------------------------------------------------------------------------------


class ConvELU(nn.Module):
    """Conv (3x3 with reflection padding, or 1x1) + ELU, optionally then a 1x1 conv + ELU (``conv2``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, double: bool) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size, padding=pad, padding_mode="reflect")
        self.conv2 = nn.Conv2d(out_ch, out_ch, 1) if double else None

    def forward(self, x: Tensor) -> Tensor:
        x = F.elu(self.conv1(x))
        if self.conv2 is not None:
            x = F.elu(self.conv2(x))
        return x


class FeaturePyramid(nn.Module):
    """Fuses the four encoder maps into one /4 map with ``decoder_channels[1]`` channels.

    For level l = 3, 2, 1: reduce the running map (``reduce{l}``), upsample x2 (nearest), concatenate the
    encoder map of level l-1, fuse (``merge{l}``). Level 3 uses 1x1 convolutions, levels 2 and 1 use 3x3.
    """

    def __init__(self, feat_channels: tuple[int, ...], dec_channels: tuple[int, ...]) -> None:
        super().__init__()
        c, f = dec_channels, feat_channels
        self.reduce3 = ConvELU(f[3], c[3], 1, double=False)
        self.merge3 = ConvELU(f[2] + c[3], c[3], 1, double=True)
        self.reduce2 = ConvELU(c[3], c[2], 3, double=False)
        self.merge2 = ConvELU(f[1] + c[2], c[2], 3, double=True)
        self.reduce1 = ConvELU(c[2], c[1], 3, double=False)
        self.merge1 = ConvELU(f[0] + c[1], c[1], 3, double=True)

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[3]
        for reduce, merge, skip in (
            (self.reduce3, self.merge3, feats[2]),
            (self.reduce2, self.merge2, feats[1]),
            (self.reduce1, self.merge1, feats[0]),
        ):
            x = F.interpolate(reduce(x), scale_factor=2.0, mode="nearest")
            x = merge(torch.cat((x, skip), dim=1))
        return x


class ConvBNReLU(nn.Module):
    """3x3 conv (no bias, given stride) + BatchNorm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class UpBNReLU(nn.Module):
    """3x3 stride-2 transposed conv (no bias, exact x2 upsampling) + BatchNorm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.deconv(x)))


class HourglassUNet(nn.Module):
    """Three-level encoder-decoder with additive skips at /4 resolution; ``head`` maps to ``out_ch`` channels.

    Channels: stem ``width``, then width/2, width/4, width/8 at /8, /16, /32 of the image.
    """

    def __init__(self, in_ch: int, out_ch: int, width: int = 128, levels: int = 3) -> None:
        super().__init__()
        chans = [width // (2**i) for i in range(levels + 1)]
        self.stem = ConvBNReLU(in_ch, chans[0])
        self.down = nn.ModuleList(
            nn.Sequential(
                ConvBNReLU(chans[i], chans[i + 1], stride=2), ConvBNReLU(chans[i + 1], chans[i + 1])
            )
            for i in range(levels)
        )
        self.up = nn.ModuleList(UpBNReLU(chans[i + 1], chans[i]) for i in range(levels))
        self.head = nn.Conv2d(chans[0], out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for level in reversed(range(len(self.up))):
            x = skips[level] + self.up[level](x)
        return self.head(x)


class BinHead(nn.Module):
    """Depth-bin logits: 3x3 conv + BatchNorm + ReLU, then 1x1 conv to ``num_bins`` channels."""

    def __init__(self, in_ch: int, num_bins: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, num_bins, 3, padding=1)
        self.bn = nn.BatchNorm2d(num_bins)
        self.logits = nn.Conv2d(num_bins, num_bins, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(F.relu(self.bn(self.conv(x))))


class RefineHead(nn.Module):
    """Full-resolution depth residual from (/4 depth, pixel grid, depth features).

    conv3x3 + BN + ReLU, conv3x3, nearest x4 upsampling, conv3x3 + ReLU, 1x1 conv to one channel.
    """

    def __init__(self, in_ch: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(F.relu(self.bn1(self.conv1(x))))
        x = F.interpolate(x, scale_factor=4.0, mode="nearest")
        return self.out(F.relu(self.conv3(x)))


class HourglassDecoder(nn.Module):
    """Encoder maps -> ``{"depth": (B,1,H,W) canonical m, "confidence": (B,1,H,W) logit}`` (4x the /4 map)."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.fpn = FeaturePyramid(preset.convnext_dims, preset.hourglass_channels)
        n_feat = DEPTH_FEATURE_CHANNELS
        self.unet = HourglassUNet(preset.hourglass_channels[1], n_feat + 1, width=UNET_CHANNELS)
        self.bin_head = BinHead(n_feat, DEPTH_BINS)
        self.refine = RefineHead(1 + 2 + n_feat, REFINE_CHANNELS)
        self.depth_range_m = preset.depth_range_m
        self.num_bins = DEPTH_BINS

    def bin_depths_m(self, device: torch.device | str | None = None) -> Tensor:
        """Centres of the depth bins: (num_bins,) float32 metres, log-spaced from min to max of the range.

        Computed on demand (not a buffer) so that they stay float32 when the network is cast to bf16/fp16.
        """
        lo, hi = self.depth_range_m
        steps = torch.linspace(math.log(lo), math.log(hi), self.num_bins, dtype=torch.float32, device=device)
        return torch.exp(steps)

    def forward(self, feats: list[Tensor]) -> dict[str, Tensor]:
        out = self.unet(self.fpn(feats))
        depth_feat, confidence = out[:, :-1], out[:, -1:]
        # Bin probabilities and their expectation in float32 whatever the compute dtype.
        prob = self.bin_head(depth_feat).float().softmax(dim=1)
        bins = self.bin_depths_m(prob.device).view(1, -1, 1, 1)
        depth_q = (prob * bins).sum(dim=1, keepdim=True)  # (B,1,H/4,W/4) metres
        b, _, h, w = depth_q.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=depth_q.device),
            torch.arange(w, dtype=torch.float32, device=depth_q.device),
            indexing="ij",
        )
        grid = torch.stack((xs, ys)).unsqueeze(0).expand(b, -1, -1, -1)  # pixel x, y of the /4 map
        refine_in = torch.cat((torch.cat((depth_q, grid), dim=1).to(depth_feat.dtype), depth_feat), dim=1)
        residual = self.refine(refine_in).float()
        depth = F.interpolate(depth_q, scale_factor=4.0, mode="nearest") + 0.1 * residual
        return {"depth": depth, "confidence": F.interpolate(confidence, scale_factor=4.0, mode="nearest")}


# ----------------------------------------------------------------------------------------------------------
# Whole network
# ----------------------------------------------------------------------------------------------------------


class ConvNeXtHourglass(nn.Module):
    """Metric3D v1 network (ConvNeXt-T/L + hourglass decoder), randomly initialised; never reads files.

    ``ConvNeXtHourglass(preset, device=None)``: ``preset`` is a ConvNeXt :class:`Preset` or its name
    (``"convnext-tiny"``, ``"convnext-large"``); other presets raise :class:`MetroUsageError`. ``device``
    builds the tensors there directly (e.g. ``"meta"``, ``"cuda"``).

    Official checkpoints load with ``load_state_dict(remap_state_dict(sd, "convnext"), strict=True)``.
    """

    def __init__(self, preset: Preset | str, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        if isinstance(preset, str):
            preset = get_preset(preset)
        if preset.family != "convnext":
            raise MetroUsageError(
                f"{preset.name!r} is not a ConvNeXt model; use convnext-tiny or convnext-large"
            )
        self.preset = preset
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.encoder = ConvNeXtEncoder(preset.convnext_depths, preset.convnext_dims, LAYER_NORM_EPS)
            self.decoder = HourglassDecoder(preset)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (B,3,H,W) float, normalised and padded, H and W multiples of 32 (published: 544x1216).

        Returns ``depth`` (B,1,H,W) float32 canonical metres (focal 1000 px camera) and ``confidence``
        (B,1,H,W) raw confidence logit in the network's compute dtype.
        """
        m = self.preset.size_multiple_px
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % m or x.shape[3] % m:
            raise MetroUsageError(
                f"ConvNeXt-hourglass input must be (B,3,H,W) with H and W multiples of {m}, "
                f"got {tuple(x.shape)}."
            )
        return self.decoder(self.encoder(x))
