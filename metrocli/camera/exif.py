"""Read the EXIF tags metrocli needs (Pillow, the one EXIF reader), robust to any garbage.

Every value is validated: zero, negative, NaN, infinite, absurd values and rationals with a zero denominator
become ``None`` and add a warning to :attr:`ExifData.warnings`. Unparseable EXIF blocks give an empty
:class:`ExifData` with a warning; only an unreadable *file* raises (:class:`~metrocli.errors.ImageError`).
"""

from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from metrocli.errors import ImageError

log = logging.getLogger("metrocli.camera.exif")

#: FocalPlaneResolutionUnit code -> millimetres per unit. EXIF: 2 = inch (the default), 3 = cm; TIFF/EP adds
#: 4 = mm and 5 = micrometre. 1 ("no absolute unit") is treated as inch, as most cameras writing it mean that.
FOCAL_PLANE_UNIT_MM: dict[int, float] = {1: 25.4, 2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}

#: Plausibility limits.
MAX_FOCAL_MM = 10_000.0  # longer than any real lens
MAX_FOCAL_PLANE_RES_PER_MM = 100_000.0  # 10 nm pixels
MAX_EXIF_DIMENSION = 1_000_000  # px
MAX_STRING = 200


@dataclass(frozen=True)
class ExifData:
    """The EXIF fields metrocli uses. Every field is ``None`` when absent or invalid.

    ``focal_length_mm``: FocalLength (mm). ``focal_35mm``: FocalLengthIn35mmFilm (mm).
    ``focal_plane_x_res`` / ``focal_plane_y_res``: FocalPlaneX/YResolution, in pixels per
    ``focal_plane_unit`` (raw code, see :data:`FOCAL_PLANE_UNIT_MM`; ``None`` = absent, EXIF default inch).
    ``exif_image_width`` / ``exif_image_height``: ExifImageWidth/Height (PixelX/YDimension), px, in the
    STORED orientation. ``orientation``: the Orientation tag 1..8.
    """

    make: str | None = None
    model: str | None = None
    orientation: int | None = None
    focal_length_mm: float | None = None
    focal_35mm: float | None = None
    focal_plane_x_res: float | None = None
    focal_plane_y_res: float | None = None
    focal_plane_unit: int | None = None
    exif_image_width: int | None = None
    exif_image_height: int | None = None
    datetime: str | None = None
    datetime_original: str | None = None
    lens_model: str | None = None
    software: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def focal_plane_unit_mm(self) -> float:
        """Millimetres per FocalPlaneResolutionUnit (inch when the tag is absent)."""
        return FOCAL_PLANE_UNIT_MM.get(self.focal_plane_unit or 2, 25.4)

    @property
    def focal_plane_x_res_per_mm(self) -> float | None:
        """FocalPlaneXResolution in pixels per mm of the sensor (at ExifImageWidth), or None."""
        if self.focal_plane_x_res is None:
            return None
        return self.focal_plane_x_res / self.focal_plane_unit_mm

    @property
    def focal_plane_y_res_per_mm(self) -> float | None:
        """FocalPlaneYResolution in pixels per mm of the sensor (at ExifImageHeight), or None."""
        if self.focal_plane_y_res is None:
            return None
        return self.focal_plane_y_res / self.focal_plane_unit_mm

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields (warnings as a list)."""
        return {
            "make": self.make,
            "model": self.model,
            "orientation": self.orientation,
            "focal_length_mm": self.focal_length_mm,
            "focal_35mm": self.focal_35mm,
            "focal_plane_x_res": self.focal_plane_x_res,
            "focal_plane_y_res": self.focal_plane_y_res,
            "focal_plane_unit": self.focal_plane_unit,
            "exif_image_width": self.exif_image_width,
            "exif_image_height": self.exif_image_height,
            "datetime": self.datetime,
            "datetime_original": self.datetime_original,
            "lens_model": self.lens_model,
            "software": self.software,
            "warnings": list(self.warnings),
        }


class _Invalid(Exception):
    """A tag value that cannot be used; the message says why."""


def _first(values: Any) -> Any:
    if isinstance(values, (list, tuple)):
        if not values:
            raise _Invalid("is empty")
        return values[0]
    return values


def _number(values: Any) -> float:
    """First value of a tag as a finite float; rationals with a zero denominator are invalid."""
    value = _first(values)
    for _ in range(3):  # exifread gives FLOAT/DOUBLE values as 1-tuples
        if isinstance(value, (list, tuple)):
            value = _first(value)
    if isinstance(value, bool):
        raise _Invalid(f"is not a number ({value!r})")
    if hasattr(value, "numerator") and hasattr(value, "denominator") and not isinstance(value, int):
        num, den = value.numerator, value.denominator
        if not isinstance(num, (int, float)) or not isinstance(den, (int, float)):
            raise _Invalid(f"is a malformed rational {value!r}")
        if den == 0:
            raise _Invalid(f"is a rational with a zero denominator ({num}/0)")
        result = float(num) / float(den)
    elif isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, (str, bytes)):
        try:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            result = float(text.strip().rstrip("\x00").split()[0])
        except (ValueError, IndexError) as exc:
            raise _Invalid(f"is not a number ({str(value)[:40]!r})") from exc
    else:
        raise _Invalid(f"has an unexpected type {type(value).__name__}")
    if not math.isfinite(result):
        raise _Invalid(f"is not finite ({result})")
    return result


def _positive(values: Any, maximum: float) -> float:
    result = _number(values)
    if result <= 0:
        raise _Invalid(f"is not positive ({result:g})")
    if result > maximum:
        raise _Invalid(f"is absurdly large ({result:g})")
    return result


def _integer(values: Any, allowed: range | None = None) -> int:
    result = _number(values)
    if result != int(result):
        raise _Invalid(f"is not an integer ({result:g})")
    number = int(result)
    if allowed is not None and number not in allowed:
        raise _Invalid(f"is out of range ({number})")
    return number


def _text(values: Any) -> str | None:
    if isinstance(values, bytes):
        values = values.decode("utf-8", "replace")
    if isinstance(values, (list, tuple)):
        if values and all(isinstance(v, int) and 0 <= v < 256 for v in values):
            values = bytes(values).decode("utf-8", "replace")
        else:
            values = " ".join(str(v) for v in values)
    text = "".join(ch for ch in str(values) if ch.isprintable()).strip()
    return text[:MAX_STRING] or None


def parse_exif_tags(tags: dict[str, Any], name: str = "image") -> ExifData:
    """Build :class:`ExifData` from a tag dict keyed by exifread-style names (``"EXIF FocalLength"``), values
    raw (Pillow's) or with a ``values`` attribute (exifread's ``IfdTag``)."""
    warnings: list[str] = []
    out: dict[str, Any] = {}

    def get(key: str) -> Any:
        tag = tags.get(key)
        if tag is None:
            return None
        return getattr(tag, "values", tag)

    def take(attr: str, key: str, convert) -> None:
        raw = get(key)
        if raw is None:
            return
        try:
            out[attr] = convert(raw)
        except _Invalid as exc:
            label = key.split(" ", 1)[-1]
            warnings.append(f"{name}: EXIF {label} {exc}; ignored")
        except Exception as exc:  # any other oddity of a damaged tag
            label = key.split(" ", 1)[-1]
            warnings.append(f"{name}: EXIF {label} is unreadable ({type(exc).__name__}); ignored")

    take("make", "Image Make", _text)
    take("model", "Image Model", _text)
    take("software", "Image Software", _text)
    take("datetime", "Image DateTime", _text)
    take("datetime_original", "EXIF DateTimeOriginal", _text)
    take("lens_model", "EXIF LensModel", _text)
    take("orientation", "Image Orientation", lambda v: _integer(v, range(1, 9)))
    take("focal_length_mm", "EXIF FocalLength", lambda v: _positive(v, MAX_FOCAL_MM))
    take("focal_35mm", "EXIF FocalLengthIn35mmFilm", lambda v: _positive(v, MAX_FOCAL_MM))
    take("focal_plane_x_res", "EXIF FocalPlaneXResolution", lambda v: _positive(v, 1e9))
    take("focal_plane_y_res", "EXIF FocalPlaneYResolution", lambda v: _positive(v, 1e9))
    take("focal_plane_unit", "EXIF FocalPlaneResolutionUnit", lambda v: _integer(v, range(1, 6)))
    for key in ("EXIF ExifImageWidth", "EXIF ExifImageLength"):
        attr = "exif_image_width" if key.endswith("Width") else "exif_image_height"
        take(attr, key, lambda v: _integer(_positive(v, MAX_EXIF_DIMENSION)))
    # A resolution in an unknown unit, or an absurd pixel density, makes the focal-plane values useless.
    unit_mm = FOCAL_PLANE_UNIT_MM.get(out.get("focal_plane_unit") or 2, 25.4)
    for attr, label in (
        ("focal_plane_x_res", "FocalPlaneXResolution"),
        ("focal_plane_y_res", "FocalPlaneYResolution"),
    ):
        value = out.get(attr)
        if value is not None and value / unit_mm > MAX_FOCAL_PLANE_RES_PER_MM:
            warnings.append(f"{name}: EXIF {label} is absurdly large ({value:g} px per unit); ignored")
            out[attr] = None
    return ExifData(**out, warnings=tuple(warnings))


#: Pillow tag ids -> the names :func:`parse_exif_tags` understands.
_PILLOW_IFD0 = {
    0x010F: "Image Make",
    0x0110: "Image Model",
    0x0112: "Image Orientation",
    0x0131: "Image Software",
    0x0132: "Image DateTime",
}
_PILLOW_EXIF = {
    0x9003: "EXIF DateTimeOriginal",
    0xA434: "EXIF LensModel",
    0x920A: "EXIF FocalLength",
    0xA405: "EXIF FocalLengthIn35mmFilm",
    0xA20E: "EXIF FocalPlaneXResolution",
    0xA20F: "EXIF FocalPlaneYResolution",
    0xA210: "EXIF FocalPlaneResolutionUnit",
    0xA002: "EXIF ExifImageWidth",
    0xA003: "EXIF ExifImageLength",
}


def _pillow_tags(fh: BinaryIO) -> dict[str, Any]:
    """The EXIF tags metrocli uses, read by Pillow (JPEG, PNG, TIFF, WebP; HEIF with pillow-heif).

    Raises whatever Pillow raises on a file it cannot open or on a damaged EXIF block."""
    from PIL import Image

    from metrocli.camera.image import _pixel_limit, _register_heif

    _register_heif()
    fh.seek(0)
    # the photo loader's pixel limit, and its handling of Pillow's warnings about damaged metadata
    with _pixel_limit(), Image.open(fh) as im:
        exif = im.getexif()
        tags: dict[str, Any] = {name: exif[tag] for tag, name in _PILLOW_IFD0.items() if tag in exif}
        sub = exif.get_ifd(0x8769)
        tags.update({name: sub[tag] for tag, name in _PILLOW_EXIF.items() if tag in sub})
    return tags


def read_exif_stream(fh: BinaryIO, name: str = "image") -> ExifData:
    """Read EXIF from an open binary file; never raises for damaged metadata (warning instead).

    A file Pillow cannot open as an image gives an empty :class:`ExifData` (the image loader reports it).
    """
    from PIL import UnidentifiedImageError

    try:
        tags = _pillow_tags(fh)
    except UnidentifiedImageError:
        return ExifData()
    except Exception as exc:  # damaged EXIF block (any exception on crafted files, MemoryError included)
        return ExifData(warnings=(f"{name}: EXIF is unreadable ({type(exc).__name__}); ignored",))
    return parse_exif_tags(tags, name)


def read_exif_bytes(data: bytes, name: str = "image") -> ExifData:
    """Read EXIF from the bytes of an image file."""
    return read_exif_stream(io.BytesIO(data), name)


def read_exif(path: str | os.PathLike[str]) -> ExifData:
    """Read EXIF from the image at ``path``.

    Raises :class:`ImageError` only when the file itself cannot be opened; damaged or missing EXIF gives an
    (empty) :class:`ExifData` whose ``warnings`` say what was ignored.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return read_exif_stream(fh, str(path))
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a directory, not an image") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or type(exc).__name__})") from exc
