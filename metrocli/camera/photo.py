"""A photo ready for metrology: upright RGB pixels, EXIF and intrinsics in pixels of the displayed image."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metrocli.camera.exif import ExifData, read_exif
from metrocli.camera.focal import resolve_intrinsics
from metrocli.camera.image import LoadedImage, probe_image, read_image
from metrocli.camera.intrinsics import Intrinsics

log = logging.getLogger("metrocli.camera.photo")


@dataclass(frozen=True)
class PhotoInfo:
    """Everything about a photo but its pixels (what ``metro info`` prints).

    ``width``/``height``: displayed (upright) size in px; ``stored_size``: (width, height) as stored in the
    file; ``orientation``: EXIF orientation 1..8; ``intrinsics``: in px of the displayed image.
    """

    path: Path
    intrinsics: Intrinsics
    orientation: int
    stored_size: tuple[int, int]
    make: str | None
    model: str | None
    exif: ExifData
    format: str
    warnings: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """Displayed width (px)."""
        return self.intrinsics.width

    @property
    def height(self) -> int:
        """Displayed height (px)."""
        return self.intrinsics.height

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the keys of ``metro info --json``)."""
        k = self.intrinsics
        return {
            "path": str(self.path),
            "width": k.width,
            "height": k.height,
            "stored_width": self.stored_size[0],
            "stored_height": self.stored_size[1],
            "orientation": self.orientation,
            "format": self.format,
            "make": self.make,
            "model": self.model,
            "focal_px": k.fx,
            "focal_source": k.focal_source,
            "cx": k.cx,
            "cy": k.cy,
            "focal_35mm": k.focal_35mm,
            "fov_deg": k.fov_x_deg,
            "fov_y_deg": k.fov_y_deg,
            "focal_length_mm": self.exif.focal_length_mm,
            "exif_focal_35mm": self.exif.focal_35mm,
            "datetime": self.exif.datetime_original or self.exif.datetime,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Photo:
    """A loaded photo. ``image``: (H, W, 3) uint8 RGB, upright (EXIF orientation applied).

    ``intrinsics`` are in pixels of ``image`` (x right, y down, z forward; principal point at the centre);
    ``orientation`` is the EXIF orientation 1..8 of the file (use
    :func:`metrocli.camera.image.apply_orientation` for other arrays stored like it, e.g. sensor depth);
    ``stored_size`` is (width, height) as stored in the file. ``warnings`` list everything that was odd;
    ``exif`` holds the parsed EXIF fields.
    """

    path: Path
    image: np.ndarray
    intrinsics: Intrinsics
    orientation: int
    stored_size: tuple[int, int]
    make: str | None
    model: str | None
    warnings: tuple[str, ...] = ()
    exif: ExifData = field(default_factory=ExifData)

    @property
    def width(self) -> int:
        """Displayed width (px)."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Displayed height (px)."""
        return int(self.image.shape[0])


def _describe(
    path: Path,
    loaded: LoadedImage,
    focal_px: float | None,
    fov_deg: float | None,
    log_default_focal: bool = True,
) -> tuple[ExifData, Intrinsics, tuple[str, ...]]:
    exif = read_exif(path)
    intrinsics, focal_warnings = resolve_intrinsics(
        exif, loaded.size, loaded.stored_size, focal_px=focal_px, fov_deg=fov_deg, name=str(path)
    )
    warnings = (*loaded.warnings, *exif.warnings, *focal_warnings)
    deferred = focal_warnings[-1] if intrinsics.focal_source == "default" and not log_default_focal else None
    for message in warnings:
        if message is not deferred:
            log.warning(message)
    return exif, intrinsics, warnings


def describe_photo(
    path: str | os.PathLike[str],
    focal_px: float | None = None,
    fov_deg: float | None = None,
    *,
    verify: bool = True,
) -> PhotoInfo:
    """Size, orientation, EXIF and intrinsics of the photo at ``path``, without keeping its pixels.

    With ``verify`` the file is decoded (cheaply) to make sure it is a readable image; raises
    :class:`~metrocli.errors.ImageError` otherwise. ``focal_px``/``fov_deg`` override the EXIF (see
    :func:`metrocli.camera.focal.resolve_intrinsics`).
    """
    path = Path(path)
    loaded = probe_image(path, verify=verify)
    exif, intrinsics, warnings = _describe(path, loaded, focal_px, fov_deg)
    return PhotoInfo(
        path=path,
        intrinsics=intrinsics,
        orientation=loaded.orientation,
        stored_size=loaded.stored_size,
        make=exif.make,
        model=exif.model,
        exif=exif,
        format=loaded.format,
        warnings=warnings,
    )


def load_photo(
    path: str | os.PathLike[str],
    focal_px: float | None = None,
    fov_deg: float | None = None,
    *,
    log_default_focal: bool = True,
) -> Photo:
    """Load the photo at ``path``: upright RGB uint8 pixels and intrinsics of the displayed image.

    Focal length: ``focal_px`` (px) or ``fov_deg`` (horizontal degrees) if given, else EXIF by the order of
    :mod:`metrocli.camera.focal`. Raises :class:`~metrocli.errors.ImageError` (one line naming the file) for
    unreadable files; damaged EXIF only adds warnings (also logged to ``metrocli.camera.photo``).
    ``log_default_focal=False`` keeps the "assuming a 65° field of view" warning in ``Photo.warnings`` but
    does not log it (``--focal auto`` says what became of the focal length once it knows).
    """
    path = Path(path)
    loaded = read_image(path)
    assert loaded.rgb is not None
    exif, intrinsics, warnings = _describe(path, loaded, focal_px, fov_deg, log_default_focal)
    return Photo(
        path=path,
        image=loaded.rgb,
        intrinsics=intrinsics,
        orientation=loaded.orientation,
        stored_size=loaded.stored_size,
        make=exif.make,
        model=exif.model,
        warnings=warnings,
        exif=exif,
    )
