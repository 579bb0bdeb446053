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


def _weights(p: np.ndarray, axis: int, max_rel_jump: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour differences along ``axis`` (0 = v, 1 = u) and the weights of the forward and backward ones.

    Returns ``(diff, w_f, w_b)``: ``diff`` (H', W', 3) float32 is ``P[next] - P[this]`` between neighbours
    (NaN-free, 0 where unusable); the derivative at each pixel is ``w_f * forward + w_b * backward`` with
    weights (H, W) float32 in {0, 0.5, 1}: central difference (0.5, 0.5) where both neighbours are on this
    pixel's surface and agree, one-sided (1, 0) / (0, 1) otherwise, (0, 0) where there is no derivative.
    """
    z = p[..., 2]
    if axis == 1:
        diff = p[:, 1:] - p[:, :-1]
        z_a, z_b = z[:, :-1], z[:, 1:]
    else:
        diff = p[1:] - p[:-1]
        z_a, z_b = z[:-1], z[1:]
    with np.errstate(invalid="ignore"):
        ok = np.abs(z_b - z_a) <= max_rel_jump * np.minimum(z_a, z_b)
    dz = np.abs(diff[..., 2])
    dz[~ok] = np.inf
    diff[~ok] = 0.0
    h, w = z.shape
    ok_f = np.zeros((h, w), bool)
    ok_b = np.zeros((h, w), bool)
    dz_f = np.full((h, w), np.inf, np.float32)
    dz_b = np.full((h, w), np.inf, np.float32)
    if axis == 1:
        ok_f[:, :-1], ok_b[:, 1:] = ok, ok
        dz_f[:, :-1], dz_b[:, 1:] = dz, dz
    else:
        ok_f[:-1], ok_b[1:] = ok, ok
        dz_f[:-1], dz_b[1:] = dz, dz
    both = ok_f & ok_b
    with np.errstate(invalid="ignore"):
        # a crease or a step below the jump threshold: the two sides disagree; take the flatter one
        disagree = both & (np.abs(dz_f - dz_b) > 0.5 * (dz_f + dz_b) + 1e-4 * np.abs(z))
    flatter_f = dz_f < dz_b
    central = both & ~disagree
    w_f = np.where(central, 0.5, np.where((ok_f & ~ok_b) | (disagree & flatter_f), 1.0, 0.0)).astype(
        np.float32
    )
    w_b = np.where(central, 0.5, np.where((ok_b & ~ok_f) | (disagree & ~flatter_f), 1.0, 0.0)).astype(
        np.float32
    )
    return diff, w_f, w_b


def _derivative(p: np.ndarray, axis: int, max_rel_jump: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float32 derivative of the points along ``axis`` and (H, W) bool "defined"."""
    diff, w_f, w_b = _weights(p, axis, max_rel_jump)
    d = np.zeros_like(p)
    if axis == 1:
        d[:, :-1] += w_f[:, :-1, None] * diff
        d[:, 1:] += w_b[:, 1:, None] * diff
    else:
        d[:-1] += w_f[:-1, :, None] * diff
        d[1:] += w_b[1:, :, None] * diff
    return d, (w_f + w_b) > 0


def normals_from_depth(
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    *,
    max_rel_jump: float = DEFAULT_MAX_REL_JUMP,
    max_depth_m: float = DEFAULT_MAX_DEPTH_M,
) -> np.ndarray:
    """Unit normals of the surface seen in a depth map, from the gradient of its backprojected points.

    Vectorised numpy (a few hundred ms per megapixel).

    Args:
        depth_m: (H, W) depth in metres (0 / NaN / inf / sky = no depth).
        intrinsics: intrinsics of this H x W image.
        max_rel_jump: relative depth jump treated as a discontinuity (no derivative across it).
    Returns:
        (H, W, 3) float32 unit normals in the camera frame, pointing towards the camera (``n · P < 0``);
        NaN where undefined (no depth, or no same-surface neighbour along u or v).
    """
    points = backproject(depth_m, intrinsics, max_depth_m=max_depth_m)
    du, ok_u = _derivative(points, 1, max_rel_jump)
    dv, ok_v = _derivative(points, 0, max_rel_jump)
    # n = dv x du, component by component (np.cross is slow on large arrays)
    n = np.empty_like(points)
    n[..., 0] = dv[..., 1] * du[..., 2] - dv[..., 2] * du[..., 1]
    n[..., 1] = dv[..., 2] * du[..., 0] - dv[..., 0] * du[..., 2]
    n[..., 2] = dv[..., 0] * du[..., 1] - dv[..., 1] * du[..., 0]
    norm = np.sqrt(np.einsum("hwi,hwi->hw", n, n))
    good = ok_u & ok_v & (norm > 0) & np.isfinite(norm)
    # orient towards the camera: flip where n · P > 0
    dot = np.einsum("hwi,hwi->hw", n, np.nan_to_num(points))
    scale = np.where(good, np.where(dot > 0, -1.0, 1.0) / np.where(good, norm, 1.0), np.nan)
    n *= scale[..., None].astype(np.float32)
    return n


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
