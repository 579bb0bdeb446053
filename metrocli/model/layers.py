"""Building blocks shared by the Metric3D networks (parameter names as in the official checkpoints' remapped
keys, so that loading stays strict)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor (normalises each pixel's channel vector).

    The result has channels-last strides, the layout the convolutions that follow prefer.
    """

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """Point-wise (channels-last) MLP ``fc2(GELU(fc1(x)))`` with the exact, erf-based GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
