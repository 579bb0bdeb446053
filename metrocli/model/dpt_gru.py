"""Metric3D v2 decoder: DPT token reassembly and fusion, then ConvGRU refinement of depth and normals.

Computation (official ``RAFTDepthNormalDPT5``), for a patch grid of h x w (1/14 of the input):

1. *Reassemble*: each of the four token tensors becomes a feature map: patch tokens and the concatenated
   class + register tokens are projected and summed (GELU), then resampled to 1/4 (nearest x3.5 + 1x1 conv),
   1/7 (2x2 transposed conv), 1/14, 1/14.
2. *Fuse* (DPT): 1/14 -> 1/7 -> 1/4 with residual conv units and align-corners bilinear upsampling, giving a
   shared feature map plus a depth-confidence and a normal-confidence channel.
3. *Initial estimate* at 1/4: depth as the expectation over 256 log-spaced bins in the canonical range
   (softmax), normals from a small conv head (unit xyz + kappa).
4. *Refinement*: a 3-level ConvGRU (1/4, 1/7, 1/14; hidden states and gates from context features) updates
   the 6-channel state (depth, depth confidence, normal xyz, kappa) ``iters`` times; the state is upsampled
   to full resolution by convex (learnt 3x3 softmax) upsampling.

The official code applies an in-place ReLU to some encoder feature maps inside its fusion blocks, and the
context encoder then sees those rectified maps; this is reproduced explicitly here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metrocli.model.layers import LayerNorm2d
from metrocli.model.presets import Preset

#: Number of log-spaced depth bins of the depth regressor.
DEPTH_BINS = 256
#: Pixels per chunk of the depth-bin softmax (4096 x 256 float32 = 4 MiB).
BIN_CHUNK = 4096
#: Scale between the recurrent depth state and canonical metres: depth = state * 100 + max_depth.
STATE_DEPTH_SCALE = 100.0
#: Convex upsampling factor from the 1/4 state to full resolution.
UPSAMPLE = 4
#: Lower bound added to the (ELU + 1) normal concentration kappa.
MIN_KAPPA = 0.01


def clamp_depth(x: Tensor, min_m: float, max_m: float) -> Tensor:
    """Clamp to [min_m, max_m] exactly as the official decoder does (two ReLUs; bit-identical to it)."""
    y = F.relu(x - min_m) + min_m
    return max_m - F.relu(max_m - y)


def normalise_normal(state: Tensor) -> Tensor:
    """(B, 4, H, W) raw normal + kappa -> unit normal (channels 0-2), kappa = ELU + 1 + 0.01 (channel 3);
    float32 whatever the input's dtype."""
    nx, ny, nz, kappa = torch.split(state.float(), 1, dim=1)
    norm = torch.sqrt(nx**2.0 + ny**2.0 + nz**2.0) + 1e-10
    kappa = F.elu(kappa) + 1.0 + MIN_KAPPA
    return torch.cat([nx / norm, ny / norm, nz / norm, kappa], dim=1)


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)


def _conv1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1)


