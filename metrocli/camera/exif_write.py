"""Write JPEGs with phone-style EXIF (Make/Model, Orientation, focal tags), atomically.

Used by the synthetic sample renderer and by tests that need photos with known intrinsics. The pixels are
given in STORED orientation: a viewer (and :func:`metrocli.camera.image.load_image`) applies ``orientation``
to show them upright.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, TiffImagePlugin

from metrocli.atomic import write_atomic

FocalPlaneUnit = Literal["inch", "cm", "mm"]

# EXIF tag ids (IFD0 and the Exif sub-IFD).
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_ORIENTATION = 0x0112
TAG_EXIF_IFD = 0x8769
TAG_FOCAL_LENGTH = 0x920A
TAG_FOCAL_35MM = 0xA405
TAG_FOCAL_PLANE_X_RES = 0xA20E
TAG_FOCAL_PLANE_Y_RES = 0xA20F
TAG_FOCAL_PLANE_UNIT = 0xA210
TAG_PIXEL_X_DIMENSION = 0xA002
TAG_PIXEL_Y_DIMENSION = 0xA003

#: FocalPlaneResolutionUnit code -> millimetres per unit. 2 = inch and 3 = cm are the EXIF standard; 4 = mm
#: (and 5 = micrometre) are the TIFF/EP extension some cameras write.
UNIT_CODES: dict[FocalPlaneUnit, int] = {"inch": 2, "cm": 3, "mm": 4}
MM_PER_UNIT: dict[FocalPlaneUnit, float] = {"inch": 25.4, "cm": 10.0, "mm": 1.0}


def _rational(value: float) -> TiffImagePlugin.IFDRational:
    frac = Fraction(value).limit_denominator(100_000)
    return TiffImagePlugin.IFDRational(frac.numerator, frac.denominator)


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def make_exif(
    *,
    make: str,
    model: str,
    stored_size: tuple[int, int],
    focal_length_mm: float | None = None,
    focal_35mm: float | None = None,
    focal_plane_res_per_mm: float | None = None,
    focal_plane_unit: FocalPlaneUnit = "inch",
    exif_image_size: tuple[int, int] | None = None,
    orientation: int = 1,
) -> Image.Exif:
    """Build a Pillow ``Exif`` with phone-style tags.

    ``focal_plane_res_per_mm`` is the sensor's pixel density in pixels per mm at ``exif_image_size`` (the
    ``PixelX/YDimension`` tags; default ``stored_size`` = (width, height) of the stored pixels). It is
    written in ``focal_plane_unit`` (inch: ×25.4, cm: ×10, mm: ×1) with the matching
    ``FocalPlaneResolutionUnit``.
    ``focal_35mm`` is rounded to whole millimetres, as the EXIF SHORT type requires.
    """
    _positive("focal_length_mm", focal_length_mm)
    _positive("focal_35mm", focal_35mm)
    _positive("focal_plane_res_per_mm", focal_plane_res_per_mm)
    if orientation not in range(1, 9):
        raise ValueError(f"orientation must be 1..8, got {orientation!r}")
    if focal_plane_unit not in UNIT_CODES:
        raise ValueError(f"focal_plane_unit must be one of {sorted(UNIT_CODES)}, got {focal_plane_unit!r}")
    exif = Image.Exif()
    exif[TAG_MAKE] = str(make)
    exif[TAG_MODEL] = str(model)
    exif[TAG_ORIENTATION] = int(orientation)
    ifd = exif.get_ifd(TAG_EXIF_IFD)
    width, height = exif_image_size if exif_image_size is not None else stored_size
    ifd[TAG_PIXEL_X_DIMENSION] = int(width)
    ifd[TAG_PIXEL_Y_DIMENSION] = int(height)
    if focal_length_mm is not None:
        ifd[TAG_FOCAL_LENGTH] = _rational(focal_length_mm)
    if focal_35mm is not None:
        ifd[TAG_FOCAL_35MM] = round(focal_35mm)
    if focal_plane_res_per_mm is not None:
        per_unit = focal_plane_res_per_mm * MM_PER_UNIT[focal_plane_unit]
        ifd[TAG_FOCAL_PLANE_X_RES] = _rational(per_unit)
        ifd[TAG_FOCAL_PLANE_Y_RES] = _rational(per_unit)
        ifd[TAG_FOCAL_PLANE_UNIT] = UNIT_CODES[focal_plane_unit]
    return exif


def write_jpeg(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    make: str,
    model: str,
    focal_length_mm: float | None = None,
    focal_35mm: float | None = None,
    focal_plane_res_per_mm: float | None = None,
    focal_plane_unit: FocalPlaneUnit = "inch",
    exif_image_size: tuple[int, int] | None = None,
    orientation: int = 1,
    quality: int = 92,
) -> Path:
    """Write ``rgb`` ((H, W, 3) uint8, STORED orientation) as a JPEG with phone-style EXIF, atomically.

    Tags: Make/Model/Orientation in IFD0; FocalLength (mm), FocalLengthIn35mmFilm (mm),
    FocalPlaneX/YResolution + FocalPlaneResolutionUnit and PixelX/YDimension in the Exif IFD (see
    :func:`make_exif`). Returns ``path``.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {arr.dtype} {arr.shape}")
    height, width = arr.shape[:2]
    exif = make_exif(
        make=make,
        model=model,
        stored_size=(width, height),
        focal_length_mm=focal_length_mm,
        focal_35mm=focal_35mm,
        focal_plane_res_per_mm=focal_plane_res_per_mm,
        focal_plane_unit=focal_plane_unit,
        exif_image_size=exif_image_size,
        orientation=orientation,
    )
    image = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")

    def _write(tmp: Path) -> None:
        image.save(tmp, format="JPEG", quality=int(quality), exif=exif.tobytes())

    return write_atomic(path, _write)
