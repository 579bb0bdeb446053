"""Depth/normal/confidence map files and their colourised previews (numpy + Pillow, no torch, no matplotlib).

Files written for one photo with stem ``S`` (all atomically, see :mod:`metrocli.atomic`):

- ``S.depth.npy``       (H, W) float32 metres, 0 where invalid
- ``S.normal.npy``      (H, W, 3) float32 unit normals, camera frame (x right, y down, z forward), each turned
  towards the camera (``n · ray <= 0``, like the PLY normals); not written for depth-only models
- ``S.confidence.npy``  (H, W) float32 depth confidence: the network's raw confidence channel (ViT) or logit
  (ConvNeXt), unbounded, higher is more confident, comparable only between outputs of one model
- ``S.depth.png``       (H, W) 16-bit millimetres, clipped to 65.535 m, 0 = invalid
- ``S.preview.png``     colourised depth (Turbo, near = red) beside colourised normals (``(n + 1) / 2`` with x
  right, y up, z towards the viewer), above a colour bar labelled in metres; the depth colours span the
  photo's own range, or a fixed ``depth_range_m`` (``--depth-range NEAR,FAR``) so that a batch compares
- ``S.json``            intrinsics (with their source), model, timings, depth statistics, file names
- ``S.depth.tiff``      (H, W) 32-bit float metres (Pillow mode F), only when asked for (``tiff``)

:class:`OutputOptions` chooses what is written (``--outputs``), the maps' dtype (``--dtype``) and their format
(``--format``: ``.npy`` or compressed ``.npz`` holding one array named after its kind).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from metrocli.atomic import atomic_path, write_text_atomic
from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MetroUsageError
from metrocli.geometry.sampling import valid_depth_mask
from metrocli.jsonsafe import json_ready
from metrocli.prediction import Prediction

#: Largest depth a 16-bit millimetre PNG can hold (m).
PNG_MAX_DEPTH_M = 65.535
#: Longest side of a preview panel (px); larger maps are downscaled for the preview only.
PREVIEW_MAX_SIDE_PX = 1280
#: Height of the colour bar strip under a preview (px).
COLOUR_BAR_HEIGHT_PX = 28
#: Pixels per block when converting depth to 16-bit millimetres.
PNG_BLOCK_PIXELS = 1 << 20


#: What ``metro depth`` can write (``--outputs``): the maps, the preview, the 16-bit PNG, the float TIFF.
OutputKind = Literal["depth", "normal", "confidence", "preview", "png16", "tiff"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)
#: Written unless ``--outputs`` says otherwise.
DEFAULT_OUTPUTS: tuple[str, ...] = ("depth", "normal", "confidence", "preview", "png16")
MapDtype = Literal["float32", "float16"]
MapFormat = Literal["npy", "npz"]


@dataclass(frozen=True)
class OutputOptions:
    """What ``metro depth`` writes: ``outputs`` (kinds, see :data:`OUTPUT_KINDS`; the JSON sidecar always),
    the ``dtype`` of the ``.npy``/``.npz`` maps and their ``format`` (``npz``: compressed)."""

    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    dtype: MapDtype = "float32"
    format: MapFormat = "npy"

    def __post_init__(self) -> None:
        unknown = [k for k in self.outputs if k not in OUTPUT_KINDS]
        if unknown:
            raise MetroUsageError(
                f"unknown output {', '.join(unknown)}; choose from {', '.join(OUTPUT_KINDS)}"
            )
        if not self.outputs:
            raise MetroUsageError("--outputs names nothing to write")
        if self.dtype not in get_args(MapDtype):
            raise MetroUsageError(f"unknown map dtype {self.dtype!r}")
        if self.format not in get_args(MapFormat):
            raise MetroUsageError(f"unknown map format {self.format!r}")
        # one canonical order, so that equal choices compare (and resume) equal
        object.__setattr__(self, "outputs", tuple(k for k in OUTPUT_KINDS if k in self.outputs))

    @classmethod
    def parse(cls, outputs: str, dtype: str = "float32", fmt: str = "npy") -> OutputOptions:
        """From ``--outputs depth,png16`` (comma-separated), ``--dtype``, ``--format``."""
        kinds = tuple(k.strip().lower() for k in outputs.split(",") if k.strip())
        return cls(kinds, dtype, fmt)  # type: ignore[arg-type]  # checked in __post_init__

    def key(self) -> dict[str, Any]:
        """Resume record: the kinds, dtype and format."""
        return {"outputs": list(self.outputs), "dtype": self.dtype, "format": self.format}


@functools.cache
def _turbo_lut() -> np.ndarray:
    """(256, 3) uint8 RGB: OpenCV's Turbo colour map (Mikhailov 2019), the one colour map of metrocli."""
    import cv2

    levels = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    return np.ascontiguousarray(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[:, 0, ::-1])


