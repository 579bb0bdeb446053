"""Per-photo smooth depth correction for a monocular model's depth, estimated from registered pairs.

A model's depth of photo ``k`` is off by a per-photo scale (the pose graph's ``s_k``) and by a smooth
distortion across the image: a few per cent more at one side than at the other tilts every surface the
photo sees by degrees, which the poses then absorb. The correction of photo ``k`` is the factor field

    ``c_k(u) = exp(a_k . phi(u))``,  ``phi = (x, y, x^2 - 1/3, y^2 - 1/3, x y)``

of the normalised image position (``x, y`` in ``[-1, 1]`` across the image's width and height); ``phi``
has no constant term (the scale holds it) and is centred over the image. The depth used is then
``s_k * c_k(u) * d_k(u)``.

Estimation (:func:`refine_jointly`)
    After the pose graph, its poses, scales and every photo's correction are refined together by
    Gauss-Newton: for every kept edge ``(i, j)``, pixels of ``i`` placed with the current poses, scales and
    corrections and projected into ``j`` give point-to-plane distances to ``j``'s surface (samples whose
    depths differ by more than :data:`MAX_LOG_RESIDUAL` in log, occlusions, dropped), and image feature
    matches give reprojection errors; both are linear in small rotations and translations of the photos,
    their log scales and their coefficients. Robust weights; a small ridge pulls the coefficients toward 0
    (the modes no edge observes), the reference photo's pose and scale are held. Surfaces alone trade a
    photo's turn against a tilt of its depth (a pan, a view of walls); the features' reprojection, which a
    turn moves everywhere and a tilt only through parallax, tells them apart.

SciPy (sparse normal equations) + numpy. (A first design, fitting the log-depth residuals with the poses
held and re-running ICP and the graph in turns, stalled where the poses had absorbed the tilt: rich pan
3.7 to 4.0 degrees.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from metrocli.geometry.backproject import backproject, backproject_pixels, project

#: Names of the terms of ``phi`` (the order of the coefficients).
CORRECTION_TERMS = ("x", "y", "x2", "y2", "xy")

#: A sample whose log-depth residual is over this is an occlusion or a mismatch, not distortion.
MAX_LOG_RESIDUAL = 0.1


def correction_basis(u: np.ndarray, v: np.ndarray, width: int, height: int) -> np.ndarray:
    """``phi`` (N, 5) at pixel coordinates ``u, v`` (pixel centres at integers) of a ``width x height``
    image (module docstring)."""
    x = (np.asarray(u, np.float64) + 0.5) / width * 2.0 - 1.0
    y = (np.asarray(v, np.float64) + 0.5) / height * 2.0 - 1.0
    return np.stack([x, y, x * x - 1.0 / 3.0, y * y - 1.0 / 3.0, x * y], axis=-1)


def correction_field(coefficients: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """The (H, W) float32 factor field ``exp(a . phi(u))`` of ``coefficients`` (None: all ones) for an image
    of ``shape`` (H, W, ...): multiply the photo's depth by it (and by its scale)."""
    h, w = int(shape[0]), int(shape[1])
    if coefficients is None:
        return np.ones((h, w), np.float32)
    v, u = np.mgrid[0:h, 0:w]
    return np.exp(correction_basis(u, v, w, h) @ np.asarray(coefficients, np.float64)).astype(np.float32)


def correction_rms(coefficients: np.ndarray | None, shape: tuple[int, ...], stride: int = 8) -> float:
    """RMS of ``log c(u)`` over the image: how much the correction changes the photo's depth (0.01 = 1 %)."""
    if coefficients is None:
        return 0.0
    h, w = int(shape[0]), int(shape[1])
    v, u = np.mgrid[0:h:stride, 0:w:stride]
    log_c = correction_basis(u.ravel(), v.ravel(), w, h) @ np.asarray(coefficients, np.float64)
    return float(np.sqrt(np.mean(log_c**2)))


@dataclass(frozen=True)
class JointFit:
    """Result of :func:`refine_jointly`: the refined ``poses`` (4x4 camera-to-reference), ``scales`` and
    correction ``coefficients`` per frame, the robust RMS point-to-plane residual (metres) of the edges
    before and after, the number of samples of the last round, and per edge ``(i, j)`` the median absolute
    residual (metres) before and after (``edge_median_m``: ``{(i, j): (before, after)}``)."""

    poses: dict[int, np.ndarray]
    scales: dict[int, float]
    coefficients: dict[int, np.ndarray]
    rms_before_m: float
    rms_after_m: float
    n_samples: int
    edge_median_m: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)


