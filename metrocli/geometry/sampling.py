"""Validity of depth values and sub-pixel sampling of depth maps that never mixes two surfaces.

Pixel convention (OpenCV): ``depth[v, u]`` is the depth at the *centre* of pixel ``(u, v)``, which has the
integer coordinates ``(u, v)``. A photo of W x H pixels covers ``-0.5 <= u <= W - 0.5`` and
``-0.5 <= v <= H - 0.5``.

Same surface
    Two depth samples ``z_a`` and ``z_b`` lie on the same surface when ``|z_a - z_b| <= max_rel_jump *
    min(z_a, z_b)`` (default :data:`DEFAULT_MAX_REL_JUMP` = 5 %). A larger jump is a depth discontinuity
    (an occlusion edge): interpolating across it would invent a "flying" point floating between the
    foreground and the background.

Sub-pixel sampling
    :func:`sample_depth` interpolates bilinearly in *inverse* depth (``1 / z``), which is exact on planes
    (inverse depth is an affine function of the pixel coordinates on a plane), using only those of the four
    neighbouring samples that are valid and on the same surface as the reference sample; their weights are
    renormalised. The reference is the front-most valid neighbour: at an occlusion edge the position snaps
    to the front surface (the corners of objects, which people click to measure them, lie on their
    silhouettes against a farther background). The result is never a blend of two surfaces. Where some of
    the four neighbours are excluded, the reference surface is extrapolated to the position by a weighted
    plane fit of inverse depth over its samples in the 4x4 neighbourhood (exact on planes right up to the
    edge), falling back to the renormalised bilinear value when that fit is ill-posed.
"""

from __future__ import annotations

import numpy as np

#: Relative depth jump between neighbouring samples above which they belong to different surfaces.
DEFAULT_MAX_REL_JUMP = 0.05
#: Depths at or beyond this (metres) are treated as "no depth" (sky): Metric3D clamps its output at 300 m.
DEFAULT_MAX_DEPTH_M = 250.0


def valid_depth_mask(depth_m: np.ndarray, max_depth_m: float = DEFAULT_MAX_DEPTH_M) -> np.ndarray:
    """(H, W) bool: depth is finite, strictly positive and below ``max_depth_m``; the one validity rule.

    The limits: ``depth_m > 0`` (0 marks "no depth" in every map metrocli reads or writes) and
    ``depth_m < max_depth_m``, by default :data:`DEFAULT_MAX_DEPTH_M` = 250 m (beyond is sky or no return:
    Metric3D clamps its output at 300 m). File writers that keep every finite positive depth pass
    ``max_depth_m=math.inf``.
    """
    depth_m = np.asarray(depth_m)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth_m) & (depth_m > 0) & (depth_m < max_depth_m)


def same_surface(z_a: np.ndarray, z_b: np.ndarray, max_rel_jump: float = DEFAULT_MAX_REL_JUMP) -> np.ndarray:
    """Elementwise bool: ``z_a``, ``z_b`` (metres, > 0) differ by at most ``max_rel_jump`` of the smaller."""
    z_a = np.asarray(z_a, dtype=np.float64)
    z_b = np.asarray(z_b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.abs(z_a - z_b) <= max_rel_jump * np.minimum(z_a, z_b)


def inside_image(u: np.ndarray | float, v: np.ndarray | float, width: int, height: int) -> np.ndarray:
    """Elementwise bool: ``(u, v)`` (pixels) lies on the image, ``-0.5 <= u <= W - 0.5`` (same for v)."""
    uf = np.asarray(u, dtype=np.float64)
    vf = np.asarray(v, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(uf)
            & np.isfinite(vf)
            & (uf >= -0.5)
            & (uf <= width - 0.5)
            & (vf >= -0.5)
            & (v <= height - 0.5)
        )


def sample_depth(
    depth_m: np.ndarray,
    u: np.ndarray | float,
    v: np.ndarray | float,
    *,
    max_rel_jump: float = DEFAULT_MAX_REL_JUMP,
    max_depth_m: float = DEFAULT_MAX_DEPTH_M,
) -> np.ndarray:
    """Depth (metres) at sub-pixel positions, edge-aware (see the module docstring).

    Args:
        depth_m: (H, W) depth map in metres; 0, NaN, inf or ``>= max_depth_m`` mean "no depth".
        u, v: pixel coordinates (scalars or arrays of one shape); positions off the image are clamped to it.
        max_rel_jump: relative depth jump that separates two surfaces.
    Returns:
        float64 array of the broadcast shape of ``u`` and ``v``: the depth, NaN where none of the four
        neighbouring samples is valid.
    """
    depth = np.asarray(depth_m)  # only the samples used are converted to float64
    if depth.ndim != 2:
        raise ValueError(f"depth map must be 2-D, got shape {depth.shape}")
    h, w = depth.shape
    ub, vb = np.broadcast_arrays(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
    shape = ub.shape
    uf = np.clip(ub.ravel(), 0.0, w - 1.0)
    vf = np.clip(vb.ravel(), 0.0, h - 1.0)
    u0 = np.clip(np.floor(uf).astype(np.int64), 0, max(w - 2, 0))
    v0 = np.clip(np.floor(vf).astype(np.int64), 0, max(h - 2, 0))
    u1 = np.minimum(u0 + 1, w - 1)
    v1 = np.minimum(v0 + 1, h - 1)
    fu = uf - u0
    fv = vf - v0
    # The four corners: (u0,v0), (u1,v0), (u0,v1), (u1,v1)
    us = np.stack([u0, u1, u0, u1], axis=1)
    vs = np.stack([v0, v0, v1, v1], axis=1)
    wts = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], axis=1)
    z = depth[vs, us].astype(np.float64)
    ok = valid_depth_mask(z, max_depth_m)
    # Reference sample: the front-most valid corner.
    ref = np.argmin(np.where(ok, z, np.inf), axis=1)
    rows = np.arange(len(uf))
    z_ref = z[rows, ref]
    any_ok = ok.any(axis=1)
    keep = ok & same_surface(z, z_ref[:, None], max_rel_jump)
    wts = np.where(keep, wts, 0.0)
    total = wts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(keep, 1.0 / np.where(keep, z, 1.0), 0.0)
        inv_z = (wts * inv).sum(axis=1) / total
        out = np.where(total > 1e-12, 1.0 / inv_z, z_ref)
    partial = any_ok & ~keep.all(axis=1)
    if partial.any():
        fit = _plane_fit_inverse_depth(
            depth, uf[partial], vf[partial], z_ref[partial], max_rel_jump, max_depth_m
        )
        good = np.isfinite(fit) & same_surface(fit, z_ref[partial], max_rel_jump)
        out[np.flatnonzero(partial)[good]] = fit[good]
    out = np.where(any_ok, out, np.nan)
    return out.reshape(shape)


