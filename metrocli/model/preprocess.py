"""Canonical pre- and post-processing of the official Metric3D inference (``hubconf.py``).

Pre: keep-ratio resize of the 8-bit RGB photo to fit the network input (OpenCV ``INTER_LINEAR``), pad with
the mean colour (split ``pad // 2`` before, the rest after), normalise with the ImageNet mean / std.
OpenCV pads an 8-bit image with the mean colour *rounded to 8 bits*, (124, 116, 104), exactly as the official
code (``cv2.copyMakeBorder`` on the uint8 image) does.

Post: crop the padding, bilinear (``align_corners=False``) upsampling to the photo's size, and for depth
the de-canonical transform ``depth * fx * scale / 1000`` clamped to [0, 300] m; normals are renormalised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import ImageError, MetroUsageError
from metrocli.model.presets import CANONICAL_FOCAL_PX, RGB_MEAN, RGB_STD
from metrocli.prediction import Prediction

#: Largest metric depth kept by the official post-processing (metres).
MAX_DEPTH_M = 300.0
#: Pixels per block when renormalising upsampled normals.
NORMALISE_BLOCK_PIXELS = 1 << 18


@dataclass(frozen=True)
class CanonicalInput:
    """A photo prepared for the network.

    Attributes:
        tensor: (1, 3, H_in, W_in) float32 normalised input (H_in, W_in = preset input size).
        scale: resize factor from the photo to the network input (same for both axes).
        pad: (top, bottom, left, right) padding in input pixels.
        photo_size: (H, W) of the photo.
    """

    tensor: Tensor
    scale: float
    pad: tuple[int, int, int, int]
    photo_size: tuple[int, int]

    @property
    def resized_size(self) -> tuple[int, int]:
        """(h, w) of the resized photo inside the padded input."""
        top, bottom, left, right = self.pad
        return (self.tensor.shape[2] - top - bottom, self.tensor.shape[3] - left - right)


def check_image(image: np.ndarray) -> None:
    """Raise :class:`ImageError` unless ``image`` is a non-empty H x W x 3 uint8 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ImageError(f"expected an H x W x 3 uint8 RGB image, got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"image is empty (shape {image.shape})")


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


def resize_and_pad(
    image: np.ndarray, input_size: tuple[int, int]
) -> tuple[np.ndarray, float, tuple[int, ...]]:
    """Keep-ratio resize of an H x W x 3 uint8 image to fit ``input_size`` (H_in, W_in), then mean-colour pad.

    Returns the (H_in, W_in, 3) uint8 input image, the scale factor and the (top, bottom, left, right) pad.
    """
    check_image(image)
    h, w = image.shape[:2]
    in_h, in_w = input_size
    scale = min(in_h / h, in_w / w)
    new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_h, pad_w = in_h - new_h, in_w - new_w
    pad = (pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)
    padded = cv2.copyMakeBorder(resized, *pad, cv2.BORDER_CONSTANT, value=RGB_MEAN)
    return padded, scale, pad


def normalise(padded: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 ``(x - mean) / std``."""
    mean = torch.tensor(RGB_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(RGB_STD, dtype=torch.float32)[:, None, None]
    x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1))).float()
    return torch.div(x - mean, std)[None]


def prepare(image: np.ndarray, input_size: tuple[int, int]) -> CanonicalInput:
    """The normalised, padded network input of an H x W x 3 uint8 RGB photo."""
    padded, scale, pad = resize_and_pad(image, input_size)
    top, bottom, left, right = pad
    return CanonicalInput(normalise(padded), scale, (top, bottom, left, right), image.shape[:2])


def unpad_resize(x: Tensor, canon: CanonicalInput) -> Tensor:
    """(B, C, H_in, W_in) network output -> (B, C, H, W) at the photo's size (crop, bilinear upsampling)."""
    top, bottom, left, right = canon.pad
    x = x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]
    return F.interpolate(x.float(), size=canon.photo_size, mode="bilinear", align_corners=False)


def depth_scale(fx: float, scale: float) -> float:
    """Canonical depth (focal 1000 px) -> metres, for a photo of focal ``fx`` px resized by ``scale``."""
    return fx * scale / CANONICAL_FOCAL_PX


def metric_depth(canonical_depth: Tensor, canon: CanonicalInput, fx: float) -> Tensor:
    """(B, 1, H_in, W_in) canonical depth -> (B, 1, H, W) metric depth (m), clamped to [0, 300]."""
    depth = unpad_resize(canonical_depth, canon)
    return depth.mul_(depth_scale(fx, canon.scale)).clamp_(0, MAX_DEPTH_M)  # in place: no 12 MP copies


def photo_normals(normal: Tensor, canon: CanonicalInput) -> Tensor:
    """(B, 3, H_in, W_in) unit normals -> (B, H, W, 3) unit normals at the photo's size (channels-last, so
    the result is a contiguous H x W x 3 array without an extra full-size copy)."""
    top, bottom, left, right = canon.pad
    n = normal[:, :, top : normal.shape[2] - bottom, left : normal.shape[3] - right].float()
    n = n.contiguous(memory_format=torch.channels_last)
    n = F.interpolate(n, size=canon.photo_size, mode="bilinear", align_corners=False)
    n = n.permute(0, 2, 3, 1)  # (B, H, W, 3), contiguous
    # F.normalize(n, dim=-1), in place and a block of rows at a time: at 12 MP a full-size temporary
    # would be another 48 MB of fresh memory to fault in.
    rows = max(1, NORMALISE_BLOCK_PIXELS // max(1, n.shape[2]))
    for image in n:
        for top in range(0, image.shape[0], rows):
            block = image[top : top + rows]
            block.div_(torch.linalg.vector_norm(block, dim=-1, keepdim=True).clamp_min_(1e-12))
    return n


def to_prediction(
    out: dict[str, Tensor],
    canon: CanonicalInput,
    intrinsics: Intrinsics,
    *,
    model: str,
    normals: bool,
    timings_s: dict[str, float],
) -> Prediction:
    """The photo-sized, metric :class:`Prediction` of canonical network outputs (the official
    post-processing, for any backend).

    Args:
        out: ``depth``, ``confidence`` and (ViT) ``normal`` / ``normal_confidence`` tensors (1, C, h, w)
            of the padded canonical input ``canon``, on any device.
        intrinsics: of the photo (its ``fx`` de-canonicalises the depth).
        model: preset name recorded in the prediction.
        normals: False leaves ``normal`` and ``normal_confidence`` None (skips their upsampling).
        timings_s: stage timings so far; ``postprocess`` is added.
    """
    t0 = time.perf_counter()
    with torch.inference_mode():
        depth = metric_depth(out["depth"], canon, intrinsics.fx)[0, 0].cpu().numpy()
        confidence = unpad_resize(out["confidence"], canon)[0, 0].cpu().numpy()
        normal = normal_conf = None
        if normals and out.get("normal") is not None:
            normal = photo_normals(out["normal"], canon)[0].cpu().numpy()
        if normals and out.get("normal_confidence") is not None:
            normal_conf = unpad_resize(out["normal_confidence"], canon)[0, 0].cpu().numpy()
    return Prediction(
        depth=depth.astype(np.float32, copy=False),
        normal=None if normal is None else normal.astype(np.float32, copy=False),
        confidence=confidence.astype(np.float32, copy=False),
        normal_confidence=None if normal_conf is None else normal_conf.astype(np.float32, copy=False),
        intrinsics=intrinsics,
        model=model,
        timings_s={**timings_s, "postprocess": time.perf_counter() - t0},
    )
