"""The :class:`Metric3D` model wrapper (any preset) and the v2 network (DINOv2 + DPT/ConvGRU decoder)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from metrocli.camera.intrinsics import Intrinsics
from metrocli.heap import release_memory
from metrocli.model.dpt_gru import DPTGRUDecoder
from metrocli.model.preprocess import (
    as_intrinsics,
    check_image,
    prepare,
    to_prediction,
)
from metrocli.model.presets import Preset
from metrocli.model.runtime import autocast_context, resolve_precision
from metrocli.model.spec import Precision
from metrocli.model.vit import DinoV2Encoder
from metrocli.prediction import Prediction


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

    Precision rule: the model applies its own precision. :meth:`forward` and :meth:`forward_canonical`
    (and so :meth:`predict`) run under the autocast of ``self.precision``
    (:func:`~metrocli.model.runtime.autocast_context`), whatever autocast the caller is in:
    ``load_model(..., precision="bf16")`` then ``model(x)`` runs bf16, and an fp32 model runs fp32 inside a
    caller's autocast. Callers never wrap autocast themselves; to run at another precision, set
    ``model.precision``. Parameters stay float32; the depth expectation, the recurrent state, the convex
    upsampling and the normal normalisation always run in float32. ``net`` itself (the bare network)
    follows whatever autocast is active.

    Attributes:
        preset: the :class:`Preset` (input size, canonical depth range, ...).
        net: the network; ``net(x)`` maps a normalised, padded (B, 3, H, W) batch to a dict of tensors.
        precision: ``"fp32"`` (default), ``"bf16"``, ``"fp16"``, or ``"auto"`` (resolved per device at each
            forward; :func:`~metrocli.model.factory.load_model` stores the resolved value).
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
        """Canonical-camera outputs for a normalised, padded (B, 3, H, W) float batch, computed at
        ``self.precision``.

        Returns ``depth`` (B, 1, H, W) canonical metres (the official ``prediction``) and ``confidence``
        (B, 1, H, W); ViT models also ``normal`` (B, 3, H, W) and ``normal_confidence`` (B, 1, H, W)
        (channels 0-2 and 3 of the official ``prediction_normal``).
        """
        with autocast_context(resolve_precision(self.precision, x.device, self.preset.name), x.device):
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
        """Metric depth (and normals) of one upright photo, with the official pre/post-processing: the
        torch -> numpy boundary of metrocli.

        Args:
            image: (H, W, 3) uint8 RGB, upright (displayed orientation).
            intrinsics: :class:`Intrinsics` of this H x W image, or ``(fx, fy, cx, cy)`` in its pixels.
            normals: False skips upsampling the normals and their confidence to the photo's size (``normal``
                and ``normal_confidence`` are then None): the most expensive part of the post-processing
                of a 12 MP photo, not needed to measure distances.

        Returns:
            :class:`Prediction` at H x W: ``depth`` float32 metres (``canonical * fx * scale / 1000``,
            clamped to [0, 300]), ``confidence`` float32, and for ViT models ``normal`` (H, W, 3) float32
            unit camera-frame normals and ``normal_confidence`` (H, W) float32; ``timings_s`` has
            ``preprocess``, ``forward``, ``postprocess``.
        """
        return self.predict_batch([image], [intrinsics], normals=normals)[0]

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        intrinsics: Sequence[Intrinsics | tuple[float, float, float, float]],
        *,
        normals: bool = True,
    ) -> list[Prediction]:
        """:meth:`predict` of several photos (of any sizes) in one forward: each is resized and padded to the
        preset's one input size, the padded inputs are stacked into a (B, 3, H_in, W_in) batch, and each
        output is cropped, upsampled and de-canonicalised on the model's device before it is copied to the
        host. On a GPU a batch uses the device better than one photo at a time; on a CPU it gains little.
        A batch of one is exactly :meth:`predict`. ``timings_s["forward"]`` of each prediction is its share
        (1/B) of the batch's forward."""
        if len(images) != len(intrinsics):
            raise ValueError(f"{len(images)} images but {len(intrinsics)} intrinsics")
        if not images:
            return []
        intrs = []
        for image, k in zip(images, intrinsics, strict=True):
            check_image(image)
            height, width = image.shape[:2]
            intrs.append(as_intrinsics(k, width, height))
        device = self.device
        t0 = time.perf_counter()
        canons = [prepare(image, self.preset.input_size) for image in images]
        x = (canons[0].tensor if len(canons) == 1 else torch.cat([c.tensor for c in canons])).to(device)
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = self.forward_canonical(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        del x
        if device.type == "cpu":
            release_memory()  # the activations' heap pages, before the full-size outputs are allocated
        t2 = time.perf_counter()
        count = len(images)
        predictions = []
        for i, (canon, intr) in enumerate(zip(canons, intrs, strict=True)):
            one = {name: value[i : i + 1] for name, value in out.items() if value is not None}
            predictions.append(
                to_prediction(
                    one,
                    canon,
                    intr,
                    model=self.preset.name,
                    normals=normals,
                    timings_s={"preprocess": (t1 - t0) / count, "forward": (t2 - t1) / count},
                )
            )
            del one
            if device.type == "cpu":
                release_memory()  # the upsampling's full-size temporaries
        del out
        return predictions