class Reassemble(nn.Module):
    """Tokens (B, h, w, C) + prefix tokens (B, 1, 1, (1+R)C) -> feature map at ``scale`` x the patch grid.

    ``scale``: 1 (identity), 2 (2x2 transposed conv) or 3.5 (nearest upsampling, then 1x1 conv).
    """

    def __init__(self, dim: int, prefix_tokens: int, out_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.patch_proj = nn.Linear(dim, dim)
        self.prefix_proj = nn.Linear(prefix_tokens * dim, dim, bias=False)
        self.resample: nn.Module
        if scale == 1:
            self.resample = nn.Identity()
        elif scale == 2:
            self.resample = nn.ConvTranspose2d(dim, out_channels, kernel_size=2, stride=2)
        else:
            self.resample = _conv1(dim, out_channels)

    def forward(self, patches: Tensor, prefix: Tensor) -> Tensor:
        x = F.gelu(self.patch_proj(patches) + self.prefix_proj(prefix))
        x = x.permute(0, 3, 1, 2)  # (B, C, h, w) with channels-last strides: no copy
        if self.scale in (1, 2):
            return self.resample(x)
        # Nearest upsampling copies pixels and the 1x1 conv acts per pixel, so they commute: convolving the
        # small map first is identical and 12x cheaper.
        return F.interpolate(self.resample(x), scale_factor=self.scale, mode="nearest")


class ResidualConvUnit(nn.Module):
    """DPT residual unit: a = ReLU(x); a + conv(ReLU(conv(a))). (The official unit's in-place ReLU makes
    the skip connection carry ReLU(x), not x.)"""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3(channels, channels)
        self.conv2 = _conv3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(x)
        return a + self.conv2(F.relu(self.conv1(a)))


class FusionBlock(nn.Module):
    """DPT fusion: (x [+ unit(skip)]) -> unit -> bilinear x``upsample`` (align_corners) -> 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, *, has_skip: bool, upsample: float) -> None:
        super().__init__()
        self.upsample = upsample
        self.skip = ResidualConvUnit(c_in) if has_skip else None
        self.trunk = ResidualConvUnit(c_in)
        self.project = _conv1(c_in, c_out)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip is not None and skip is not None:
            x = x + self.skip(skip)
        x = self.trunk(x)
        # Bilinear weights sum to one and the 1x1 conv is affine per pixel, so projecting before upsampling
        # is the same map with fewer channels and pixels to convolve.
        x = self.project(x)
        if self.upsample != 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=True)
        return x


class DepthBinHead(nn.Module):
    """Depth as the softmax expectation over log-spaced bins of the canonical range (metres)."""

    bins_m: Tensor

    def __init__(self, c_in: int, depth_range_m: tuple[float, float]) -> None:
        super().__init__()
        self.conv1 = _conv3(c_in, DEPTH_BINS)
        self.conv2 = _conv1(DEPTH_BINS, DEPTH_BINS)
        lo, hi = depth_range_m
        # Bin centres are always computed in float32 on the CPU (as for the official fixtures), also when
        # the module is built on another (or the meta) device; ``.to()`` moves them with the model.
        bins = torch.exp(torch.linspace(math.log(lo), math.log(hi), DEPTH_BINS, device="cpu"))
        self.register_buffer("bins_m", bins, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) features -> (B, 1, H, W) expected canonical depth in metres (unclamped)."""
        logits = self.conv2(F.relu(self.conv1(x), inplace=True))
        b, _, h, w = logits.shape
        # Softmax and expectation over the bins (in float32), with the bins as the last axis (contiguous for
        # the decoder's channels-last maps) and a few thousand pixels at a time, so that the temporaries stay
        # in cache: the expectation of each chunk is a matrix-vector product.
        flat = logits.permute(0, 2, 3, 1).reshape(b * h * w, DEPTH_BINS)
        if flat.requires_grad:  # training: the same expectation, differentiable (no out= buffer)
            return (flat.float().softmax(dim=-1) @ self.bins_m).view(b, h, w).unsqueeze(1)
        depth = torch.empty(b * h * w, dtype=torch.float32, device=logits.device)
        for start in range(0, flat.shape[0], BIN_CHUNK):
            stop = start + BIN_CHUNK
            torch.mv(flat[start:stop].float().softmax(dim=-1), self.bins_m, out=depth[start:stop])
        return depth.view(b, h, w).unsqueeze(1)


class NormalHead(nn.Module):
    """Initial (unnormalised) surface normal from the shared features: conv3x3 and three 1x1 convs."""

    def __init__(self, c_in: int, width: int = 128) -> None:
        super().__init__()
        self.conv1 = _conv3(c_in, width)
        self.conv2 = _conv1(width, width)
        self.conv3 = _conv1(width, width)
        self.conv4 = _conv1(width, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.conv4(x)


class ResidualBlock(nn.Module):
    """RAFT residual block with channel LayerNorm (eps 1e-5) and a 1x1 projection shortcut when widths
    differ."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv3(c_in, c_out)
        self.conv2 = _conv3(c_out, c_out)
        self.norm1 = LayerNorm2d(c_out)
        self.norm2 = LayerNorm2d(c_out)
        self.shortcut: nn.Module | None = None
        self.shortcut_norm: nn.Module | None = None
        if c_in != c_out:
            self.shortcut = _conv1(c_in, c_out)
            self.shortcut_norm = LayerNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.shortcut is not None and self.shortcut_norm is not None:
            x = self.shortcut_norm(self.shortcut(x))
        return F.relu(x + y)


class ContextBranch(nn.Module):
    """Residual block + 3x3 conv: one of the hidden-state / context maps of one GRU level."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.res = ResidualBlock(c_in, c_out)
        self.conv = _conv3(c_out, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.res(x))


class ContextLevel(nn.Module):
    """Initial hidden state (tanh) and context features (ReLU) of one GRU level."""

    def __init__(self, c_in: int, hidden: int) -> None:
        super().__init__()
        self.hidden = ContextBranch(c_in, hidden)
        self.context = ContextBranch(c_in, hidden)

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        return torch.tanh(self.hidden(feature)), torch.relu(self.context(feature))


class ConvGRU(nn.Module):
    """Convolutional GRU cell over ``cat([h, x])`` (the official ``convz``, ``convr``, ``convq`` layout).

    ``forward(h, gates, *inputs)``: ``gates`` is the (B, 3 * hidden, H, W) precomputed context
    contribution ``[cz, cr, cq]``; ``x = cat(inputs)``. Each gate's convolution over ``cat([h, x])`` is
    evaluated as the sum of its ``h`` part and its ``x`` part, so the ``x`` parts of all three gates run as
    one convolution, the ``h`` parts of z and r as another, and no concatenated input is ever built (same
    sums, other order).
    """

    def __init__(self, hidden: int, c_in: int) -> None:
        super().__init__()
        self.hidden_channels = hidden
        self.convz = _conv3(hidden + c_in, hidden)
        self.convr = _conv3(hidden + c_in, hidden)
        self.convq = _conv3(hidden + c_in, hidden)

    def forward(self, h: Tensor, gates: Tensor, *inputs: Tensor) -> Tensor:
        n = self.hidden_channels
        wz, wr, wq = self.convz.weight, self.convr.weight, self.convq.weight
        bz, br, bq = self.convz.bias, self.convr.bias, self.convq.bias
        assert bz is not None and br is not None and bq is not None  # _conv3 convolutions have biases
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)
        x_part = F.conv2d(
            x,
            torch.cat((wz[:, n:], wr[:, n:], wq[:, n:])),
            torch.cat((bz, br, bq)),
            padding=1,
        )
        zr = F.conv2d(h, torch.cat((wz[:, :n], wr[:, :n])), padding=1)
        zr = torch.sigmoid(zr + x_part[:, : 2 * n] + gates[:, : 2 * n])
        z, r = zr[:, :n], zr[:, n:]
        q = torch.tanh(F.conv2d(r * h, wq[:, :n], padding=1) + x_part[:, 2 * n :] + gates[:, 2 * n :])
        return h + z * (q - h)


class DeltaHead(nn.Module):
    """State update from the 1/4 hidden state: 2 depth channels + 4 normal channels."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.depth1 = _conv3(hidden, hidden)
        self.depth2 = _conv3(hidden, 2)
        self.normal1 = _conv3(hidden, hidden)
        self.normal2 = _conv3(hidden, 4)

    def forward(self, h: Tensor) -> Tensor:
        depth = self.depth2(F.relu(self.depth1(h)))
        normal = self.normal2(F.relu(self.normal1(h)))
        return torch.cat((depth, normal), dim=1)


class UpMaskHead(nn.Module):
    """Convex-upsampling weights (B, 9 * 4 * 4, H, W) from the 1/4 hidden state (scaled by 0.25)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv1 = _conv3(hidden, hidden)
        self.conv2 = _conv1(hidden, 9 * UPSAMPLE**2)

    def forward(self, h: Tensor) -> Tensor:
        return 0.25 * self.conv2(F.relu(self.conv1(h)))


def _pool2x(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=2, padding=1)


def _resize_like(x: Tensor, ref: Tensor) -> Tensor:
    return F.interpolate(x.float(), ref.shape[2:], mode="bilinear", align_corners=True)


def convex_upsample(state: Tensor, mask: Tensor, factor: int = UPSAMPLE) -> Tensor:
    """(B, D, H, W) state and (B, 9 f^2, H, W) weights -> (B, D, fH, fW): each output pixel is a softmax-
    weighted combination of the 3x3 neighbourhood of its coarse pixel (mask channel ``k * f^2 + i * f + j``
    weighs neighbour ``k``, row-major, for sub-pixel ``(i, j)``). Computed in float32, pixel-major."""
    b, d, h, w = state.shape
    weights = mask.float().permute(0, 2, 3, 1).reshape(b, h, w, 9, factor * factor).softmax(dim=3)
    padded = F.pad(state.float().permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (B, H + 2, W + 2, D)
    up = torch.zeros(b, h, w, d, factor * factor, dtype=torch.float32, device=state.device)
    for k in range(9):
        dy, dx = divmod(k, 3)
        neighbour = padded[:, dy : dy + h, dx : dx + w, :, None]  # (B, H, W, D, 1)
        up.addcmul_(neighbour, weights[:, :, :, None, k])
    up = up.view(b, h, w, d, factor, factor).permute(0, 3, 1, 4, 2, 5)  # (B, D, H, f, W, f)
    return up.reshape(b, d, factor * h, factor * w)


class UpdateBlock(nn.Module):
    """The 3-level ConvGRU (1/4, 1/7, 1/14) with the state-update and upsampling-mask heads."""

    def __init__(self, hidden: int, state_channels: int = 6) -> None:
        super().__init__()
        self.gru_4 = ConvGRU(hidden, state_channels + hidden)
        self.gru_7 = ConvGRU(hidden, 2 * hidden)
        self.gru_14 = ConvGRU(hidden, hidden)
        self.delta_head = DeltaHead(hidden)
        self.upmask = UpMaskHead(hidden)

    def step(self, net: list[Tensor], gates: list[Tensor], state: Tensor) -> list[Tensor]:
        """One refinement iteration's hidden-state updates (slow-fast schedule: the 1/14 level three times,
        1/7 twice, 1/4 once); returns the new hidden states [1/4, 1/7, 1/14]. Inputs that do not change
        between two updates (the pooled 1/7 state, the pooled 1/4 state) are computed once."""
        h4, h7, h14 = net
        pooled_7 = _pool2x(h7)
        h14 = self.gru_14(h14, gates[2], pooled_7)
        h14 = self.gru_14(h14, gates[2], pooled_7)
        pooled_4 = _resize_like(_pool2x(h4), h7)
        h7 = self.gru_7(h7, gates[1], pooled_4, _resize_like(h14, h7))
        h14 = self.gru_14(h14, gates[2], _pool2x(h7))
        h7 = self.gru_7(h7, gates[1], pooled_4, _resize_like(h14, h7))
        h4 = self.gru_4(h4, gates[0], state, _resize_like(h7, h4))
        return [h4, h7, h14]


def _channels_last_after_load(module: nn.Module, _incompatible_keys: object) -> None:
    module.to(memory_format=torch.channels_last)


class DPTGRUDecoder(nn.Module):
    """Metric3D v2 decoder (``RAFTDepthNormalDPT5``) for the ViT presets.

    ``forward(tokens, grid)``: four (B, 1 + R + h*w, C) token tensors and the patch grid (h, w) ->
    ``depth`` (B, 1, 14h, 14w) canonical metres in the preset's range, ``confidence`` (B, 1, ...),
    ``normal`` (B, 3, ...) unit vectors and ``normal_confidence`` (B, 1, ...) kappa.
    """

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        dim = preset.embed_dim
        feat = preset.feature_channels
        dec = preset.decoder_channels
        hidden = preset.hidden_channels
        prefix = 1 + preset.num_register_tokens
        self.iters = preset.gru_iters
        self.num_prefix_tokens = prefix
        self.depth_range_m = preset.depth_range_m
        self.reassemble = nn.ModuleList(
            [
                Reassemble(dim, prefix, feat[0], scale=3.5),
                Reassemble(dim, prefix, feat[1], scale=2),
                Reassemble(dim, prefix, feat[2], scale=1),
                Reassemble(dim, prefix, feat[3], scale=1),
            ]
        )
        self.fuse_14 = FusionBlock(dec[4], dec[3], has_skip=False, upsample=1)
        self.fuse_7 = FusionBlock(dec[3], dec[2], has_skip=True, upsample=2)
        self.fuse_4 = FusionBlock(dec[2], dec[1] + 2, has_skip=True, upsample=7 / 4)
        self.depth_head = DepthBinHead(dec[1], preset.depth_range_m)
        self.normal_head = NormalHead(dec[1])
        self.context = nn.ModuleList([ContextLevel(feat[i], hidden) for i in range(3)])
        self.gates = nn.ModuleList([_conv3(hidden, 3 * hidden) for _ in range(3)])
        self.update = UpdateBlock(hidden)
        # Every feature map of the decoder is channels-last (the reassembled token grids already are, without
        # a copy); oneDNN convolves that layout directly instead of reordering each input and output. Loading
        # with ``assign=True`` adopts the checkpoint's (contiguous) tensors, so the layout is restored after.
        self.to(memory_format=torch.channels_last)
        self.register_load_state_dict_post_hook(_channels_last_after_load)

    def forward(
        self, tokens: list[Tensor], grid: tuple[int, int], *, sequence: bool = False
    ) -> dict[str, Tensor]:
        """See the class docstring. ``sequence=True`` (training) also returns the per-iteration outputs of
        the official training decoder, stacked along a new first axis of length ``iters + 1`` (the initial
        estimate upsampled bilinearly, then every iteration's convex-upsampled state): ``depth_seq``
        (N, B, 1, H, W), ``confidence_seq`` (N, B, 1, H, W) and ``normal_seq`` (N, B, 4, H, W: unit normal +
        kappa)."""
        h, w = grid
        lo, hi = self.depth_range_m
        p = self.num_prefix_tokens
        maps = []
        for x, reassemble in zip(tokens, self.reassemble, strict=True):
            b, _, c = x.shape
            patches = x[:, p:, :].reshape(b, h, w, c)
            prefix = x[:, :p, :].reshape(b, 1, 1, p * c)
            maps.append(reassemble(patches, prefix))
        f4, f7, f14_skip, f14 = maps
        # The official fusion units rectify these two maps in place before the context encoder reads them.
        f7, f14_skip = F.relu(f7), F.relu(f14_skip)

        x = self.fuse_14(f14)
        x = self.fuse_7(x, f14_skip)
        x = self.fuse_4(x, f7)
        shared, depth_conf, normal_conf = x[:, :-2], x[:, -2:-1], x[:, -1:]

        depth0 = (clamp_depth(self.depth_head(shared), lo, hi) - hi) / STATE_DEPTH_SCALE
        normal0 = normalise_normal(torch.cat([self.normal_head(shared), normal_conf], dim=1))
        state = torch.cat((depth0, depth_conf, normal0), dim=1)  # (B, 6, H/4, W/4)

        net: list[Tensor] = []
        gates: list[Tensor] = []  # [cz, cr, cq] of each level, stacked along the channels
        for feature, level, gate_conv in zip((f4, f7, f14_skip), self.context, self.gates, strict=True):
            hidden, context = level(feature)
            net.append(hidden)
            gates.append(gate_conv(context))

        ups: list[Tensor] = []
        if sequence:
            size = (UPSAMPLE * state.shape[2], UPSAMPLE * state.shape[3])
            ups.append(F.interpolate(state.float(), size=size, mode="bilinear", align_corners=True))
        for _ in range(self.iters):
            net = self.update.step(net, gates, state)
            state = state + self.update.delta_head(net[0])
            if sequence:
                ups.append(convex_upsample(state, self.update.upmask(net[0])))
        full = ups[-1] if sequence else convex_upsample(state, self.update.upmask(net[0]))

        normal = normalise_normal(full[:, 2:])
        out = {
            "depth": clamp_depth(full[:, :1] * STATE_DEPTH_SCALE + hi, lo, hi),
            "confidence": full[:, 1:2],
            "normal": normal[:, :3],
            "normal_confidence": normal[:, 3:],
        }
        if sequence:
            out["depth_seq"] = torch.stack(
                [clamp_depth(u[:, :1] * STATE_DEPTH_SCALE + hi, lo, hi) for u in ups]
            )
            out["confidence_seq"] = torch.stack([u[:, 1:2] for u in ups])
            out["normal_seq"] = torch.stack([normalise_normal(u[:, 2:]) for u in ups])
        return out
