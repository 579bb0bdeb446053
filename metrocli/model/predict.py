"""The torch -> numpy boundary of metrocli: one photo in, one :class:`Prediction` of numpy arrays out."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MetroUsageError
from metrocli.model.preprocess import check_image, metric_depth, photo_normals, prepare, unpad_resize
from metrocli.model.runtime import cpu_native_bf16, release_memory
from metrocli.prediction import Prediction

if TYPE_CHECKING:
    from metrocli.model.metric3d import Metric3D


def as_intrinsics(
    intrinsics: Intrinsics | tuple[float, float, float, float] | list[float], width: int, height: int
) -> Intrinsics:
    """The :class:`Intrinsics` of a ``width`` x ``height`` photo, from ``Intrinsics`` or ``(fx, fy, cx, cy)``.

    Raises :class:`MetroUsageError` for non-positive / non-finite focal lengths or intrinsics of another size.
    """
    if isinstance(intrinsics, Intrinsics):
        if (intrinsics.width, intrinsics.height) != (width, height):
            raise MetroUsageError(
                f"intrinsics are for a {intrinsics.width}x{intrinsics.height} image, "
                f"but the image is {width}x{height}"
            )
        result = intrinsics
    else:
        values = tuple(float(v) for v in intrinsics)
        if len(values) != 4:
            raise MetroUsageError(f"intrinsics must be (fx, fy, cx, cy), got {len(values)} values")
        result = Intrinsics(*values, width=width, height=height, focal_source="user")
    if not all(np.isfinite(v) for v in result.as_tuple()) or result.fx <= 0 or result.fy <= 0:
        raise MetroUsageError(
            f"focal lengths must be positive finite pixels, got fx={result.fx}, fy={result.fy}"
        )
    return result


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> the fastest precision that is native on ``device``; other values unchanged.

    CPU: ``bf16`` where the CPU has native bf16 arithmetic (:func:`~metrocli.model.runtime.cpu_native_bf16`:
    AMX / AVX512-BF16 / ARM BF16), else ``fp32`` (emulated bf16 is slower than float32). CUDA: ``bf16`` where
    the GPU supports it, else ``fp16``. Other devices (MPS): ``fp32``.
    """
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return "bf16" if cpu_native_bf16() else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for ``bf16`` / ``fp16`` (``auto``: see :func:`resolve_precision`), nothing for ``fp32``."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def predict(
    model: Metric3D,
    image: np.ndarray,
    intrinsics: Intrinsics | tuple[float, float, float, float],
    *,
    normals: bool = True,
) -> Prediction:
    """Run ``model`` on one upright photo with the official pre/post-processing.

    Args:
        model: a :class:`Metric3D` (weights loaded, eval mode).
        image: (H, W, 3) uint8 RGB, upright (displayed orientation).
        intrinsics: :class:`Intrinsics` of this H x W image, or ``(fx, fy, cx, cy)`` in its pixels.
        normals: False skips upsampling the normals and their confidence to the photo's size (``normal``
            and ``normal_confidence`` are then None): the most expensive part of the post-processing of
            a 12 MP photo, not needed to measure distances.

    Returns:
        :class:`Prediction` at H x W: ``depth`` float32 metres (``canonical * fx * scale / 1000``, clamped
        to [0, 300]), ``confidence`` float32, and for ViT models ``normal`` (H, W, 3) float32 unit
        camera-frame normals and ``normal_confidence`` (H, W) float32; ``timings_s`` has ``preprocess``,
        ``forward``, ``postprocess``.
    """
    check_image(image)
    height, width = image.shape[:2]
    intr = as_intrinsics(intrinsics, width, height)
    device = model.device
    t0 = time.perf_counter()
    canon = prepare(image, model.preset.input_size)
    x = canon.tensor.to(device)
    t1 = time.perf_counter()
    with torch.inference_mode(), autocast_context(model.precision, device):
        out = model.forward_canonical(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    del x
    if device.type == "cpu":
        release_memory()  # the activations' heap pages, before the full-size outputs are allocated
    t2 = time.perf_counter()
    with torch.inference_mode():
        depth = metric_depth(out["depth"], canon, intr.fx)[0, 0].cpu().numpy()
        confidence = unpad_resize(out["confidence"], canon)[0, 0].cpu().numpy()
        normal = normal_conf = None
        if normals and out.get("normal") is not None:
            normal = photo_normals(out["normal"], canon)[0].cpu().numpy()
        if normals and out.get("normal_confidence") is not None:
            normal_conf = unpad_resize(out["normal_confidence"], canon)[0, 0].cpu().numpy()
    del out
    if device.type == "cpu":
        release_memory()  # the upsampling's full-size temporaries
    t3 = time.perf_counter()
    return Prediction(
        depth=depth.astype(np.float32, copy=False),
        normal=None if normal is None else normal.astype(np.float32, copy=False),
        confidence=confidence.astype(np.float32, copy=False),
        normal_confidence=None if normal_conf is None else normal_conf.astype(np.float32, copy=False),
        intrinsics=intr,
        model=model.preset.name,
        timings_s={"preprocess": t1 - t0, "forward": t2 - t1, "postprocess": t3 - t2},
    )
