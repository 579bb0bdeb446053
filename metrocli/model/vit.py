"""DINOv2 ViT encoder with register tokens (Metric3D v2 backbone).

Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``reg_token``,
``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``), which
the checkpoint remapping (:mod:`metrocli.model.remap`) targets; the modules are our own, small and
inference-oriented (fused attention), so that running the model imports neither timm nor torchvision.

What DINOv2 (and so Metric3D) needs, beyond a stock ViT:

* ``pos_embed`` covers ``[cls, 37 x 37 patches]`` (1370 tokens, DINOv2's layout); register tokens get no
  positional embedding and are inserted right after the class token *after* the embedding is added.
* The patch part of ``pos_embed`` is resampled like DINOv2's ``interpolate_pos_encoding``: bicubic, no
  antialiasing, with ``scale_factor = (n + 0.1) / sqrt(N)`` handed to ``F.interpolate`` (resampling to an
  output *size* samples at different positions).
* An input whose sides are not multiples of the patch size is resized bilinearly up to the next multiple.
* Either the final normalised tokens (ViT-S/L) or the raw outputs of the blocks at each quarter of the depth
  (ViT-giant2) are returned, as the official decoder expects.
* LayerNorm eps 1e-6, LayerScale, GELU MLP (ratio 4) or packed SwiGLU (giant2: ``fc1`` holds both branches).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metrocli.model.layers import Mlp
from metrocli.model.presets import Preset

#: Side (in patches) of the square grid the pretrained positional embedding was learnt on (518 / 14).
PRETRAIN_GRID = 37
#: DINOv2's work-around offset added to the target grid before computing the interpolation scale factor.
INTERPOLATE_OFFSET = 0.1
#: LayerNorm epsilon of DINOv2.
NORM_EPS = 1e-6
#: Initial LayerScale value (random initialisation only; checkpoints overwrite it).
LAYER_SCALE_INIT = 1e-5


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` patches -> ``dim`` channels (a strided convolution)."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.patch_size = (patch, patch)
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)


class Attention(nn.Module):
    """Multi-head self-attention (fused ``scaled_dot_product_attention``, scale 1/sqrt(head dim))."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class SwiGLU(nn.Module):
    """Packed SwiGLU: ``fc1`` gives both branches ``[a, b]``; ``fc2(SiLU(a) * b)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)


class LayerScale(nn.Module):
    """Per-channel scale ``x * gamma``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale: ``x + ls1(attn(norm1(x)))``, then the same with the MLP."""

    def __init__(self, dim: int, num_heads: int, hidden: int, swiglu: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp: nn.Module = SwiGLU(dim, hidden) if swiglu else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2Encoder(nn.Module):
    """DINOv2 ViT-S/L/giant2 with 4 registers, as in Metric3D v2 (``ViT_DINO_reg.py``).

    ``forward(x)`` takes a normalised (B, 3, H, W) float tensor and returns four token tensors
    (B, 1 + R + h*w, C) (class token, R register tokens, then the h x w patch grid in row-major order) and
    the grid size (h, w) = (ceil(H / 14), ceil(W / 14)).
    """

    def __init__(self, preset: Preset, *, device: torch.device | str | None = None) -> None:
        if preset.family != "vit":
            raise ValueError(f"preset {preset.name!r} is not a ViT model")
        super().__init__()
        dim = preset.embed_dim
        swiglu = preset.ffn == "swiglu"
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.patch_embed = PatchEmbed(preset.patch_size, dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.reg_token = nn.Parameter(torch.zeros(1, preset.num_register_tokens, dim))
            # DINOv2 layout of the positional embedding: class token + pretrain grid (registers have none).
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + PRETRAIN_GRID**2, dim))
            # Present in the official checkpoints (DINOv2 masked-image training), unused at inference.
            self.mask_token = nn.Parameter(torch.zeros(1, dim))
            self.blocks = nn.Sequential(
                *[Block(dim, preset.num_heads, preset.ffn_hidden, swiglu) for _ in range(preset.depth)]
            )
            self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.intermediate_features = preset.intermediate_features
        self._init_parameters()

    def _init_parameters(self) -> None:
        """Random initialisation (timm's ViT scheme); real use always loads a checkpoint over it."""
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.reg_token, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def patch_px(self) -> int:
        """Patch side in pixels."""
        return int(self.patch_embed.patch_size[0])

    def interpolate_pos_embed(self, grid_h: int, grid_w: int) -> Tensor:
        """Positional embedding (1, 1 + grid_h * grid_w, C) for a grid_h x grid_w patch grid, DINOv2-style."""
        pos: Tensor = self.pos_embed
        n_pretrain = pos.shape[1] - 1
        if grid_h * grid_w == n_pretrain and grid_h == grid_w:
            return pos
        dtype = pos.dtype
        pos = pos.float()
        side = math.sqrt(n_pretrain)
        patch_pos = pos[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
        scale = ((grid_h + INTERPOLATE_OFFSET) / side, (grid_w + INTERPOLATE_OFFSET) / side)
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", antialias=False)
        if patch_pos.shape[-2:] != (grid_h, grid_w):  # pragma: no cover - guarded by the 0.1 offset
            raise RuntimeError(f"positional embedding resampled to {tuple(patch_pos.shape[-2:])}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(dtype)

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch tokens + positional embedding + registers: (B, 1 + R + h*w, C) and the grid (h, w)."""
        _, _, height, width = x.shape
        p = self.patch_px
        padded = (math.ceil(height / p) * p, math.ceil(width / p) * p)
        if padded != (height, width):
            x = F.interpolate(x, size=padded, mode="bilinear", align_corners=False)
        tokens = self.patch_embed.proj(x)  # (B, C, h, w)
        grid = (tokens.shape[2], tokens.shape[3])
        tokens = tokens.flatten(2).transpose(1, 2)
        batch = tokens.shape[0]
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_embed(*grid)
        tokens = torch.cat((tokens[:, :1], self.reg_token.expand(batch, -1, -1), tokens[:, 1:]), dim=1)
        return tokens, grid

    def forward(self, x: Tensor) -> tuple[list[Tensor], tuple[int, int]]:
        """Four token tensors (B, 1 + R + h*w, C) for the decoder, and the patch grid (h, w)."""
        tokens, grid = self.embed(x)
        if not self.intermediate_features:
            tokens = self.norm(self.blocks(tokens))
            return [tokens] * 4, grid
        every = len(self.blocks) // 4
        features = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if (index + 1) % every == 0:
                features.append(tokens)
        return features, grid
