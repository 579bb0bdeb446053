"""Sensor depth maps given with ``--depth``: read, scale to metres, orient like the photo.

Formats
    ``.npy``: a 2-D array of depths in metres (float or integer; ``depth_scale`` multiplies it when given).
    ``.png`` (and ``.tif``/``.tiff``): a 16-bit single-channel image of millimetres (``depth_scale`` = metres
    per unit overrides, e.g. ``1/256`` for KITTI); 32-bit float images are metres. 0 means "no depth".

Size and orientation
    The map must have the size of the displayed (upright) photo, or its stored size; a map of the stored size
    is oriented like the photo (EXIF orientation, :func:`metrocli.camera.image.apply_orientation`). When the
    two sizes coincide (orientations 1-4) the map is taken as stored like the photo's pixels, which is how
    phones and :mod:`metrocli.synth` save it. Any other size is a :class:`~metrocli.errors.DepthMapError`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metrocli.errors import DepthMapError
from metrocli.geometry.sampling import valid_depth_mask

#: Metres per unit of an integer PNG depth map unless ``depth_scale`` says otherwise (millimetres).
PNG_DEFAULT_SCALE_M = 0.001
_IMAGE_SUFFIXES = {".png", ".tif", ".tiff"}


@dataclass(frozen=True)
class SensorDepth:
    """A sensor depth map in the displayed orientation.

    Attributes:
        depth_m: (H, W) float32 metres, 0 where the sensor has no depth.
        quantum_m: size of one depth step in metres (e.g. 0.001 for a millimetre PNG; 0 for float maps).
        path: the file it came from.
    """

    depth_m: np.ndarray
    quantum_m: float
    path: Path


def _read_raw(path: Path) -> tuple[np.ndarray, bool]:
    """The stored array and whether it holds integer units (vs. float metres)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DepthMapError(f"{path}: not a plain numeric .npy depth map ({exc})") from None
        except (OSError, EOFError) as exc:
            raise DepthMapError(f"{path}: cannot read the depth map ({exc})") from None
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.dtype.kind not in "uif" or arr.dtype == np.bool_:
            raise DepthMapError(f"{path}: depth map must hold numbers, got dtype {arr.dtype}")
        return arr, False
    if suffix in _IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        from metrocli.camera.image import MAX_PIXELS, pixel_limit

        try:
            with pixel_limit(), Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DepthMapError(
                        f"{path}: depth image is {img.width} x {img.height}, more than the "
                        f"{MAX_PIXELS / 1e6:.0f} MP limit"
                    )
                mode = img.mode
                if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                    arr = np.asarray(img, dtype=np.uint16)
                elif mode == "I":
                    arr = np.asarray(img, dtype=np.int64)
                elif mode == "F":
                    return np.asarray(img, dtype=np.float32), False
                else:
                    raise DepthMapError(
                        f"{path}: depth PNG must be 16-bit single-channel (millimetres), got mode {mode} "
                        "(8-bit or colour images cannot hold metric depth)"
                    )
        except DepthMapError:
            raise
        except Image.DecompressionBombError:
            raise DepthMapError(
                f"{path}: depth image has far more pixels than the {MAX_PIXELS / 1e6:.0f} MP limit"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DepthMapError(f"{path}: cannot read the depth image ({exc})") from None
        return arr, True
    raise DepthMapError(
        f"{path}: unsupported depth map format {path.suffix!r} (use .npy metres or 16-bit .png)"
    )


def load_sensor_depth(
    path: str | os.PathLike[str], photo: Any, depth_scale: float | None = None
) -> SensorDepth:
    """Read a sensor depth map for ``photo`` (a :class:`metrocli.camera.photo.Photo`).

    Args:
        path: ``.npy`` (metres) or 16-bit ``.png`` (millimetres) file.
        photo: the photo; its displayed size, stored size and EXIF orientation decide the map's orientation.
        depth_scale: metres per stored unit, overriding the format's default.
    Raises:
        DepthMapError: missing/unreadable file, wrong dtype, wrong size, negative scale.
    """
    path = Path(path)
    if depth_scale is not None and not (np.isfinite(depth_scale) and depth_scale > 0):
        raise DepthMapError(f"depth scale must be a positive number of metres per unit, got {depth_scale!r}")
    if not path.is_file():
        raise DepthMapError(f"{path}: depth map not found")
    if path.stat().st_size == 0:
        raise DepthMapError(f"{path}: depth map file is empty")
    raw, integer_units = _read_raw(path)
    if raw.ndim != 2:
        raise DepthMapError(f"{path}: depth map must be a single-channel 2-D array, got shape {raw.shape}")
    if integer_units:
        scale = PNG_DEFAULT_SCALE_M if depth_scale is None else float(depth_scale)
        quantum = scale
    else:
        scale = 1.0 if depth_scale is None else float(depth_scale)
        quantum = scale if raw.dtype.kind in "ui" else 0.0
    depth = raw.astype(np.float32) * np.float32(scale)
    depth[~valid_depth_mask(depth, max_depth_m=math.inf)] = 0.0

    disp_h, disp_w = photo.image.shape[:2]
    stored_w, stored_h = photo.stored_size
    orientation = int(getattr(photo, "orientation", 1) or 1)
    h, w = depth.shape
    if (w, h) == (stored_w, stored_h) and orientation != 1:
        from metrocli.camera.image import apply_orientation

        depth = apply_orientation(depth, orientation)
    elif (w, h) != (disp_w, disp_h):
        sizes = f"{disp_w}x{disp_h}"
        if (stored_w, stored_h) != (disp_w, disp_h):
            sizes += f" (displayed) or {stored_w}x{stored_h} (stored)"
        raise DepthMapError(f"{path}: depth map is {w}x{h} but the photo {Path(photo.path).name} is {sizes}")
    if not np.any(depth > 0):
        raise DepthMapError(f"{path}: depth map has no valid (positive) depth")
    return SensorDepth(np.ascontiguousarray(depth, dtype=np.float32), float(quantum), path)


def read_depth_map(path: str | os.PathLike[str], photo: Any, depth_scale: float | None = None) -> np.ndarray:
    """(H, W) float32 metres in the displayed orientation of ``photo`` (see :func:`load_sensor_depth`)."""
    return load_sensor_depth(path, photo, depth_scale).depth_m