def _plane_fit_inverse_depth(
    depth: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    z_ref: np.ndarray,
    max_rel_jump: float,
    max_depth_m: float,
) -> np.ndarray:
    """Depth at (u, v) from a weighted plane fit of inverse depth over the 4x4 neighbourhood's samples on
    the reference surface (exact on planes, also next to an edge). NaN where the fit is ill-posed."""
    h, w = depth.shape
    offs = np.arange(-1, 3)
    us = np.clip(np.floor(u).astype(np.int64)[:, None, None] + offs[None, None, :], 0, w - 1)
    vs = np.clip(np.floor(v).astype(np.int64)[:, None, None] + offs[None, :, None], 0, h - 1)
    us, vs = np.broadcast_arrays(us, vs)
    us = us.reshape(len(u), -1)
    vs = vs.reshape(len(u), -1)
    z = depth[vs, us].astype(np.float64)
    ok = valid_depth_mask(z, max_depth_m) & same_surface(z, z_ref[:, None], max_rel_jump)
    du = us - u[:, None]
    dv = vs - v[:, None]
    wts = np.where(ok, np.exp(-(du**2 + dv**2) / (2 * 1.5**2)), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(ok, 1.0 / np.where(ok, z, 1.0), 0.0)
    # weighted least squares of inv = a + b du + c dv; the value at the point is a
    a_mat = np.stack([np.ones_like(du, dtype=np.float64), du, dv], axis=2)  # (N, 16, 3)
    ata = np.einsum("nk,nki,nkj->nij", wts, a_mat, a_mat)
    atb = np.einsum("nk,nki,nk->ni", wts, a_mat, inv)
    out = np.full(len(u), np.nan)
    # well-posed: at least 3 samples spread in two directions
    eig_min = np.linalg.eigvalsh(
        ata[:, 1:, 1:]
        - np.einsum("ni,nj->nij", ata[:, 0, 1:], ata[:, 0, 1:])
        / np.maximum(ata[:, 0, 0], 1e-12)[:, None, None]
    )[:, 0]
    solvable = (ok.sum(axis=1) >= 3) & (eig_min > 0.05 * np.maximum(ata[:, 0, 0], 1e-12))
    if solvable.any():
        coef = np.linalg.solve(ata[solvable], atb[solvable][..., None])[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[solvable] = np.where(coef[:, 0] > 0, 1.0 / coef[:, 0], np.nan)
    return out


def sample_map(values: np.ndarray, u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """Nearest-pixel lookup of an (H, W[, C]) map at sub-pixel positions (clamped to the image)."""
    values = np.asarray(values)
    h, w = values.shape[:2]
    u = np.clip(np.rint(np.asarray(u, dtype=np.float64)), 0, w - 1).astype(np.int64)
    v = np.clip(np.rint(np.asarray(v, dtype=np.float64)), 0, h - 1).astype(np.int64)
    return values[v, u]
