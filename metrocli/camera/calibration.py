"""Full pinhole intrinsics given by the user: ``--intrinsics FX,FY,CX,CY`` or ``--camera FILE``.

``--camera`` reads
    a COLMAP ``cameras.txt`` (its first camera; models ``SIMPLE_PINHOLE``, ``PINHOLE`` and those whose
    parameters start with ``f, cx, cy`` or ``fx, fy, cx, cy`` followed by distortion, which is ignored with a
    warning: give undistorted photos), or
    an OpenCV calibration YAML (``cv2.FileStorage``): a 3x3 ``camera_matrix`` / ``cameraMatrix`` / ``K`` as an
    ``opencv-matrix`` or as ``{rows, cols, data}`` (ROS ``camera_info`` files), with ``image_width`` /
    ``image_height`` when present.

The values are pixels of the image the calibration was made for. When the file names that image's size and
the photo (displayed, upright) has another size of the same aspect ratio, the intrinsics are scaled to it; a
size of another aspect ratio (a crop, or a rotated photo) is an error: give ``--intrinsics`` for the photo
as displayed instead.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MetroUsageError

log = logging.getLogger("metrocli.camera.calibration")

#: COLMAP camera models -> number of leading focal parameters (1: ``f``, 2: ``fx, fy``), then ``cx, cy``.
COLMAP_MODELS = {
    "SIMPLE_PINHOLE": 1,
    "PINHOLE": 2,
    "SIMPLE_RADIAL": 1,
    "RADIAL": 1,
    "OPENCV": 2,
    "FULL_OPENCV": 2,
    "OPENCV_FISHEYE": 2,
    "SIMPLE_RADIAL_FISHEYE": 1,
    "RADIAL_FISHEYE": 1,
    "THIN_PRISM_FISHEYE": 2,
}
_PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


@dataclass(frozen=True)
class Calibration:
    """``fx, fy, cx, cy`` in pixels of a ``width`` x ``height`` image (size None: not stated)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None
    source: str = "--intrinsics"

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise MetroUsageError(
                f"{self.source}: intrinsics must be finite with positive focal lengths, got fx={self.fx}, "
                f"fy={self.fy}, cx={self.cx}, cy={self.cy}"
            )

    def for_image(self, width: int, height: int) -> Intrinsics:
        """The intrinsics of a ``width`` x ``height`` photo (scaled when the calibration's image has the same
        aspect ratio at another size; MetroUsageError for another aspect ratio)."""
        s = 1.0
        if (
            self.width is not None
            and self.height is not None
            and (self.width, self.height) != (width, height)
        ):
            sx, sy = width / self.width, height / self.height
            if abs(sx - sy) > 1e-3 * max(sx, sy):
                raise MetroUsageError(
                    f"{self.source} is for a {self.width}x{self.height} image but the photo is "
                    f"{width}x{height} (a crop or a rotated photo): give --intrinsics in pixels of the photo "
                    "as displayed"
                )
            s = sx
        return Intrinsics(
            self.fx * s, self.fy * s, self.cx * s, self.cy * s, width, height, focal_source="user"
        )


def parse_intrinsics(text: str) -> Calibration:
    """``"FX,FY,CX,CY"`` (pixels of the displayed photo) -> :class:`Calibration`; else MetroUsageError."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        fx, fy, cx, cy = (float(p) for p in parts)
    except ValueError:
        raise MetroUsageError(f"--intrinsics must be FX,FY,CX,CY in pixels, got {text!r}") from None
    return Calibration(fx, fy, cx, cy)


def read_camera_file(path: str | os.PathLike[str]) -> Calibration:
    """The :class:`Calibration` of a COLMAP ``cameras.txt`` or an OpenCV YAML (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise MetroUsageError(f"--camera {path}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix.lower() in (".yaml", ".yml", ".xml", ".json") or text.lstrip().startswith("%YAML"):
        return _read_opencv(path)
    return _read_colmap(path, text)


def _read_colmap(path: Path, text: str) -> Calibration:
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise MetroUsageError(
            f"--camera {path}: no camera in it (COLMAP cameras.txt or OpenCV YAML expected)"
        )
    if len(lines) > 1:
        log.warning("%s holds %d cameras; using the first (id %s)", path, len(lines), lines[0][0])
    fields = lines[0]
    model = fields[1].upper() if len(fields) > 1 else ""
    if model not in COLMAP_MODELS:
        raise MetroUsageError(f"--camera {path}: unsupported COLMAP camera model {model or '(none)'!r}")
    try:
        width, height = int(fields[2]), int(fields[3])
        params = [float(v) for v in fields[4:]]
        n_f = COLMAP_MODELS[model]
        fx, fy = (params[0], params[0]) if n_f == 1 else (params[0], params[1])
        cx, cy = params[n_f], params[n_f + 1]
    except (IndexError, ValueError):
        raise MetroUsageError(f"--camera {path}: malformed COLMAP camera line {' '.join(fields)!r}") from None
    if model not in _PINHOLE_MODELS:
        log.warning("%s: %s distortion is ignored; give undistorted photos", path, model)
    return Calibration(fx, fy, cx, cy, width, height, source=f"--camera {path}")


def _read_opencv(path: Path) -> Calibration:
    import cv2

    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_FORMAT_AUTO)
    except cv2.error:  # not parseable (e.g. YAML without OpenCV's header that it cannot read)
        fs = None
    if fs is None or not fs.isOpened():
        raise MetroUsageError(f"--camera {path}: not a COLMAP cameras.txt or an OpenCV calibration file")
    try:
        k = None
        for name in ("camera_matrix", "cameraMatrix", "K"):
            node = fs.getNode(name)
            if node.empty():
                continue
            data = node.getNode("data")
            if (node.isMap() and not node.getNode("dt").empty()) or not node.isMap():
                mat = node.mat()
                if mat is not None and mat.size == 9:
                    k = mat.reshape(3, 3).astype(float).tolist()
            elif data.isSeq() and data.size() == 9:
                k = [[data.at(3 * r + c).real() for c in range(3)] for r in range(3)]
            break
        if k is None:
            raise MetroUsageError(f"--camera {path}: no camera_matrix (or cameraMatrix, K) in it")
        sizes = [fs.getNode(n) for n in ("image_width", "image_height")]
        width, height = (int(s.real()) if not s.empty() else None for s in sizes)
    except cv2.error:
        raise MetroUsageError(f"--camera {path}: unreadable camera matrix") from None
    finally:
        fs.release()
    return Calibration(k[0][0], k[1][1], k[0][2], k[1][2], width, height, source=f"--camera {path}")
