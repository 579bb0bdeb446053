"""Evaluation datasets in Metric3D's ``test_annotations.json`` format (numpy + Pillow only).

A dataset is a folder holding ``test_annotations.json``::

    {"files": [{"rgb": "nyu_demo/rgb/rgb_00000.jpg", "depth": "nyu_demo/depth/sync_depth_00000.png",
                "depth_scale": 1000.0, "cam_in": [fx, fy, cx, cy]}, ...]}

``rgb``/``depth`` (and an optional ``normal``) are relative to the folder itself or to its parent (Metric3D's
data root; the demo sets use the latter). ``depth`` is a 16-bit PNG (value / ``depth_scale`` = metres,
0 = no measurement) or a ``.npy`` of metres. ``normal`` (optional) is a ``.npy`` (H, W, 3) camera-frame
normal map, or a PNG in Metric3D's NYU convention: ``n = -((B, G, R) / 255 * 2 - 1)`` with the channels
taken in B, G, R order (all-zero pixels = no measurement).
Images are used exactly as stored (EXIF orientation is ignored: the ground truth is stored the same way).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metrocli.errors import DatasetError
from metrocli.geometry.sampling import valid_depth_mask

ANNOTATIONS = "test_annotations.json"


@dataclass(frozen=True)
class Sample:
    """One annotated frame: file paths, metres per stored depth unit and (fx, fy, cx, cy) in pixels."""

    rgb: Path
    depth: Path
    depth_scale: float
    cam_in: tuple[float, float, float, float]
    normal: Path | None = None

    @property
    def name(self) -> str:
        return self.rgb.name


@dataclass(frozen=True)
class Dataset:
    """An evaluation dataset folder and its samples."""

    root: Path
    name: str
    samples: tuple[Sample, ...]


def _locate(root: Path, rel: object, what: str, index: int) -> Path:
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{root / ANNOTATIONS}: entry {index} has no valid {what!r} path")
    rel_path = Path(rel)
    candidates = [rel_path] if rel_path.is_absolute() else [root / rel_path, root.parent / rel_path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{root / ANNOTATIONS}: entry {index}: {what} file {rel} not found under {root}")


def load_dataset(folder: str | Path) -> Dataset:
    """Read ``folder/test_annotations.json``; every referenced file must exist (DatasetError otherwise)."""
    root = Path(folder)
    ann = root / ANNOTATIONS
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not ann.is_file():
        raise DatasetError(f"{root} has no {ANNOTATIONS}")
    try:
        data = json.loads(ann.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{ann} is not valid JSON: {exc}") from exc
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{ann} has no non-empty 'files' list")
    samples = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetError(f"{ann}: entry {i} is not an object")
        cam = entry.get("cam_in")
        try:
            values = tuple(float(v) for v in cam) if isinstance(cam, (list, tuple)) else ()
        except (TypeError, ValueError):
            values = ()
        if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[1] <= 0:
            raise DatasetError(f"{ann}: entry {i} needs 'cam_in' = [fx, fy, cx, cy] with positive focals")
        cam_in = (values[0], values[1], values[2], values[3])
        try:
            scale = float(entry.get("depth_scale", 1.0))
        except (TypeError, ValueError):
            scale = math.nan
        if not (math.isfinite(scale) and scale > 0):
            raise DatasetError(f"{ann}: entry {i} has an invalid 'depth_scale' {entry.get('depth_scale')!r}")
        normal = entry.get("normal")
        samples.append(
            Sample(
                rgb=_locate(root, entry.get("rgb"), "rgb", i),
                depth=_locate(root, entry.get("depth"), "depth", i),
                depth_scale=scale,
                cam_in=cam_in,
                normal=_locate(root, normal, "normal", i) if normal is not None else None,
            )
        )
    return Dataset(root=root, name=root.resolve().name, samples=tuple(samples))


@contextlib.contextmanager
def open_frame_image(path: Path) -> Iterator:
    """Pillow image of a dataset file under metro's one pixel limit
    (:data:`~metrocli.camera.image.MAX_PIXELS`); DatasetError above it."""
    from PIL import Image

    from metrocli.camera.image import MAX_PIXELS, pixel_limit

    with pixel_limit():
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise DatasetError(
                f"{path}: image has far more pixels than the {MAX_PIXELS / 1e6:.0f} MP limit"
            ) from exc
        with im:
            if im.width * im.height > MAX_PIXELS:
                raise DatasetError(
                    f"{path}: image is {im.width} x {im.height}, "
                    f"more than the {MAX_PIXELS / 1e6:.0f} MP limit"
                )
            yield im


def load_rgb(sample: Sample) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sample, as stored."""
    from PIL import UnidentifiedImageError

    try:
        with open_frame_image(sample.rgb) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"cannot read image {sample.rgb}: {exc}") from exc


