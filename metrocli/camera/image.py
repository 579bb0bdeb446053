"""Load photos as upright RGB uint8 arrays (Pillow + pillow-heif), applying the EXIF orientation.

Supported formats: JPEG (incl. MPO), PNG, TIFF, WebP and HEIC/HEIF. Every problem with the file becomes an
:class:`~metrocli.errors.ImageError` with one line naming the file: missing, empty, a directory, truncated,
corrupt, a text file, an unsupported format, or absurdly many pixels (a "decompression bomb").

Pixel conversions to RGB uint8 (documented behaviour):

- 16-bit greyscale (``I;16*``) and 32-bit integer greyscale in 0..65535 are scaled by 255/65535; other integer
  or float images are stretched min..max to 0..255 (floats already in [0, 1] are scaled by 255). Pillow itself
  reduces 16-bit RGB files to 8 bits per channel.
- Greyscale, bilevel and palette images are expanded to RGB; CMYK, YCbCr, LAB and HSV are converted.
- Images with an alpha channel (RGBA, LA, PA, palette with transparency) are composited on WHITE, like a
  viewer on a white page: fully transparent pixels become white, opaque ones keep their colour.
- Colour profiles (ICC) are ignored; the first frame of a multi-frame file is used.

Orientation: EXIF Orientation 1..8 is applied to JPEG/PNG/TIFF/WebP pixels. HEIF files carry their rotation in
the container (``irot``/``imir``), which libheif applies while decoding; their EXIF Orientation is still
reported, but never applied a second time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metrocli.errors import ImageError

log = logging.getLogger("metrocli.camera.image")

#: Largest image accepted, in pixels (stored width x height). Real photos reach ~200 MP (phones with 200 MP
#: sensors, stitched panoramas); anything bigger is refused as a probable decompression bomb. 250 MP of RGB
#: take 750 MB of memory.
MAX_PIXELS = 250_000_000

#: Pillow format names accepted, with the names shown to users.
SUPPORTED_FORMATS: dict[str, str] = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "TIFF": "TIFF",
    "WEBP": "WebP",
    "HEIF": "HEIC/HEIF",
}
SUPPORTED_TEXT = "JPEG, PNG, TIFF, WebP, HEIC/HEIF"

_HEIF_REGISTERED = False
_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedImage:
    """An image file's pixels and metadata.

    ``rgb``: (H, W, 3) uint8 upright (displayed orientation), or None from :func:`probe_image`.
    ``orientation``: EXIF orientation 1..8 (1 when absent or invalid). ``stored_size``: (width, height) of
    the pixels as stored in the file, before the orientation. ``size``: displayed (width, height).
    ``format``: Pillow's format name. ``warnings``: what was odd but not fatal.
    """

    rgb: np.ndarray | None
    orientation: int
    stored_size: tuple[int, int]
    size: tuple[int, int]
    format: str
    warnings: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------ orientation
def stored_to_displayed_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """Displayed (width, height) of an image stored ``width`` x ``height`` with EXIF ``orientation``."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def displayed_to_stored_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """Stored (width, height) of an image displayed ``width`` x ``height`` with EXIF ``orientation``."""
    return stored_to_displayed_size(width, height, orientation)


def _check_orientation(orientation: int) -> int:
    if isinstance(orientation, bool) or not isinstance(orientation, (int, np.integer)):
        raise ValueError(f"EXIF orientation must be an integer 1..8, got {orientation!r}")
    if int(orientation) not in range(1, 9):
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation!r}")
    return int(orientation)


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an array stored like the photo into the displayed (upright) orientation.

    ``array``: (H, W) or (H, W, C) of any dtype, in the STORED orientation of a photo with EXIF
    ``orientation`` 1..8 (e.g. a sensor depth map saved beside the photo). Returns a contiguous copy,
    (W, H[, C]) for orientations 5-8. The same transform as Pillow's ``ImageOps.exif_transpose``:
    2 mirror left-right, 3 rotate 180°, 4 mirror top-bottom, 5 transpose, 6 rotate 90° clockwise,
    7 transverse, 8 rotate 90° counter-clockwise.
    """
    orientation = _check_orientation(orientation)
    a = np.asarray(array)
    if a.ndim < 2:
        raise ValueError(f"array must be (H, W) or (H, W, C), got shape {a.shape}")
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1, :]
    elif orientation == 5:
        a = a.swapaxes(0, 1)
    elif orientation == 6:
        a = np.rot90(a, k=-1, axes=(0, 1))
    elif orientation == 7:
        a = a[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        a = np.rot90(a, k=1, axes=(0, 1))
    return np.ascontiguousarray(a)


def undo_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Inverse of :func:`apply_orientation`: displayed (upright) array -> the stored layout of the photo."""
    orientation = _check_orientation(orientation)
    inverse = {6: 8, 8: 6}.get(orientation, orientation)  # 2, 3, 4, 5, 7 are their own inverses
    return apply_orientation(array, inverse)


# ---------------------------------------------------------------------------------------------------- loading
def _register_heif() -> None:
    global _HEIF_REGISTERED
    if not _HEIF_REGISTERED:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is a dependency
            log.warning("pillow-heif is not installed: HEIC/HEIF photos cannot be read")
        _HEIF_REGISTERED = True


@contextlib.contextmanager
def _pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb limit raised to :data:`MAX_PIXELS` (we check the size ourselves)."""
    from PIL import Image

    with _LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            # Pillow warns (UserWarning) about damaged metadata it skips; they are logged at debug level
            # instead of being printed as Python warnings on the user's terminal.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
            for item in caught[:20]:
                log.debug("Pillow: %s", " ".join(str(item.message).split()))
        finally:
            Image.MAX_IMAGE_PIXELS = old


#: The one pixel limit of every image metro opens (photos, dataset frames, depth maps): :data:`MAX_PIXELS`.
pixel_limit = _pixel_limit

#: Bytes of memory a pipeline needs per pixel of a photo (RGB, float32 depth, normals, confidence, points,
#: colours, mesh): measured 8.1 GB for a 225 MP photo through ``reconstruct``.
MEMORY_BYTES_PER_PIXEL = 36


def memory_budget_bytes() -> int | None:
    """Half the physical memory of this machine (None where unknown): photos needing more get a warning."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return None


def _warn_memory(path: Path, width: int, height: int) -> None:
    need = width * height * MEMORY_BYTES_PER_PIXEL
    budget = memory_budget_bytes()
    if budget is not None and need > budget:
        log.warning(
            "%s: %d x %d = %.0f MP; processing it may need about %.1f GB of memory (%.1f GB available)",
            path,
            width,
            height,
            width * height / 1e6,
            need / 1e9,
            budget * 2 / 1e9,
        )


def check_heif_complete(path: Path) -> None:
    """ImageError if the HEIF container at ``path`` ends before its top-level boxes do (a truncated file:
    libheif decodes the missing tiles of a grid image as garbage without an error)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size:
            fh.seek(offset)
            head = fh.read(16)
            box_size = int.from_bytes(head[:4], "big")
            kind = head[4:8].decode("latin-1")
            if box_size == 1 and len(head) >= 16:
                box_size = int.from_bytes(head[8:16], "big")
            elif box_size == 0:  # the box runs to the end of the file
                return
            if box_size < 8:
                raise ImageError(f"{path}: corrupt HEIC/HEIF file (box {kind!r} of {box_size} bytes)")
            if offset + box_size > size:
                raise ImageError(
                    f"{path}: truncated HEIC/HEIF file (box {kind!r} needs {offset + box_size} bytes, "
                    f"the file has {size})"
                )
            offset += box_size


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or type(exc).__name__})") from exc
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    if not path.is_file():
        raise ImageError(f"{path}: is not a regular file")
    if st.st_size == 0:
        raise ImageError(f"{path}: file is empty")