#: Unknowns per frame: rotation (3), translation (3), log scale (1), correction coefficients.
_BLOCK = 7 + len(CORRECTION_TERMS)


class _View:
    """One frame's depth as used now (scale and correction applied), its points and normals."""

    def __init__(self, depth_m: np.ndarray, intrinsics, pose: np.ndarray, scale: float, coef, stride: int):
        from metrocli.geometry.normals import normals_from_depth

        raw = np.nan_to_num(np.asarray(depth_m, np.float64), nan=0.0, posinf=0.0)
        depth = raw * scale * correction_field(coef, raw.shape)
        self.intrinsics, self.pose, self.shape = intrinsics, pose, raw.shape
        self.points = backproject(depth, intrinsics).astype(np.float64)  # camera frame, NaN = none
        self.normals = normals_from_depth(depth, intrinsics).astype(np.float64)
        h, w = raw.shape
        v, u = np.mgrid[stride // 2 : h : stride, stride // 2 : w : stride]
        ok = np.isfinite(self.points[v, u, 2])
        self.u, self.v = u[ok], v[ok]


def _edge_rows(a: _View, b: _View, ia: int, ib: int, max_log: float):
    """Point-to-plane rows of ``a``'s samples against ``b``'s surface (projective association): the
    residuals (metres), their jacobian values and columns (world-frame perturbations, see
    :func:`refine_jointly`)."""
    xa = a.points[a.v, a.u]
    ra, ta = a.pose[:3, :3], a.pose[:3, 3]
    rb, tb = b.pose[:3, :3], b.pose[:3, 3]
    pa = xa @ ra.T + ta
    q = (pa - tb) @ rb  # in b's camera frame
    ub, vb = np.rint(project(q, b.intrinsics)).T
    h, w = b.shape
    inside = (q[:, 2] > 1e-3) & (ub >= 0) & (ub < w) & (vb >= 0) & (vb < h)
    ub, vb = ub[inside].astype(np.int64), vb[inside].astype(np.int64)
    xb = b.points[vb, ub]
    nb = b.normals[vb, ub]
    ok = np.isfinite(xb[:, 2]) & np.isfinite(nb[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        ok &= np.abs(np.log(q[inside, 2] / xb[:, 2])) < max_log
    idx = np.flatnonzero(inside)[ok]
    xb, nb, ub, vb = xb[ok], nb[ok], ub[ok], vb[ok]
    pa, xa = pa[idx], xa[idx]
    n = nb @ rb.T  # world normals
    pb = xb @ rb.T + tb
    res = np.einsum("ij,ij->i", n, pa - pb)
    along_a = np.einsum("ij,ij->i", n, xa @ ra.T)  # d res / d log depth of a
    along_b = -np.einsum("ij,ij->i", n, xb @ rb.T)
    phi_a = correction_basis(a.u[idx], a.v[idx], a.shape[1], a.shape[0])
    phi_b = correction_basis(ub, vb, w, h)
    vals = np.hstack(
        [
            np.cross(pa, n), n, along_a[:, None], along_a[:, None] * phi_a,
            -np.cross(pb, n), -n, along_b[:, None], along_b[:, None] * phi_b,
        ]
    )  # fmt: skip
    cols = np.r_[np.arange(ia * _BLOCK, (ia + 1) * _BLOCK), np.arange(ib * _BLOCK, (ib + 1) * _BLOCK)]
    return res, vals, np.broadcast_to(cols, vals.shape)


def _feature_rows(a: _View, b: _View, ia: int, ib: int, uv_a: np.ndarray, uv_b: np.ndarray, gate_px: float):
    """Reprojection rows of feature matches: ``a``'s keypoints ``uv_a`` lifted with its depth, placed and
    projected into ``b``, against ``uv_b`` (pixels, u rows then v rows); matches off by more than
    ``gate_px`` are dropped. Jacobian columns as in :func:`_edge_rows` (``b``'s depth plays no part)."""
    h, w = a.shape
    ui = np.clip(np.rint(uv_a[:, 0]).astype(np.int64), 0, w - 1)
    vi = np.clip(np.rint(uv_a[:, 1]).astype(np.int64), 0, h - 1)
    z = a.points[vi, ui, 2]
    kb = b.intrinsics
    ok = np.isfinite(z)
    uv_a, uv_b, z = uv_a[ok], uv_b[ok], z[ok]
    xa = backproject_pixels(uv_a[:, 0], uv_a[:, 1], z, a.intrinsics)
    ra, ta = a.pose[:3, :3], a.pose[:3, 3]
    rb, tb = b.pose[:3, :3], b.pose[:3, 3]
    pa = xa @ ra.T + ta
    q = (pa - tb) @ rb
    front = q[:, 2] > 1e-3
    q, pa, xa, uv_a, uv_b = q[front], pa[front], xa[front], uv_a[front], uv_b[front]
    res = project(q, kb) - uv_b
    keep = np.linalg.norm(res, axis=1) < gate_px
    q, pa, xa, uv_a, res = q[keep], pa[keep], xa[keep], uv_a[keep], res[keep]
    zq = q[:, 2]
    zero = np.zeros(len(q))
    d_u = np.stack([kb.fx / zq, zero, -kb.fx * q[:, 0] / zq**2], axis=1) @ rb.T  # world gradients
    d_v = np.stack([zero, kb.fy / zq, -kb.fy * q[:, 1] / zq**2], axis=1) @ rb.T
    phi_a = correction_basis(uv_a[:, 0], uv_a[:, 1], w, h)
    moved = xa @ ra.T  # d placed point / d log depth of a
    rows = []
    for g in (d_u, d_v):
        along = np.einsum("ij,ij->i", g, moved)
        none = np.zeros((len(g), 1 + len(CORRECTION_TERMS)))
        rows.append(np.hstack([np.cross(pa, g), g, along[:, None], along[:, None] * phi_a]))
        rows[-1] = np.hstack([rows[-1], -np.cross(pa, g), -g, none])
    vals = np.vstack(rows)
    cols = np.r_[np.arange(ia * _BLOCK, (ia + 1) * _BLOCK), np.arange(ib * _BLOCK, (ib + 1) * _BLOCK)]
    return np.r_[res[:, 0], res[:, 1]], vals, np.broadcast_to(cols, vals.shape)


#: The coefficients' ridge, relative to the mean weight of the normal equations: just enough to hold the
#: modes no edge observes. A stronger one (0.005) held back corrections that the edges do observe, and the
#: poses took up the rest: started at the true poses, a checkered walk's drifted by up to 2 degrees (1.1
#: with this one), and the rendered model-depth cases' median rotation error was 0.07-0.4 degrees.
RIDGE = 5e-5

#: Feature matches off by more than this (pixels) at the start poses are not used (mismatches).
FEATURE_GATE_PX = 40.0
#: Weight of a feature's reprojection residual against a surface sample's (each in its robust sigmas): the
#: features are a few thousand against some hundred thousand samples, and they are what fixes a photo's turn
#: (rich pan, largest rotation error 2.2 deg with weight 1, 0.4-1.3 with 10; rich walk 1.6 and 0.6)
FEATURE_WEIGHT = 10.0


def _rotation(omega: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(omega).as_matrix()


def refine_jointly(
    depths_m: Mapping[int, np.ndarray],
    intrinsics: Mapping[int, object],
    poses: Mapping[int, np.ndarray],
    scales: Mapping[int, float],
    edges: Sequence[tuple[int, int]],
    reference: int,
    *,
    stride: int = 8,
    rounds: int = 8,
    ridge: float = RIDGE,
    max_log_residual: float = MAX_LOG_RESIDUAL,
    matches: Mapping[tuple[int, int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> JointFit:
    """Poses, scales and depth corrections of registered frames refined together (Gauss-Newton).

    Every edge ``(i, j)`` contributes, in both directions, the point-to-plane distances of one frame's
    sampled pixels (placed with its pose, scale and correction) to the other's surface at the pixel they
    project to; samples whose depths differ by more than ``max_log_residual`` in log (occlusions) are
    dropped, the others weighted robustly (Cauchy at 2.5 robust sigmas). Unknowns per frame: a small
    rotation and translation of its points in the reference frame, its log scale and its correction
    coefficients; the reference frame's pose and scale are held, the coefficients pulled toward 0 by a
    ``ridge`` relative to the mean weight of the normal equations (the modes the edges do not observe).

    ``matches``: ``{(i, j): (pixels in i (M, 2), pixels in j (M, 2))}`` of image features: their
    reprojection errors (both directions, matches off by over :data:`FEATURE_GATE_PX` dropped) join the
    problem. They fix what the surfaces leave to a trade between a photo's turn and a tilt of its depth (a
    pan, or a view of walls): a turn moves every feature, a tilt of the depth only through the parallax.
    Each kind of residual is divided by its own robust sigma.

    Args:
        depths_m: ``{k: (H, W) raw depth}`` (neither scale nor correction applied).
        poses, scales: the pose graph's solution (start).
    """
    from scipy.sparse import csr_matrix

    nodes = sorted(poses)
    index = {k: n for n, k in enumerate(nodes)}
    nt = len(CORRECTION_TERMS)
    pose = {k: np.array(poses[k], np.float64) for k in nodes}
    scale = {k: float(scales[k]) for k in nodes}
    coef = {k: np.zeros(nt) for k in nodes}
    pairs = [(a, b) for a, b in edges if a in index and b in index]
    first = last = 0.0
    edge_median: dict[tuple[int, int], list[float]] = {}
    n_samples = 0
    for round_ in range(rounds + 1):
        views = {k: _View(depths_m[k], intrinsics[k], pose[k], scale[k], coef[k], stride) for k in nodes}
        res_list, val_list, col_list, owner = [], [], [], []
        for e, (a, b) in enumerate(pairs):
            for i, j in ((a, b), (b, a)):
                r, v, c = _edge_rows(views[i], views[j], index[i], index[j], max_log_residual)
                res_list.append(r)
                val_list.append(v)
                col_list.append(c)
                owner.append(np.full(len(r), e))
        r = np.concatenate(res_list) if res_list else np.zeros(0)
        if len(r) < 100:
            break
        sigma = max(1.4826 * float(np.median(np.abs(r))), 1e-4)
        robust = 1.0 / (1.0 + (r / (2.5 * sigma)) ** 2)
        rms = float(np.sqrt(np.sum(robust * r**2) / np.sum(robust)))
        if round_ == 0:
            first = rms
        last, n_samples = rms, len(r)
        edge_of = np.concatenate(owner)
        for e, key in enumerate(pairs):
            mine = np.abs(r[edge_of == e])
            edge_median.setdefault(key, []).append(float(np.median(mine)) if len(mine) else float("inf"))
        # the surfaces' residuals in units of their robust sigma, then the features' in theirs
        res_all, val_all, col_all = [r / sigma], [np.vstack(val_list) / sigma], [np.vstack(col_list)]
        f_res, f_val, f_col = [], [], []
        for (a, b), (uv_a, uv_b) in (matches or {}).items():
            if a not in index or b not in index or not len(uv_a):
                continue
            for i, j, uv_i, uv_j in ((a, b, uv_a, uv_b), (b, a, uv_b, uv_a)):
                fr, fv, fc = _feature_rows(
                    views[i], views[j], index[i], index[j], uv_i, uv_j, FEATURE_GATE_PX
                )
                f_res.append(fr)
                f_val.append(fv)
                f_col.append(fc)
        if f_res and sum(len(x) for x in f_res) >= 20:
            fr = np.concatenate(f_res)
            f_sigma = max(1.4826 * float(np.median(np.abs(fr))), 0.5) / FEATURE_WEIGHT
            res_all.append(fr / f_sigma)
            val_all.append(np.vstack(f_val) / f_sigma)
            col_all.append(np.vstack(f_col))
        r = np.concatenate(res_all)
        robust = 1.0 / (1.0 + (r / 2.5) ** 2)
        if round_ == rounds:
            break
        vals, cols = np.vstack(val_all), np.vstack(col_all)
        rows = np.repeat(np.arange(len(r)), 2 * _BLOCK)
        jac = csr_matrix((vals.ravel(), (rows, cols.ravel())), shape=(len(r), _BLOCK * len(nodes)))
        weighted = jac.multiply(robust[:, None]).tocsr()
        normal = (weighted.T @ jac).toarray()
        mean = float(np.mean(np.diag(normal)[np.diag(normal) > 0]))
        damp = np.full(normal.shape[0], 1e-4 * mean)  # Levenberg-Marquardt damping
        current = np.zeros(normal.shape[0])
        for k in nodes:
            base = index[k] * _BLOCK
            damp[base + 7 : base + _BLOCK] += ridge * mean
            current[base + 7 : base + _BLOCK] = coef[k]
        ref = index[reference] * _BLOCK
        damp[ref : ref + 7] = 1e6 * mean  # the reference's pose and scale are held
        rhs = -(weighted.T @ r) - damp * current * (np.arange(len(damp)) % _BLOCK >= 7)
        step = np.linalg.solve(normal + np.diag(damp), rhs)
        for k in nodes:
            d = step[index[k] * _BLOCK : (index[k] + 1) * _BLOCK]
            rot = _rotation(d[:3])
            new = np.eye(4)
            new[:3, :3] = rot @ pose[k][:3, :3]
            new[:3, 3] = rot @ pose[k][:3, 3] + d[3:6]
            pose[k] = new
            scale[k] *= float(np.exp(d[6]))
            coef[k] = coef[k] + d[7:]
    edges_out = {key: (v[0], v[-1]) for key, v in edge_median.items()}
    return JointFit(pose, scale, coef, first, last, n_samples, edges_out)