def load_depth_gt(sample: Sample) -> np.ndarray:
    """(H, W) float32 ground-truth depth in metres; 0 where there is no measurement."""
    path = sample.depth
    try:
        if path.suffix.lower() == ".npy":
            raw = np.load(path, allow_pickle=False)
            depth = np.asarray(raw, dtype=np.float64)
        else:
            with open_frame_image(path) as im:
                raw = np.asarray(im)
            if raw.ndim != 2:
                raise DatasetError(f"depth map {path} must be single-channel, got shape {raw.shape}")
            depth = raw.astype(np.float64) / sample.depth_scale
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read depth map {path}: {exc}") from exc
    if depth.ndim != 2:
        raise DatasetError(f"depth map {path} must be (H, W), got shape {depth.shape}")
    depth = np.where(valid_depth_mask(depth, max_depth_m=math.inf), depth, 0.0)
    return depth.astype(np.float32)


def load_normal_gt(sample: Sample) -> np.ndarray | None:
    """(H, W, 3) float32 ground-truth normals (camera frame), NaN where absent; None without a normal file."""
    path = sample.normal
    if path is None:
        return None
    try:
        if path.suffix.lower() == ".npy":
            normal = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
            invalid = ~np.isfinite(normal).all(axis=-1) | (np.abs(normal).sum(axis=-1) == 0)
        else:
            with open_frame_image(path) as im:
                raw = np.asarray(im)
            if raw.ndim != 3 or raw.shape[2] < 3:
                raise DatasetError(f"normal map {path} must be an RGB image, got shape {raw.shape}")
            raw = raw[..., :3]
            top = 65535.0 if raw.dtype == np.uint16 else 255.0
            invalid = (raw == 0).all(axis=-1)
            # Metric3D's NYU normal files: n = -((B, G, R) / 255 * 2 - 1), channels in B, G, R file order
            normal = -(raw[..., ::-1].astype(np.float64) / top * 2.0 - 1.0)
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read normal map {path}: {exc}") from exc
    if normal.ndim != 3 or normal.shape[2] != 3:
        raise DatasetError(f"normal map {path} must be (H, W, 3), got shape {normal.shape}")
    normal[invalid] = np.nan
    return normal.astype(np.float32)


#: Default evaluation caps (metres) of the usual protocol.
INDOOR_MAX_DEPTH_M = 10.0
OUTDOOR_MAX_DEPTH_M = 80.0
DEFAULT_MIN_DEPTH_M = 1e-3
_OUTDOOR_NAMES = ("kitti", "ddad", "driving", "argo", "waymo", "nuscenes", "cityscapes", "outdoor", "eth3d")
_INDOOR_NAMES = ("nyu", "scannet", "ibims", "diode_indoor", "hypersim", "indoor", "7scenes", "sunrgbd")


def default_crop(dataset_name: str) -> str:
    """The standard evaluation crop of a dataset: ``eigen`` for NYU, ``garg`` for KITTI, else ``none``."""
    lowered = dataset_name.lower()
    if "nyu" in lowered:
        return "eigen"
    if "kitti" in lowered:
        return "garg"
    return "none"


def default_max_depth(dataset_name: str, gt_depths: list[np.ndarray] | None = None) -> tuple[float, str]:
    """The default depth cap (m) for a dataset and why: by name (``kitti``… → 80 m outdoor, ``nyu``… → 10 m
    indoor), else by the ground truth (95th percentile of valid depth above 10 m → outdoor)."""
    lowered = dataset_name.lower()
    if any(k in lowered for k in _OUTDOOR_NAMES):
        return OUTDOOR_MAX_DEPTH_M, f"outdoor (dataset name {dataset_name!r})"
    if any(k in lowered for k in _INDOOR_NAMES):
        return INDOOR_MAX_DEPTH_M, f"indoor (dataset name {dataset_name!r})"
    if gt_depths:
        valid = np.concatenate([d[d > 0].ravel() for d in gt_depths])
        if valid.size and float(np.percentile(valid, 95)) > INDOOR_MAX_DEPTH_M:
            return OUTDOOR_MAX_DEPTH_M, "outdoor (ground-truth depth range)"
    return INDOOR_MAX_DEPTH_M, "indoor (ground-truth depth range)"