def turbo(x: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped, NaN as 0; any shape S) to Turbo RGB, uint8 of shape S + (3,)."""
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return _turbo_lut()[np.rint(x * 255.0).astype(np.intp)]


def auto_depth_range(depth_m: np.ndarray) -> tuple[float, float] | None:
    """``(near_m, far_m)`` of the preview colours of a depth map: its inverse depth's 2nd and 98th
    percentiles over valid pixels; None without valid depth."""
    depth_m = np.asarray(depth_m, dtype=np.float64)
    valid = valid_depth_mask(depth_m, max_depth_m=math.inf)
    if not valid.any():
        return None
    lo, hi = np.percentile(1.0 / depth_m[valid], [2.0, 98.0])
    return float(1.0 / hi), float(1.0 / lo)


def check_depth_range(depth_range_m: tuple[float, float]) -> tuple[float, float]:
    """``(near_m, far_m)`` as floats; MetroUsageError unless ``0 < near < far`` (finite)."""
    near, far = (float(v) for v in depth_range_m)
    if not (math.isfinite(near) and math.isfinite(far) and 0 < near < far):
        raise MetroUsageError(
            f"the depth range must be NEAR,FAR metres with 0 < NEAR < FAR, got {near},{far}"
        )
    return near, far


def _depth_scale(depth_m: np.ndarray, near_m: float, far_m: float) -> np.ndarray:
    """Position of depths in the colour scale: 1 at ``near_m``, 0 at ``far_m``, linear in inverse depth,
    clipped (equal ends: 0.5)."""
    inv = 1.0 / np.asarray(depth_m, np.float64)
    lo, hi = 1.0 / far_m, 1.0 / near_m
    return np.clip((inv - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full_like(inv, 0.5)


def colourise_depth(
    depth_m: np.ndarray,
    invalid_rgb: tuple[int, int, int] = (0, 0, 0),
    depth_range_m: tuple[float, float] | None = None,
) -> np.ndarray:
    """(H, W) depth in metres -> (H, W, 3) uint8 RGB.

    Inverse depth is normalised between ``depth_range_m`` (near, far; default :func:`auto_depth_range`: the
    photo's own 2nd and 98th percentiles) and mapped through :func:`turbo` (its [0.05, 0.95] part), so near
    is red and far is blue. Invalid pixels (0, negative, NaN, inf) get ``invalid_rgb``.
    """
    depth_m = np.asarray(depth_m, dtype=np.float64)
    if depth_m.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth_m.shape}")
    valid = valid_depth_mask(depth_m, max_depth_m=math.inf)
    out = np.empty((*depth_m.shape, 3), np.uint8)
    out[:] = invalid_rgb
    span = depth_range_m if depth_range_m is not None else auto_depth_range(depth_m)
    if span is None:
        return out
    out[valid] = turbo(0.05 + 0.9 * _depth_scale(depth_m[valid], *span))  # black stays "invalid"
    return out


def _metres_label(depth_m: float) -> str:
    if depth_m < 1:
        return f"{depth_m:.2f} m"
    return f"{depth_m:.1f} m" if depth_m < 9.95 else f"{depth_m:.0f} m"


def colour_bar(width: int, near_m: float, far_m: float, height: int = COLOUR_BAR_HEIGHT_PX) -> np.ndarray:
    """(height, width, 3) uint8: the depth colour scale from ``near_m`` (left, red) to ``far_m`` (right,
    blue), as :func:`colourise_depth` colours it, with tick labels in metres (as many as fit)."""
    from PIL import Image, ImageDraw

    xs = (np.arange(width) + 0.5) / width  # 0 = near, 1 = far, linear in inverse depth
    inv = 1.0 / near_m + xs * (1.0 / far_m - 1.0 / near_m)
    strip = turbo(0.05 + 0.9 * _depth_scale(1.0 / inv, near_m, far_m))
    bar_h = max(4, height // 3)
    out = np.zeros((height, width, 3), np.uint8)
    out[:bar_h] = strip[None]
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    n_ticks = min(6, width // 64 + 1)
    for i in range(n_ticks):
        x = 0.0 if n_ticks == 1 else i / (n_ticks - 1)
        label = _metres_label(1.0 / (1.0 / near_m + x * (1.0 / far_m - 1.0 / near_m)))
        text_w = draw.textlength(label)
        px = round(x * (width - 1))
        draw.line([(px, 0), (px, bar_h + 1)], fill=(255, 255, 255))
        draw.text(
            (min(max(0, px - text_w / 2), max(0, width - text_w)), bar_h + 2), label, fill=(255, 255, 255)
        )
    return np.asarray(image)


def colourise_normals(normal: np.ndarray, invalid_rgb: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """(H, W, 3) unit normals (camera frame: x right, y down, z forward) -> (H, W, 3) uint8 RGB.

    The usual normal-map look: the normal is expressed with x right, y up, z towards the viewer and encoded
    as ``(n + 1) / 2 * 255``, so a surface facing the camera is light blue (128, 128, 255), a floor greenish
    and a wall facing right reddish. Pixels whose normal is not finite or has (near) zero length get
    ``invalid_rgb``.
    """
    normal = np.asarray(normal, dtype=np.float32)
    if normal.ndim != 3 or normal.shape[2] != 3:
        raise ValueError(f"normals must be (H, W, 3), got shape {normal.shape}")
    length = np.linalg.norm(np.nan_to_num(normal, nan=0.0, posinf=0.0, neginf=0.0), axis=2)
    valid = np.isfinite(normal).all(axis=2) & (length > 1e-6)
    unit = np.where(valid[..., None], normal / np.where(valid, length, 1.0)[..., None], 0.0)
    unit = unit * np.array(
        [1.0, -1.0, -1.0], np.float32
    )  # camera frame -> x right, y up, z towards the viewer
    out = np.round((unit + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    out[~valid] = invalid_rgb
    return out


def depth_to_png_mm(depth_m: np.ndarray, *, beyond: Literal["clip", "invalid"] = "clip") -> np.ndarray:
    """(H, W) metres -> (H, W) uint16 millimetres, rounded; 0 where invalid (0, negative, NaN, inf).

    Valid depth below 1 mm is stored as 1 (it stays valid). Depth beyond :data:`PNG_MAX_DEPTH_M` is clipped
    to 65535 (``beyond="clip"``, the prediction outputs: the JSON sidecar counts such pixels) or stored as 0
    (``beyond="invalid"``, the sensor convention of the synthetic samples: no return). Converted in blocks of
    rows, so a 12 MP map needs no full-size float64 temporaries.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth_m.shape}")
    mm = np.zeros(depth_m.shape, np.uint16)
    rows = max(1, PNG_BLOCK_PIXELS // max(1, depth_m.shape[1]))
    for top in range(0, depth_m.shape[0], rows):
        block = depth_m[top : top + rows].astype(np.float64)
        valid = valid_depth_mask(block, max_depth_m=math.inf)
        block_mm = np.round(block[valid] * 1000.0)
        if beyond == "invalid":
            in_range = block_mm <= 65535
            valid[valid] = in_range
            block_mm = block_mm[in_range]
        mm[top : top + rows][valid] = np.clip(block_mm, 1, 65535).astype(np.uint16)
    return mm


def write_npy(target: Path, array: np.ndarray) -> Path:
    """Save one array as ``.npy`` atomically."""
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return target


def write_map(target: Path, array: np.ndarray, name: str, fmt: MapFormat = "npy") -> Path:
    """Save one map as ``.npy``, or ``.npz`` (compressed, the array named ``name``), atomically."""
    if fmt == "npy":
        return write_npy(target, array)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        arrays: dict[str, Any] = {name: array}
        np.savez_compressed(fh, **arrays)
    return target


def write_float_tiff(target: Path, depth_m: np.ndarray) -> Path:
    """Save (H, W) metres as a 32-bit float TIFF (Pillow mode F) atomically; no clipping."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(depth_m, dtype=np.float32), mode="F")
    with atomic_path(target) as tmp:
        image.save(tmp, format="TIFF")
    return target


def write_png(target: Path, array: np.ndarray) -> Path:
    """Save a (H, W) uint8/uint16 or (H, W, 3) uint8 RGB array as PNG atomically.

    Encoded by OpenCV: a 12 MP 16-bit depth PNG takes 0.16 s, against 3.5 s with Pillow's default zlib level
    for a file 1 % smaller; on a GPU that encoding was what limited `metro depth --outputs png16` to 0.3
    photos/s (benchmarks/README.md).
    """
    import cv2

    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16 and array.ndim != 2:
        raise ValueError("16-bit PNGs must be single-channel")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNGs need uint8 or uint16 data, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] != 3:
        raise ValueError(f"colour PNGs need (H, W, 3) RGB data, got shape {array.shape}")
    ok, encoded = cv2.imencode(".png", array[..., ::-1] if array.ndim == 3 else array)  # OpenCV wants BGR
    if not ok:
        raise OSError(f"OpenCV could not encode {target.name} as PNG")
    with atomic_path(target) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return target


def preview_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) of a preview panel of an ``height`` x ``width`` map: the map's size, or scaled down so that
    its longer side is ``max_side``."""
    if max(height, width) <= max_side:
        return height, width
    s = max_side / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def _sample(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of the first two axes of ``array`` to ``size`` (h, w): pixel centres, so
    invalid pixels stay invalid and nothing is interpolated across depth edges."""
    height, width = array.shape[:2]
    if (height, width) == size:
        return array
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.intp)
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.intp)
    return array[rows[:, None], cols[None, :]]


def preview_image(
    depth_m: np.ndarray,
    normal: np.ndarray | None,
    max_side: int = PREVIEW_MAX_SIDE_PX,
    *,
    depth_range_m: tuple[float, float] | None = None,
    with_colour_bar: bool = False,
):
    """(h, w·k, 3) uint8: colourised depth, and beside it the colourised normals when given; with
    ``with_colour_bar`` a :data:`COLOUR_BAR_HEIGHT_PX` strip below with the depth scale in metres.

    ``depth_range_m``: fixed (near, far) metres of the colours (default: the map's own range, see
    :func:`colourise_depth`). Maps larger than ``max_side`` are sampled down (nearest) before they are
    colourised, so the preview of a 12 MP prediction costs a few MB, not GB.
    """
    depth_m = np.asarray(depth_m)
    height, width = depth_m.shape[:2]
    size = preview_size(height, width, max_side)
    small = _sample(depth_m, size)
    span = depth_range_m if depth_range_m is not None else auto_depth_range(small)
    panels = [colourise_depth(small, depth_range_m=span)]
    if normal is not None:
        panels.append(colourise_normals(_sample(np.asarray(normal), size)))
    image = np.concatenate(panels, axis=1)
    if not with_colour_bar:
        return image
    strip = np.zeros((COLOUR_BAR_HEIGHT_PX, image.shape[1], 3), np.uint8)
    if span is not None:
        strip[:, : size[1]] = colour_bar(size[1], *span)
    return np.concatenate([image, strip], axis=0)


#: Characters no file system we write to accepts in a name (Windows' set, which includes POSIX's ``/`` and
#: NUL), and control characters. Everything else (Unicode letters, spaces, ``$``, ``;``, ...) is kept.
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
#: Longest stem in UTF-8 bytes (room left for ``.confidence.npy`` and a disambiguating suffix in 255 bytes).
STEM_MAX_BYTES = 200


def safe_stem(name: str | Path) -> str:
    """A file-name stem derived from ``name`` that can never leave the output folder.

    Only the last path component is used, without its extension, in Unicode NFC (the same name typed on
    macOS or Linux gives the same stem); characters invalid in file names (``<>:"/\\|?*`` and control
    characters) become ``_``, everything else (Unicode, spaces) is kept; leading dots are replaced (no hidden
    files, no ``..``); at most :data:`STEM_MAX_BYTES` UTF-8 bytes. Never empty.
    """
    import unicodedata

    base = re.split(r"[\\/]", unicodedata.normalize("NFC", str(name)))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = _UNSAFE.sub("_", stem)
    stem = re.sub(r"^\.+", lambda m: "_" * len(m.group(0)), stem)
    while len(os.fsencode(stem)) > STEM_MAX_BYTES:  # fsencode: a non-UTF-8 name keeps its bytes
        stem = stem[:-1]
    return stem or "photo"


#: The key of :func:`output_paths` that each output kind writes (the JSON sidecar, ``json``, always).
PATH_OF_KIND: dict[str, str] = {"png16": "depth_png", "tiff": "depth_tiff"}


def output_paths(out_dir: Path, stem: str, fmt: MapFormat = "npy") -> dict[str, Path]:
    """The output files of one photo, keyed ``depth``, ``normal``, ``confidence`` (``.npy`` or ``.npz`` by
    ``fmt``), ``depth_png``, ``depth_tiff``, ``preview``, ``json``. Raises :class:`MetroUsageError` if
    ``stem`` would leave ``out_dir``."""
    out_dir = Path(out_dir)
    if stem != safe_stem(stem + ".x") or stem in {"", ".", ".."}:
        raise MetroUsageError(f"unsafe output name {stem!r}")
    paths = {
        "depth": out_dir / f"{stem}.depth.{fmt}",
        "normal": out_dir / f"{stem}.normal.{fmt}",
        "confidence": out_dir / f"{stem}.confidence.{fmt}",
        "depth_png": out_dir / f"{stem}.depth.png",
        "depth_tiff": out_dir / f"{stem}.depth.tiff",
        "preview": out_dir / f"{stem}.preview.png",
        "json": out_dir / f"{stem}.json",
    }
    root = out_dir.resolve()
    for path in paths.values():
        if path.resolve().parent != root:
            raise MetroUsageError(f"output {path} would leave {out_dir}")
    return paths


def depth_stats(depth_m: np.ndarray) -> dict[str, float | int | None]:
    """Valid-pixel count and min/median/max depth (m) of a depth map."""
    valid = valid_depth_mask(depth_m, max_depth_m=math.inf)
    d = np.asarray(depth_m)[valid]
    if d.size == 0:
        return {"valid_pixels": 0, "min_m": None, "median_m": None, "max_m": None}
    return {
        "valid_pixels": int(d.size),
        "min_m": float(d.min()),
        "max_m": float(d.max()),
        "median_m": float(np.median(d, overwrite_input=True)),  # d is our copy: partition it in place
    }


def towards_camera(normal: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """(H, W, 3) float32 normals each turned to face the camera (``n · ray <= 0`` along the pixel's ray), the
    sign convention of every normal metrocli writes."""
    from metrocli.geometry.backproject import pixel_rays
    from metrocli.geometry.normals import orient_towards_camera

    return orient_towards_camera(normal, pixel_rays(intrinsics))


def write_depth_outputs(
    out_dir: str | Path,
    stem: str,
    prediction: Prediction,
    *,
    extra: Mapping[str, Any] | None = None,
    depth_range_m: tuple[float, float] | None = None,
    options: OutputOptions = OutputOptions(),
) -> dict[str, Path]:
    """Write the output files of one prediction that ``options`` asks for (see the module docstring);
    returns kind -> path (the keys of :func:`output_paths`).

    ``depth_range_m``: fixed (near, far) metres of the preview's depth colours (default: the photo's own).

    ``extra`` is merged into the JSON sidecar (e.g. the source photo, weights, warnings); the sidecar lists
    the files written and the options. The JSON is written last, so its presence marks a complete set (used
    to resume batches).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = output_paths(out_dir, stem, options.format)
    depth = np.asarray(prediction.depth, dtype=np.float32)
    want = set(options.outputs)
    normal = None if prediction.normal is None else towards_camera(prediction.normal, prediction.intrinsics)
    maps: dict[str, np.ndarray | None] = {
        "depth": depth,
        "normal": normal,
        "confidence": prediction.confidence,
    }
    written: dict[str, Path] = {}
    for kind, array in maps.items():
        if kind in want and array is not None:
            data = np.asarray(array, dtype=options.dtype)
            written[kind] = write_map(paths[kind], data, kind, options.format)
    if "png16" in want:
        written["depth_png"] = write_png(paths["depth_png"], depth_to_png_mm(depth))
    if "tiff" in want:
        written["depth_tiff"] = write_float_tiff(paths["depth_tiff"], depth)
    if "preview" in want:
        preview = preview_image(depth, normal, depth_range_m=depth_range_m, with_colour_bar=True)
        written["preview"] = write_png(paths["preview"], preview)
    meta: dict[str, Any] = {
        "model": prediction.model,
        "width": int(depth.shape[1]),
        "height": int(depth.shape[0]),
        "intrinsics": prediction.intrinsics.to_dict(),
        "depth": depth_stats(depth),
        "depth_png_clipped_pixels": int(np.count_nonzero(np.isfinite(depth) & (depth > PNG_MAX_DEPTH_M))),
        "normals": prediction.normal is not None,
        "timings_s": dict(prediction.timings_s),
        "files": {k: p.name for k, p in written.items()},
        "outputs": options.key(),
    }
    if extra:
        meta.update(extra)
    written["json"] = paths["json"]
    meta["files"]["json"] = paths["json"].name
    write_text_atomic(paths["json"], json.dumps(json_ready(meta), indent=2, allow_nan=False) + "\n")
    return written
