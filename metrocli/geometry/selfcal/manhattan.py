"""A second focal-length estimate that spatially correlated normal errors do not bias: Manhattan normals.

The gradient objective (:mod:`~metrocli.geometry.selfcal.objective`) compares the depth's inverse-depth
gradients with those the *predicted* normals imply. A network's normal error is smooth across the image, so
it pulls the focal length (issue 15's sweeps: 3 / 5 / 10 degrees of smooth error -> 9 / 14 / 39 %), while
depth errors are absorbed by the profiled depth-error field. Man-made scenes (rooms, streets, table-tops)
have a few dominant orthogonal directions: walls, floors, façades and furniture faces are orthogonal or
parallel to each other. Here the predicted normals only *choose* a direction: each pixel whose predicted
normal lies within :data:`SNAP_TOL_DEG` of an axis of the scene's Manhattan frame gets that axis as its
normal (the frame: the dominant direction of the predicted normals and the dominant one orthogonal to it,
orthogonalised), the others are left out, and the same objective (with its depth-error field) is minimised
again. A smooth normal error then only enters through the frame's orientation, an average over the whole
image, instead of pixel by pixel.

Measured on ``benchmarks/bench_selfcal_honest.py``'s first 40 cases, on the cases with a frame: with only
the normal error, 3.7 % median focal error (the plain objective: 14 %); with all model-like errors 4.6 %.
A frame rotated freely (3 more parameters fitted jointly with the focal length) was worse (8.7 %): the
depth-error field and the rotation trade off. A pure depth-geometry estimate (orthogonality of fitted plane
pairs, ``f^2 (a_i a_j + b_i b_j) + c_i c_j = 0`` for inverse-depth planes ``a u + b v + c``) is exact on
exact depth but a smooth 5 % depth error moves it by 17 % (median): planes are too few to separate the
depth-error field from the focal length. numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from metrocli.geometry.selfcal.terms import Terms, select

#: A pixel is snapped to an axis of the Manhattan frame when its predicted normal is within this angle.
SNAP_TOL_DEG = 20.0

#: The dominant directions are found among normals within this angle of each other (mode seeking).
MODE_TOL_DEG = 12.0

#: Each of at least two axes must hold this share of the (weighted) usable pixels, and the snapped pixels
#: at least :data:`MIN_SNAPPED_SHARE` of them: otherwise the scene has no Manhattan frame.
MIN_AXIS_SHARE = 0.02
MIN_SNAPPED_SHARE = 0.5

#: At most this many pixels are sampled to find the frame.
FRAME_SAMPLES = 3000


@dataclass(frozen=True)
class ManhattanFrame:
    """The scene's orthogonal axes (rows of ``axes``, camera frame) and the pixels of ``terms`` snapped to
    them (``keep``: the mask of snapped pixels; ``axis`` and ``sign``: each snapped pixel's axis and the
    sign that makes it face the camera)."""

    axes: np.ndarray
    keep: np.ndarray
    axis: np.ndarray
    sign: np.ndarray
    axis_share: tuple[float, float, float]


def _mode(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dominant axis (sign-free) of (N, 3) unit vectors: the sample with most neighbours within
    :data:`MODE_TOL_DEG`, refined by a few sign-aligned mean shifts."""
    cos_tol = math.cos(math.radians(MODE_TOL_DEG))
    seeds = points if len(points) <= 300 else points[rng.choice(len(points), 300, replace=False)]
    counts = np.sum(np.abs(seeds @ points.T) > cos_tol, axis=1)
    d = seeds[int(np.argmax(counts))]
    for _ in range(4):
        s = points @ d
        near = np.abs(s) > cos_tol
        if not near.any():
            break
        d = np.sum(points[near] * np.sign(s[near])[:, None], axis=0)
        d /= np.linalg.norm(d)
    return d


def manhattan_frame(terms: Terms) -> ManhattanFrame | None:
    """The Manhattan frame of the predicted normals of ``terms``, or None when the scene has fewer than two
    orthogonal dominant directions (one wall, one floor, curved or cluttered surfaces)."""
    normals = np.stack([terms.px, terms.py, terms.pz], axis=1)
    rng = np.random.default_rng(0)
    n = len(normals)
    pick = rng.choice(n, min(FRAME_SAMPLES, n), replace=False, p=terms.weight)
    pts = normals[pick]
    d1 = _mode(pts, rng)
    sin_tol = math.sin(math.radians(SNAP_TOL_DEG))
    ortho = pts[np.abs(pts @ d1) < sin_tol]
    if len(ortho) < MIN_AXIS_SHARE * len(pts):
        return None
    d2 = _mode(ortho, rng)
    d2 = d2 - (d2 @ d1) * d1
    d2 /= np.linalg.norm(d2)
    axes = np.stack([d1, d2, np.cross(d1, d2)])
    dots = normals @ axes.T
    axis = np.argmax(np.abs(dots), axis=1)
    best = np.take_along_axis(dots, axis[:, None], axis=1)[:, 0]
    keep = np.abs(best) > math.cos(math.radians(SNAP_TOL_DEG))
    s0, s1, s2 = (float(np.sum(terms.weight[keep & (axis == i)])) for i in range(3))
    share = (s0, s1, s2)
    if sorted(share)[1] < MIN_AXIS_SHARE or sum(share) < MIN_SNAPPED_SHARE:
        return None
    return ManhattanFrame(axes, keep, axis[keep], np.sign(best[keep]), share)


def snapped_terms(terms: Terms, frame: ManhattanFrame) -> Terms:
    """``terms`` restricted to the snapped pixels, with their frame axis as the predicted normal."""
    assert terms.u is not None and terms.v is not None
    out = select(terms, frame.keep)
    nrm = frame.axes[frame.axis] * frame.sign[:, None]
    return replace(
        out,
        px=nrm[:, 0],
        py=nrm[:, 1],
        pz=nrm[:, 2],
        e=nrm[:, 0] * out.u + nrm[:, 1] * out.v,
    )
