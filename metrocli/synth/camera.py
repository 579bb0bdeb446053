"""Virtual phone cameras: poses (``look_at``), lens presets and their intrinsics.

Poses are 4x4 float64 **camera-to-world** matrices ``[R | t]``: the columns of ``R`` are the camera's
x (right), y (down) and z (forward) axes in world coordinates (OpenCV camera axes) and ``t`` is the camera
centre. The world is z-up (see :mod:`metrocli.synth.scene`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from metrocli.camera.intrinsics import FULL_FRAME_DIAGONAL_MM, Intrinsics

LensName = Literal["ultra-wide", "main", "tele"]


@dataclass(frozen=True)
class Lens:
    """A phone lens: 35 mm-equivalent focal length and the real focal length (mm) written to EXIF."""

    name: LensName
    focal_35mm: float
    focal_length_mm: float


@dataclass(frozen=True)
class Phone:
    """A phone model (EXIF Make/Model) and its lenses."""

    make: str
    model: str
    lenses: dict[str, Lens]


#: 35 mm-equivalent focal lengths of the three usual phone lenses.
LENS_F35_MM: dict[str, float] = {"ultra-wide": 13.0, "main": 26.0, "tele": 77.0}

#: An iPhone-like phone (Apple iPhone 13 Pro focal lengths: 1.57 / 5.7 / 9.0 mm real).
IPHONE = Phone(
    "Apple",
    "iPhone 13 Pro",
    {
        "ultra-wide": Lens("ultra-wide", 13.0, 1.57),
        "main": Lens("main", 26.0, 5.7),
        "tele": Lens("tele", 77.0, 9.0),
    },
)
#: A Pixel-like phone (Google Pixel 7 Pro-like focal lengths).
PIXEL = Phone(
    "Google",
    "Pixel 7 Pro",
    {
        "ultra-wide": Lens("ultra-wide", 13.0, 2.2),
        "main": Lens("main", 26.0, 6.81),
        "tele": Lens("tele", 77.0, 19.0),
    },
)


def focal_px_for_35mm(width: int, height: int, f35_mm: float) -> float:
    """Focal length in pixels of a ``width`` x ``height`` image from its 35 mm equivalent (diagonal rule).

    ``f_px = f35 · √(W² + H²) / √(36² + 24²)``.
    """
    return float(f35_mm) * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


def intrinsics_for_lens(width: int, height: int, f35_mm: float | str) -> Intrinsics:
    """Centred square-pixel intrinsics of a ``width`` x ``height`` (displayed) image.

    ``f35_mm`` is a 35 mm-equivalent focal length in mm or a lens name (``"ultra-wide"`` 13, ``"main"`` 26,
    ``"tele"`` 77). The principal point is ``(W/2, H/2)``; ``focal_source`` is ``"user"``.
    """
    f35 = LENS_F35_MM[f35_mm] if isinstance(f35_mm, str) else float(f35_mm)
    f = focal_px_for_35mm(width, height, f35)
    return Intrinsics(f, f, width / 2.0, height / 2.0, int(width), int(height), "user")


def look_at(
    eye: tuple[float, float, float] | np.ndarray,
    target: tuple[float, float, float] | np.ndarray,
    up: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 1.0),
    roll_deg: float = 0.0,
) -> np.ndarray:
    """(4, 4) float64 camera-to-world pose of a camera at ``eye`` looking at ``target`` (world metres).

    Camera axes are OpenCV's: z forward (towards ``target``), x right, y down; ``up`` (default world +z)
    appears upwards in the image. ``roll_deg`` rotates the camera about its viewing axis (positive =
    clockwise as seen by the camera, i.e. the image content turns anticlockwise).
    """
    eye = np.asarray(eye, np.float64)
    z = np.asarray(target, np.float64) - eye
    if np.linalg.norm(z) < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    if roll_deg:
        c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
        x, y = c * x + s * y, -s * x + c * y
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose
