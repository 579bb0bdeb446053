"""Dense verification of a relative pose between two RGB-D frames: does ``j``'s surface land on ``i``'s?

A pose hypothesis ``p_i = T_ij @ (r * p_j)`` (``r``: depth scale of ``j`` relative to ``i``) is checked by
projecting a grid of ``j``'s pixels, lifted with their depth, into ``i``'s image and comparing with ``i``'s
own depth there (and the reverse, ``i`` into ``j``):

* **on**: the point lies on ``i``'s surface (depth difference below ``tol_m + tol_rel * depth``);
* **in front**: it lies in front of ``i``'s surface, where ``i`` sees free space: a contradiction;
* **behind**: hidden from ``i`` (occluded): no evidence either way.

``consistency = on / (on + in front)`` (the share of the shared view that agrees), ``overlap = on / all``
(the share of ``j``'s pixels seen by both; of the two directions their geometric mean, so that a tele
close-up lying wholly inside a wide view, a few per cent of the wide view's pixels, still overlaps it) and
``photometric``: the median absolute grey-level difference of the agreeing points after removing their
median difference (an exposure change is not an error), on slightly blurred images (:data:`BLUR_PX`, more
for a long lens: the same angle on the scene). Feature counts can not tell a right pose from a wrong one on
periodic or plain surfaces; this can, except where the
geometry itself is ambiguous (see :mod:`metrocli.geometry.posegraph`).

numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.backproject import backproject_pixels
from metrocli.geometry.sampling import valid_depth_mask

#: Sample grid of the verification: about this many pixels per frame.
VERIFY_SAMPLES = 6000
#: Gaussian blur (pixels, per 480 pixels of the longer side) of the grey images compared.
BLUR_PX = 1.5
#: Focal length (in units of the image's longer side) up to which :data:`BLUR_PX` applies unscaled: about a
#: 28 mm-equivalent lens on a 4:3 image (phones' main lenses keep their blur). A longer lens gets
#: proportionally more blur (the same angle on the scene), so that a 77 mm close-up and a wider view of the
#: same surface compare at a common scale, and a pose error of a small fraction of a degree, many of a tele
#: lens's pixels, does not read as a grey-level mismatch.
BLUR_FOCAL = 0.8


@dataclass(frozen=True)
class DenseView:
    """What verification needs of one frame: its depth and grey image (full resolution, for look-ups), and
    a grid of its pixels with valid depth lifted to 3D (``points_m`` (M, 3), camera frame, raw depth) with
    their grey values (M,)."""

    depth_m: np.ndarray
    grey: np.ndarray
    intrinsics: Intrinsics
    points_m: np.ndarray
    point_grey: np.ndarray


def dense_view(rgb: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics) -> DenseView:
    """The :class:`DenseView` of an upright RGB-D frame."""
    import math

    depth = np.nan_to_num(np.asarray(depth_m, dtype=np.float32), nan=0.0, posinf=0.0)
    depth = np.where(valid_depth_mask(depth, max_depth_m=math.inf), depth, 0.0).astype(np.float32)
    import cv2

    grey = np.asarray(rgb, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    # compare appearance at a scale every lens resolves: fine texture seen by a 13 mm and a 26 mm lens, or
    # half a pixel off, differs pixel by pixel although the pose is right
    side = max(grey.shape)
    sigma = BLUR_PX * max(1.0, side / 480.0) * max(1.0, intrinsics.fx / (BLUR_FOCAL * side))
    grey = np.asarray(cv2.GaussianBlur(grey, (0, 0), sigma), dtype=np.float32)
    h, w = depth.shape
    stride = max(1, round(math.sqrt(h * w / VERIFY_SAMPLES)))
    v, u = np.mgrid[stride // 2 : h : stride, stride // 2 : w : stride]
    z = depth[v, u]
    ok = z > 0
    pts = backproject_pixels(u[ok], v[ok], z[ok], intrinsics)
    return DenseView(depth, grey, intrinsics, pts, grey[v, u][ok])


@dataclass(frozen=True)
class Verification:
    """Agreement of a pose hypothesis (both directions combined: the worse of the two).

    Attributes:
        consistency: share of the commonly seen points that lie on the other frame's surface (0-1).
        overlap: share of the frame's sampled points that lie on the other frame's surface (0-1), the
            geometric mean of the two directions (a narrow view inside a wide one overlaps it).
        photometric: median absolute grey-level difference (0-255) of the agreeing points, exposure removed.
        depth_ratio: median of (other frame's depth / transformed depth) on the agreeing points (1 when the
            depth scales agree).
        n_common: number of commonly seen sample points (the smaller direction).
    """

    consistency: float
    overlap: float
    photometric: float
    depth_ratio: float
    n_common: int

    def passes(self, *, min_consistency: float, min_overlap: float, max_photometric: float) -> bool:
        return (
            self.consistency >= min_consistency
            and self.overlap >= min_overlap
            and self.photometric <= max_photometric
            and self.n_common >= 30
        )


def _one_way(
    target: DenseView, source: DenseView, transform: np.ndarray, scale: float, tol_m: float, tol_rel: float
) -> tuple[float, float, float, float, int]:
    """Source points (times ``scale``) mapped by ``transform`` into target, compared with target's depth."""
    pts = scale * source.points_m @ transform[:3, :3].T + transform[:3, 3]
    z = pts[:, 2]
    k = target.intrinsics
    h, w = target.depth_m.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(k.fx * pts[:, 0] / z + k.cx)
        v = np.rint(k.fy * pts[:, 1] / z + k.cy)
    inside = (z > 1e-6) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    ui, vi = u[inside].astype(np.int64), v[inside].astype(np.int64)
    d = target.depth_m[vi, ui].astype(np.float64)
    zz = z[inside]
    seen = d > 0
    tol = tol_m + tol_rel * d
    on = seen & (np.abs(zz - d) <= tol)
    front = seen & (zz < d - tol)
    n_on, n_front = int(on.sum()), int(front.sum())
    n_all = max(len(source.points_m), 1)
    consistency = n_on / max(n_on + n_front, 1)
    overlap = n_on / n_all
    if n_on:
        diff = target.grey[vi[on], ui[on]] - source.point_grey[inside][on]
        photometric = float(np.median(np.abs(diff - np.median(diff))))
    else:
        photometric = 255.0
    # the depth ratio from a wider band, so that a scale error of up to 15 % shows in full
    near = seen & (np.abs(zz - d) <= 0.15 * d)
    ratio = float(np.median(d[near] / zz[near])) if near.any() else 1.0
    return consistency, overlap, photometric, ratio, n_on + n_front


def verify_pose(
    view_i: DenseView,
    view_j: DenseView,
    transform: np.ndarray,
    scale: float = 1.0,
    *,
    tol_m: float = 0.01,
    tol_rel: float = 0.015,
) -> Verification:
    """Dense check of ``p_i = transform @ (scale * p_j)`` in both directions (see the module docstring).

    ``tol_m + tol_rel * depth`` is the distance within which a point counts as on the other surface: a few
    millimetres for sensor depth, a few per cent for a model's depth (its errors grow with the distance).
    """
    t = np.asarray(transform, dtype=np.float64)
    ci, oi, pi, ri, ni = _one_way(view_i, view_j, t, scale, tol_m, tol_rel)
    inv = np.eye(4)  # p_j = R^T (p_i - t) / scale, as one affine map (its linear part carries 1/scale)
    inv[:3, :3] = t[:3, :3].T / scale
    inv[:3, 3] = -t[:3, :3].T @ t[:3, 3] / scale
    cj, oj, pj, _, nj = _one_way(view_j, view_i, inv, 1.0, tol_m, tol_rel)
    return Verification(min(ci, cj), float(np.sqrt(oi * oj)), max(pi, pj), ri, min(ni, nj))


def rescaled(transform: np.ndarray, scale: float, ratio: float) -> tuple[np.ndarray, float]:
    """``(transform, scale)`` corrected by a measured depth ``ratio`` (``i``'s depth / predicted): the
    hypothesis ``p_i = ratio * (T (scale p_j))`` written again as a rigid ``T'`` and a scale ``scale'``."""
    out = np.asarray(transform, dtype=np.float64).copy()
    out[:3, 3] *= ratio
    return out, scale * ratio
