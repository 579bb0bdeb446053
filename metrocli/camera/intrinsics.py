"""Pinhole intrinsics in pixels of the displayed (upright) image.

Camera frame (OpenCV): x right, y down, z forward. Pixel ``(u, v)`` is column u, row v.
Without calibration the principal point is the image centre ``(W / 2, H / 2)``, as in Metric3D's
official inference (:func:`centred`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

FocalSource = Literal[
    "user", "exif-focal-plane", "exif-35mm", "sensor-table", "default", "self-calibrated", "combined"
]

#: Diagonal of a 36 x 24 mm film frame, the reference of "35 mm equivalent" focal lengths (mm).
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a ``width`` x ``height`` image, all in pixels.

    Camera frame: x right, y down, z forward. ``focal_source`` says where ``fx``/``fy`` came from.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    focal_source: FocalSource = "default"

    @property
    def K(self) -> np.ndarray:
        """3x3 float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def fov_x_deg(self) -> float:
        """Horizontal field of view in degrees."""
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    @property
    def fov_y_deg(self) -> float:
        """Vertical field of view in degrees."""
        return math.degrees(2.0 * math.atan(self.height / (2.0 * self.fy)))

    @property
    def focal_35mm(self) -> float:
        """35 mm equivalent focal length (mm), by the diagonal convention."""
        return self.fx * FULL_FRAME_DIAGONAL_MM / math.hypot(self.width, self.height)

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in pixels."""
        return (self.fx, self.fy, self.cx, self.cy)

    def with_focal(self, focal_px: float, source: FocalSource) -> Intrinsics:
        """Same principal point and size, square pixels of focal ``focal_px``."""
        return replace(self, fx=float(focal_px), fy=float(focal_px), focal_source=source)

    def to_dict(self) -> dict:
        """JSON-ready dict (pixels)."""
        return {
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "width": self.width,
            "height": self.height,
            "focal_source": self.focal_source,
        }


def centred(width: int, height: int, focal_px: float, source: FocalSource) -> Intrinsics:
    """Intrinsics with square pixels and the principal point at the image centre ``(W/2, H/2)``."""
    if not (math.isfinite(focal_px) and focal_px > 0):
        raise ValueError(f"focal length must be a positive finite number of pixels, got {focal_px!r}")
    return Intrinsics(
        float(focal_px), float(focal_px), width / 2.0, height / 2.0, int(width), int(height), source
    )


def focal_from_fov(width: int, fov_deg: float) -> float:
    """Focal length (px) of an image ``width`` px wide with horizontal field of view ``fov_deg``."""
    return width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
