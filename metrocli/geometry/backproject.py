"""Backprojection of depth maps and pixels to 3D points in the camera frame.

Camera frame (OpenCV): x right, y down, z forward. A pixel ``(u, v)`` with depth ``z`` (metres along the
optical axis, not along the ray) is the point ``X = (u - cx) z / fx``, ``Y = (v - cy) z / fy``, ``Z = z``.
``depth[v, u]`` belongs to the pixel centre with integer coordinates ``(u, v)`` (see
:mod:`metrocli.geometry.sampling`).
"""

from __future__ import annotations

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.sampling import DEFAULT_MAX_DEPTH_M, valid_depth_mask


def _check(depth_m: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ValueError(f"depth map must be 2-D (H, W), got shape {depth.shape}")
    h, w = depth.shape
    if (w, h) != (intrinsics.width, intrinsics.height):
        raise ValueError(
            f"depth map is {w}x{h} but the intrinsics are for {intrinsics.width}x{intrinsics.height}"
        )
    return depth


def pixel_rays(intrinsics: Intrinsics) -> np.ndarray:
    """(H, W, 3) float32 rays ``((u - cx)/fx, (v - cy)/fy, 1)`` of every pixel (times depth = points)."""
    u = (np.arange(intrinsics.width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    rays = np.empty((intrinsics.height, intrinsics.width, 3), dtype=np.float32)
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    rays[..., 2] = 1.0
    return rays


def backproject(
    depth_m: np.ndarray, intrinsics: Intrinsics, *, max_depth_m: float = DEFAULT_MAX_DEPTH_M
) -> np.ndarray:
    """3D point of every pixel.

    Args:
        depth_m: (H, W) depth in metres along z; 0, NaN, inf or ``>= max_depth_m`` (sky) mean "no depth".
        intrinsics: intrinsics of this H x W image.
    Returns:
        (H, W, 3) float32 points in metres, camera frame; NaN where the depth is invalid.
    """
    depth = _check(depth_m, intrinsics).astype(np.float32, copy=False)
    points = pixel_rays(intrinsics) * depth[..., None]
    points[~valid_depth_mask(depth, max_depth_m)] = np.nan
    return points


def backproject_pixels(
    u: np.ndarray | float, v: np.ndarray | float, depth_m: np.ndarray | float, intrinsics: Intrinsics
) -> np.ndarray:
    """3D points (float64 metres, ``(..., 3)``) of sub-pixel positions ``(u, v)`` at depths ``depth_m``."""
    u, v, z = np.broadcast_arrays(
        np.asarray(u, dtype=np.float64),
        np.asarray(v, dtype=np.float64),
        np.asarray(depth_m, dtype=np.float64),
    )
    x = (u - intrinsics.cx) * z / intrinsics.fx
    y = (v - intrinsics.cy) * z / intrinsics.fy
    return np.stack([x, y, z], axis=-1)


def project(points: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Pixel coordinates ``(..., 2)`` (u, v) of camera-frame points ``(..., 3)`` (inverse of backproject)."""
    points = np.asarray(points, dtype=np.float64)
    z = points[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics.fx * points[..., 0] / z + intrinsics.cx
        v = intrinsics.fy * points[..., 1] / z + intrinsics.cy
    return np.stack([u, v], axis=-1)
