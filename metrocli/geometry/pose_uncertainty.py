"""The one-sigma uncertainty of each registered pose, from the whole pose graph.

Each kept edge ``(i, j)`` measures the relative pose ``T_i^-1 T_j`` (poses camera-to-reference, the edge's
``transform`` maps points of j into i) with a 6x6 information matrix in Open3D's convention: rotation then
translation of a left perturbation of the transform, in frame i. Perturbing the poses on the left in the
reference frame, ``T_k <- exp(d_k) T_k``, moves the relative pose by ``Ad(T_i^-1) (d_j - d_i)``, so the
graph's information is the sum over the edges of ``J^T L J`` with ``J = Ad(T_i^-1) [-I, I]``; the reference
is held, and each pose's covariance is its block of the inverse. Unlike the information of a pose's own
edges alone, this grows along a chain of photos and shrinks where loops close.

An edge's information comes from thousands of surface points and would claim thousandths of a degree;
what limits a pair is systematic (where ICP settles, the depth's own errors), so every edge also carries a
floor, :data:`EDGE_FLOOR_ROTATION_DEG` and :data:`EDGE_FLOOR_TRANSLATION_M` (in covariance, added to the
inverse of its information), and verification pins every direction at least to :data:`VERIFIED_ROTATION_DEG`
and :data:`VERIFIED_TRANSLATION_M` (:func:`edge_information`). numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: One-sigma floor of every edge's rotation and translation (systematic error of one pair's alignment).
#: Measured on the 12 rendered exact-depth cases of benchmarks/bench_register.py (132 photos, errors up to
#: 0.30 degrees and 1.9 cm): the information of a pose's own edges alone covered 64 % of the rotation errors
#: and 58 % of the position errors at two sigma; the whole graph with rotation floors of 0.05 / 0.10 / 0.15 /
#: 0.20 degrees covers 86 / 98 / 99 / 100 % of the rotation errors (1 cm: 100 % of the position errors).
EDGE_FLOOR_ROTATION_DEG = 0.2
EDGE_FLOOR_TRANSLATION_M = 0.01
#: What a verified pair pins in every direction at least (one sigma): its dense check and feature matches
#: fail a pose turned or slid further, also where its surfaces alone leave a direction free (one wall: the
#: ICP information is singular there). Without it a pan's photo between two such pairs claimed 185 m.
VERIFIED_ROTATION_DEG = 1.0
VERIFIED_TRANSLATION_M = 0.02


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def adjoint(transform: np.ndarray) -> np.ndarray:
    """6x6 adjoint of a 4x4 rigid ``transform`` for twists ordered (rotation, translation): a left
    perturbation ``exp(d) T'`` seen through ``transform`` becomes ``exp(adjoint @ d)``."""
    r, t = transform[:3, :3], transform[:3, 3]
    out = np.zeros((6, 6))
    out[:3, :3] = r
    out[3:, 3:] = r
    out[3:, :3] = _skew(t) @ r
    return out


def floored_information(
    information: np.ndarray,
    rotation_floor_deg: float = EDGE_FLOOR_ROTATION_DEG,
    translation_floor_m: float = EDGE_FLOOR_TRANSLATION_M,
) -> np.ndarray:
    """``(information^-1 + F)^-1`` with ``F`` the floors' diagonal covariance, computed as
    ``(I + information F)^-1 information`` so that a singular information (a wall: a slide it cannot see)
    stays singular in those directions."""
    floor = np.diag([np.radians(rotation_floor_deg) ** 2] * 3 + [translation_floor_m**2] * 3)
    info = np.asarray(information, dtype=np.float64)
    out = np.linalg.solve(np.eye(6) + info @ floor, info)
    return 0.5 * (out + out.T)


def edge_information(information: np.ndarray) -> np.ndarray:
    """The information a verified edge gives the graph: its ICP ``information`` (already scaled by its
    residual) floored (:func:`floored_information`), plus what verification pins in every direction
    (:data:`VERIFIED_ROTATION_DEG`, :data:`VERIFIED_TRANSLATION_M`)."""
    verified = np.diag([np.radians(VERIFIED_ROTATION_DEG) ** -2] * 3 + [VERIFIED_TRANSLATION_M**-2] * 3)
    return floored_information(information) + verified


def graph_pose_sigmas(
    poses: Mapping[int, np.ndarray],
    edges: Sequence[tuple[int, int, np.ndarray]],
    reference: int,
) -> dict[int, tuple[float, float]]:
    """One-sigma (rotation degrees, camera-centre metres) of each pose of ``poses`` (4x4 camera-to-reference)
    from the ``edges`` ``(i, j, information)`` (6x6, already in the units of the residual: see the module
    docstring; a verified edge's with :func:`edge_information`). The reference is ``(0, 0)``; a pose that the
    edges do not pin (not connected, or free along a direction) is ``(inf, inf)``.

    The rotation is the largest standard deviation of the rotation; the position that of the camera centre,
    which also moves by the rotation's uncertainty times its distance from the reference camera.
    """
    nodes = [k for k in sorted(poses) if k != reference]
    index = {k: n for n, k in enumerate(nodes)}
    out: dict[int, tuple[float, float]] = {reference: (0.0, 0.0)}
    if not nodes:
        return out
    h = np.zeros((6 * len(nodes), 6 * len(nodes)))
    for i, j, information in edges:
        if i not in poses or j not in poses or i == j:
            continue
        a = adjoint(np.linalg.inv(np.asarray(poses[i], dtype=np.float64)))
        block = a.T @ np.asarray(information, dtype=np.float64) @ a
        for k, sign_k in ((i, -1.0), (j, 1.0)):
            if k not in index:
                continue
            for m, sign_m in ((i, -1.0), (j, 1.0)):
                if m not in index:
                    continue
                rk, rm = 6 * index[k], 6 * index[m]
                h[rk : rk + 6, rm : rm + 6] += sign_k * sign_m * block
    h = 0.5 * (h + h.T)
    values, vectors = np.linalg.eigh(h)
    scale = max(float(values.max()), 1e-300)
    pinned = values > 1e-12 * scale
    cov = (vectors[:, pinned] / values[pinned]) @ vectors[:, pinned].T
    free = vectors[:, ~pinned]
    for k, n in index.items():
        rows = slice(6 * n, 6 * n + 6)
        if free.size and float(np.abs(free[rows]).max()) > 1e-6:
            out[k] = (float("inf"), float("inf"))
            continue
        c = cov[rows, rows]
        rot = float(np.degrees(np.sqrt(max(float(np.linalg.eigvalsh(c[:3, :3]).max()), 0.0))))
        centre = np.asarray(poses[k], dtype=np.float64)[:3, 3]
        jac = np.hstack([-_skew(centre), np.eye(3)])
        pos = float(np.sqrt(max(float(np.linalg.eigvalsh(jac @ c @ jac.T).max()), 0.0)))
        out[k] = (rot, pos)
    return out
