"""The :class:`Metric3D` model wrapper (any preset) and the v2 network (DINOv2 + DPT/ConvGRU decoder)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor, nn

from metrocli.model.dpt_gru import DPTGRUDecoder
from metrocli.model.presets import Preset
from metrocli.model.vit import DinoV2Encoder

if TYPE_CHECKING:
    from metrocli.camera.intrinsics import Intrinsics
    from metrocli.prediction import Prediction

Precision = Literal["fp32", "bf16", "fp16", "auto"]


class ViTDepthNormalNet(nn.Module):
    """Metric3D v2: ``encoder`` (:class:`DinoV2Encoder`) then ``decoder`` (:class:`DPTGRUDecoder`).

    ``forward(x)``: normalised, padded (B, 3, H, W) -> ``depth`` (B, 1, H, W) canonical metres,
    ``confidence`` (B, 1, H, W), ``normal`` (B, 3, H, W) unit camera-frame normals and
    ``normal_confidence`` (B, 1, H, W) kappa (H, W multiples of 28 give outputs of the input's size).
    """

    def __init__(self, preset: Preset, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.encoder = DinoV2Encoder(preset, device=device)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.decoder = DPTGRUDecoder(preset)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        tokens, grid = self.encoder(x)
        return self.decoder(tokens, grid)


class Metric3D(nn.Module):
    """A Metric3D model of preset ``preset`` wrapping its family's network ``net``.

    Attributes:
        preset: the :class:`Preset` (input size, canonical depth range, ...).
        net: the network; ``net(x)`` maps a normalised, padded (B, 3, H, W) batch to a dict of tensors.
        precision: ``"fp32"`` (default), ``"bf16"``, ``"fp16"`` or ``"auto"``: the autocast of
            :meth:`predict`.
    """

    def __init__(self, preset: Preset, net: nn.Module, precision: Precision = "fp32") -> None:
        super().__init__()
        self.preset = preset
        self.net = net
        self.precision: Precision = precision

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    def forward_canonical(self, x: Tensor) -> dict[str, Tensor]:
        """Canonical-camera outputs for a normalised, padded (B, 3, H, W) float batch.

        Returns ``depth`` (B, 1, H, W) canonical metres (the official ``prediction``) and ``confidence``
        (B, 1, H, W); ViT models also ``normal`` (B, 3, H, W) and ``normal_confidence`` (B, 1, H, W)
        (channels 0-2 and 3 of the official ``prediction_normal``).
        """
        out = self.net(x)
        if not isinstance(out, Mapping) or "depth" not in out:
            raise TypeError(
                f"{type(self.net).__name__} returned {type(out).__name__}, not a dict with 'depth'"
            )
        return dict(out)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Same as :meth:`forward_canonical`."""
        return self.forward_canonical(x)

    def predict(
        self,
        image: np.ndarray,
        intrinsics: Intrinsics | tuple[float, float, float, float],
        *,
        normals: bool = True,
    ) -> Prediction:
        """Metric depth (and normals) of an upright H x W x 3 uint8 RGB photo; see
        :func:`metrocli.model.predict.predict`."""
        from metrocli.model.predict import predict

        return predict(self, image, intrinsics, normals=normals)