def _unidentified(path: Path) -> ImageError:
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        head = b""
    if _looks_like_text(head):
        return ImageError(f"{path}: is a text file, not an image")
    return ImageError(
        f"{path}: not an image in a supported format ({SUPPORTED_TEXT}), or the file is corrupt"
    )


def _orientation_of(im, fmt: str, name: str, notes: list[str]) -> tuple[int, bool]:
    """(EXIF orientation 1..8, whether it must still be applied to the decoded pixels)."""
    if fmt == "HEIF":
        value = im.info.get("original_orientation")
        applied_by_decoder = True
    else:
        applied_by_decoder = False
        try:
            value = im.getexif().get(0x0112)
        except Exception as exc:  # damaged EXIF block: the pixels are still fine
            notes.append(f"{name}: EXIF is unreadable ({type(exc).__name__}); orientation 1 assumed")
            value = None
    if value is None:
        return 1, False
    try:
        number = int(value[0] if isinstance(value, (tuple, list)) else value)
    except (TypeError, ValueError, IndexError, OverflowError):  # e.g. a float tag holding inf or NaN
        number = -1
    if number not in range(1, 9):
        notes.append(f"{name}: EXIF orientation {str(value)[:20]!r} is invalid; orientation 1 assumed")
        return 1, False
    return number, not applied_by_decoder


def _to_rgb(im) -> np.ndarray:
    """Pillow image of any mode -> (H, W, 3) uint8 (see the module docstring for the conversions)."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if arr.ndim != 2:
            raise ValueError(f"unexpected {mode} image of shape {arr.shape}")
        if mode.startswith("I;16"):
            grey = (arr.astype(np.float64) * (255.0 / 65535.0)).round()
        else:
            data = arr.astype(np.float64)
            finite = np.isfinite(data)
            data = np.where(finite, data, 0.0)
            lo = float(data[finite].min()) if finite.any() else 0.0
            hi = float(data[finite].max()) if finite.any() else 0.0
            if mode == "I" and lo >= 0 and hi <= 65535 and hi > 255:
                grey = (data * (255.0 / 65535.0)).round()
            elif mode == "I" and lo >= 0 and hi <= 255:
                grey = data
            elif mode == "F" and lo >= 0 and hi <= 1.0:
                grey = (data * 255.0).round()
            else:
                grey = (data - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
        grey8 = np.clip(grey, 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if mode == "P" and not has_alpha:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _read(path: str | os.PathLike[str], decode: bool, verify: bool = True) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_file(path)
    _register_heif()
    notes: list[str] = []
    with _pixel_limit():
        try:
            im = Image.open(path)
        except UnidentifiedImageError as exc:
            raise _unidentified(path) from exc
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"{path}: image has far more pixels than the {MAX_PIXELS / 1e6:.0f} MP limit "
                "(a decompression bomb?)"
            ) from exc
        except MemoryError as exc:
            raise ImageError(f"{path}: not enough memory to open the image") from exc
        except Exception as exc:
            raise ImageError(f"{path}: cannot open image ({_one_line(exc)})") from exc
        with im:
            fmt = str(im.format or "?")
            if fmt not in SUPPORTED_FORMATS:
                raise ImageError(f"{path}: unsupported image format {fmt} (supported: {SUPPORTED_TEXT})")
            width, height = (int(v) for v in im.size)
            if width < 1 or height < 1:
                raise ImageError(f"{path}: image has no pixels ({width} x {height})")
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{path}: image is {width} x {height} = {width * height / 1e6:.0f} MP, more than the "
                    f"{MAX_PIXELS / 1e6:.0f} MP limit (a decompression bomb?)"
                )
            if fmt == "HEIF" and (decode or verify):
                check_heif_complete(path)
            if decode:
                _warn_memory(path, width, height)
            orientation, apply = _orientation_of(im, fmt, str(path), notes)
            stored = _stored_size(im, fmt, (width, height), orientation)
            rgb = None
            try:
                if decode:
                    im.load()
                    rgb = _to_rgb(im)
                elif verify:
                    _verify_decodes(im)
            except MemoryError as exc:
                raise ImageError(f"{path}: not enough memory to decode the {width} x {height} image") from exc
            except Exception as exc:  # truncated / corrupt data: Pillow raises all kinds of errors
                raise ImageError(
                    f"{path}: cannot decode {SUPPORTED_FORMATS[fmt]} image ({_one_line(exc)})"
                ) from exc
            if fmt == "TIFF" and apply and 0x0112 not in getattr(im, "tag_v2", {}):
                apply = False  # Pillow's TIFF decoder turned the pixels itself (and dropped the tag)
    displayed = stored_to_displayed_size(*stored, orientation)
    if rgb is not None:
        if apply:
            rgb = apply_orientation(rgb, orientation)
        if rgb.shape != (displayed[1], displayed[0], 3):
            raise ImageError(
                f"{path}: decoded pixels have an unexpected shape {rgb.shape} for a "
                f"{displayed[0]} x {displayed[1]} image"
            )
        rgb = np.ascontiguousarray(rgb)
    return LoadedImage(rgb, orientation, stored, displayed, fmt, tuple(notes))


def _stored_size(im, fmt: str, size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) of the pixels as stored in the file, before the EXIF orientation."""
    if fmt == "HEIF":  # libheif reports (and decodes) the displayed image
        return displayed_to_stored_size(*size, orientation)
    if fmt == "TIFF":  # Pillow may report the displayed size of TIFFs with orientation 5-8
        tags = getattr(im, "tag_v2", {})
        width, height = tags.get(256), tags.get(257)
        if isinstance(width, int) and isinstance(height, int) and {width, height} == set(size):
            return width, height
    return size


def _verify_decodes(im) -> None:
    """Decode the whole file cheaply (JPEG at 1/8 scale via ``draft``) to find truncation and corruption."""
    if im.format in ("JPEG", "MPO") and im.mode in ("RGB", "L", "CMYK", "YCbCr"):
        im.draft(im.mode, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
    im.load()


def read_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Decode the image at ``path``: :class:`LoadedImage` with upright ``rgb`` (H, W, 3) uint8."""
    return _read(path, decode=True)


def probe_image(path: str | os.PathLike[str], verify: bool = True) -> LoadedImage:
    """Size, orientation and format of the image at ``path`` without keeping its pixels (``rgb`` is None).

    With ``verify`` (default) the file is still decoded (JPEGs at 1/8 scale, which is fast) so truncated or
    corrupt files raise :class:`ImageError` just as with :func:`read_image`; ``verify=False`` reads the
    headers only.
    """
    return _read(path, decode=False, verify=verify)


def load_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """``(rgb, orientation)``: the photo at ``path`` as upright (H, W, 3) uint8 RGB, and its EXIF orientation.

    Raises :class:`ImageError` (one line naming the file) for anything that is not a readable image.
    """
    loaded = read_image(path)
    assert loaded.rgb is not None
    return loaded.rgb, loaded.orientation
