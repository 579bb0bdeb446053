"""Surface normals from depth (depth–normal duality), depth edges, and normal orientation.

The normal of a surface seen in a depth map is the cross product of the image-space derivatives of its
backprojected points: ``n ∝ ∂P/∂v × ∂P/∂u`` (camera frame x right, y down, z forward; this order points
towards the camera). Derivatives are central differences, or one-sided where one neighbour lies across a
depth discontinuity (relative jump above ``max_rel_jump``, see :mod:`metrocli.geometry.sampling`) or has no
depth, or where the two one-sided differences disagree (a crease, or a step smaller than the threshold:
the side with the smaller depth change is taken); a pixel with no usable neighbour along u or along v has
no normal (NaN).
"""

from __future__ import annotations

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.backproject import backproject
from metrocli.geometry.sampling import DEFAULT_MAX_DEPTH_M, DEFAULT_MAX_REL_JUMP, valid_depth_mask


def _pad(a: np.ndarray) -> np.ndarray:
    pad = ((1, 1), (1, 1)) + ((0, 0),) * (a.ndim - 2)
    return np.pad(a, pad, mode="constant", constant_values=np.nan)


def _derivative(
    points: np.ndarray, z: np.ndarray, fwd_pts: np.ndarray, bwd_pts: np.ndarray, fwd_z, bwd_z, max_rel_jump
) -> np.ndarray:
    """Central difference where both neighbours are on the same surface, else the usable one-sided one."""
    with np.errstate(invalid="ignore"):
        ok_f = np.abs(fwd_z - z) <= max_rel_jump * np.minimum(fwd_z, z)
        ok_b = np.abs(bwd_z - z) <= max_rel_jump * np.minimum(bwd_z, z)
    d_f = fwd_pts - points
    d_b = points - bwd_pts
    # Both usable: central difference, unless the two sides disagree (a crease or a small step below the
    # jump threshold), where the side with the smaller depth change is the one on this pixel's surface.
    dz_f = np.abs(d_f[..., 2])
    dz_b = np.abs(d_b[..., 2])
    with np.errstate(invalid="ignore"):
        disagree = np.abs(dz_f - dz_b) > 0.5 * (dz_f + dz_b) + 1e-4 * z
        both = ok_f & ok_b
        use_f = both & disagree & (dz_f < dz_b)
        use_b = both & disagree & ~(dz_f < dz_b)
        ok_f = ok_f & ~use_b
        ok_b = ok_b & ~use_f
    d = np.where((ok_f & ok_b)[..., None], 0.5 * (d_f + d_b), np.nan)
    d = np.where((ok_f & ~ok_b)[..., None], d_f, d)
    d = np.where((~ok_f & ok_b)[..., None], d_b, d)
    return d


def normals_from_depth(
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    *,
    max_rel_jump: float = DEFAULT_MAX_REL_JUMP,
    max_depth_m: float = DEFAULT_MAX_DEPTH_M,
) -> np.ndarray:
    """Unit normals of the surface seen in a depth map, from the gradient of its backprojected points.

    Args:
        depth_m: (H, W) depth in metres (0 / NaN / inf / sky = no depth).
        intrinsics: intrinsics of this H x W image.
        max_rel_jump: relative depth jump treated as a discontinuity (no derivative across it).
    Returns:
        (H, W, 3) float32 unit normals in the camera frame, pointing towards the camera (``n · P < 0``);
        NaN where undefined (no depth, or no same-surface neighbour along u or v).
    """
    points = backproject(depth_m, intrinsics, max_depth_m=max_depth_m).astype(np.float32)
    z = points[..., 2]
    pp = _pad(points)
    zp = _pad(z)
    du = _derivative(points, z, pp[1:-1, 2:], pp[1:-1, :-2], zp[1:-1, 2:], zp[1:-1, :-2], max_rel_jump)
    dv = _derivative(points, z, pp[2:, 1:-1], pp[:-2, 1:-1], zp[2:, 1:-1], zp[:-2, 1:-1], max_rel_jump)
    n = np.cross(dv, du)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / norm
        bad = ~(norm[..., 0] > 0) | ~np.isfinite(norm[..., 0])
    n[bad] = np.nan
    return orient_towards_camera(n, points)


def orient_towards_camera(normal: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Flip normals (..., 3) so that they face the camera at the origin: ``n · P <= 0``. float32, NaN kept."""
    normal = np.asarray(normal, dtype=np.float32)
    points = np.asarray(points, dtype=np.float32)
    dot = np.einsum("...i,...i->...", normal, points)
    with np.errstate(invalid="ignore"):
        flip = dot > 0
    return np.where(flip[..., None], -normal, normal).astype(np.float32)


def depth_edges(
    depth_m: np.ndarray,
    *,
    max_rel_jump: float = DEFAULT_MAX_REL_JUMP,
    far_side_only: bool = True,
    max_depth_m: float = DEFAULT_MAX_DEPTH_M,
) -> np.ndarray:
    """(H, W) bool: pixels on a depth discontinuity.

    A pixel is on an edge when one of its 8 neighbours has valid depth and differs from it by more than
    ``max_rel_jump`` of the smaller depth. With ``far_side_only`` (default) only the farther pixel of each
    such pair is marked, so foreground silhouettes stay intact while "flying" in-between depths (which are
    farther than the foreground) and the background rim are marked.
    """
    z = np.where(valid_depth_mask(depth_m, max_depth_m), np.asarray(depth_m, dtype=np.float32), np.nan)
    zp = _pad(z)
    h, w = z.shape
    edge = np.zeros((h, w), dtype=bool)
    with np.errstate(invalid="ignore"):
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                if dv == 0 and du == 0:
                    continue
                nb = zp[1 + dv : 1 + dv + h, 1 + du : 1 + du + w]
                jump = np.abs(z - nb) > max_rel_jump * np.minimum(z, nb)
                if far_side_only:
                    jump &= z > nb
                edge |= jump
    return edge


def grazing_mask(normal: np.ndarray, intrinsics: Intrinsics, *, max_angle_deg: float = 88.0) -> np.ndarray:
    """(H, W) bool: normals more than ``max_angle_deg`` from the reversed view ray (nearly edge-on).

    Such points are typical "flying pixels" smeared along an occlusion boundary. Unknown normals (NaN or
    zero, see :func:`known_normals`) are not marked.
    """
    from metrocli.geometry.backproject import pixel_rays

    normal = np.asarray(normal, dtype=np.float32)
    rays = pixel_rays(intrinsics)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    cos = -np.einsum("hwi,hwi->hw", normal, rays)
    with np.errstate(invalid="ignore"):
        return known_normals(normal) & (np.abs(cos) < np.cos(np.radians(max_angle_deg)))


def known_normals(normal: np.ndarray) -> np.ndarray:
    """(...) bool: the normal (..., 3) is usable (finite, about unit length); NaN or zero is unknown."""
    normal = np.asarray(normal)
    with np.errstate(invalid="ignore"):
        norm2 = np.einsum("...i,...i->...", normal, normal)
        return np.isfinite(norm2) & (norm2 > 0.25)
