"""Verified registration of one pair of RGB-D frames: hypotheses from appearance and geometry, dense
verification decides.

Hypotheses (``p_i = T (r p_j)``)
    1. Image features (SIFT) lifted to 3D, RANSAC + Umeyama, **no** inlier-count gate (on periodic or plain
       surfaces a correct pair may have 20 inliers and a wrong one as many); a second RANSAC on the
       remaining matches gives a competing hypothesis (a periodic texture's shifted copy).
    2. When no feature hypothesis verifies: geometry alone, FPFH + Open3D's RANSAC on the metric clouds
       (two seeds).
    3. A predicted pose (from the rest of the graph), for loop closures.

Decision
    Every hypothesis is checked densely (:func:`metrocli.geometry.verification.verify_pose`); with model
    depth its relative scale is first corrected by the measured depth ratio. The best one that passes is
    refined by ICP, and the refinement is kept only when it does not make the verification worse (ICP slides
    along walls and floors, where a feature pose was right). When a clearly different hypothesis verifies
    almost as well, the pair is **ambiguous** and refused rather than guessed.

numpy + OpenCV + Open3D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metrocli.geometry.registration import (
    Features,
    Frame,
    PairRegistration,
    _lifted,
    fpfh_ransac,
    match_features,
    ransac_similarity,
)
from metrocli.geometry.verification import DenseView, Verification, rescaled, verify_pose


@dataclass(frozen=True)
class VerifyOptions:
    """Tolerances and thresholds of the dense verification.

    ``tol_m + tol_rel * depth``: distance on the surface; ``min_consistency``, ``min_overlap``,
    ``max_photometric`` (grey levels): what a correct pose reaches; ``ambiguity``: a competing hypothesis
    (over ``ambiguous_deg`` or ``ambiguous_m`` away) scoring above this share of the best makes the pair
    ambiguous.
    """

    tol_m: float = 0.01
    tol_rel: float = 0.01
    min_consistency: float = 0.9
    min_overlap: float = 0.08
    max_photometric: float = 10.0
    ambiguity: float = 0.9
    ambiguous_deg: float = 3.0
    ambiguous_m: float = 0.1


#: For sensor depth (metric, mm-accurate) and for a monocular model's depth (per-cent errors).
SENSOR_VERIFY = VerifyOptions()
MODEL_VERIFY = VerifyOptions(tol_m=0.02, tol_rel=0.04, min_consistency=0.85)


@dataclass
class FrameData:
    """Per-frame data shared by all pairs of a frame (computed once)."""

    frame: Frame
    features: Features
    view: DenseView
    fine: Any  # open3d PointCloud with normals at the ICP voxel
    fpfh: Any = None  # (PointCloud, Feature), computed on first need
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Hypothesis:
    transform: np.ndarray
    scale: float
    source: str
    check: Verification
    n_matches: int = 0
    n_inliers: int = 0

    def score(self) -> float:
        c = self.check
        return c.overlap * c.consistency**4 * (1.0 - min(c.photometric, 50.0) / 60.0)


def _rotation_deg(a: np.ndarray, b: np.ndarray) -> float:
    r = a[:3, :3].T @ b[:3, :3]
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def _checked(
    di: FrameData, dj: FrameData, transform: np.ndarray, scale: float, with_scale: bool, opts: VerifyOptions
) -> tuple[np.ndarray, float, Verification]:
    """Verify a hypothesis; with model depth, correct its scale by the measured depth ratio first."""
    check = verify_pose(di.view, dj.view, transform, scale, tol_m=opts.tol_m, tol_rel=opts.tol_rel)
    if with_scale:
        for _ in range(2):
            if check.n_common < 30 or not np.isfinite(check.depth_ratio):
                break
            ratio = float(np.clip(check.depth_ratio, 0.8, 1.25))
            transform, scale = rescaled(transform, scale, ratio)
            check = verify_pose(di.view, dj.view, transform, scale, tol_m=opts.tol_m, tol_rel=opts.tol_rel)
    return transform, scale, check


def _passes(check: Verification, opts: VerifyOptions) -> bool:
    return check.passes(
        min_consistency=opts.min_consistency,
        min_overlap=opts.min_overlap,
        max_photometric=opts.max_photometric,
    )


def feature_hypotheses(
    di: FrameData, dj: FrameData, with_scale: bool, seed: int
) -> tuple[list[tuple[np.ndarray, float, int]], int, str]:
    """``([(T, r, n_inliers)], n_matches with depth, reason when none)`` from SIFT matches lifted to 3D."""
    matches = match_features(di.features, dj.features)
    if len(matches) < 4:
        return [], len(matches), f"{len(matches)} feature matches"
    points_i, valid_i = _lifted(di.features, di.frame)
    points_j, valid_j = _lifted(dj.features, dj.frame)
    ok = valid_i[matches[:, 0]] & valid_j[matches[:, 1]]
    dst, src = points_i[matches[ok, 0]], points_j[matches[ok, 1]]
    n = len(src)
    if n < 4:
        return [], n, f"{n} feature matches with depth"
    out = []
    remaining = np.ones(n, bool)
    for attempt in range(2):
        if remaining.sum() < 6:
            break
        idx = np.flatnonzero(remaining)
        rs = ransac_similarity(
            src[idx], dst[idx], with_scale=with_scale, seed=seed + attempt, iterations=1000
        )
        if rs.n_inliers < 4:
            break
        out.append((rs.transform.rigid, rs.transform.scale, rs.n_inliers))
        remaining[idx[rs.inliers]] = False
    return out, n, "" if out else f"no consistent subset of {n} feature matches"


def register_pair(
    i: int,
    j: int,
    di: FrameData,
    dj: FrameData,
    *,
    with_scale: bool,
    opts: VerifyOptions,
    icp: str,
    icp_voxel_m: float,
    fpfh_voxel_m: float,
    predicted: tuple[np.ndarray, float] | None = None,
    seed: int = 0,
) -> PairRegistration:
    """Register frame ``j`` onto frame ``i`` (see the module docstring); ``ok`` only when verified."""
    from metrocli.geometry.registration import fpfh_cloud

    hyps: list[Hypothesis] = []
    feats, n_matches, reason = feature_hypotheses(di, dj, with_scale, seed)
    for t, r, n_inl in feats:
        t, r, check = _checked(di, dj, t, r, with_scale, opts)
        hyps.append(Hypothesis(t, r, "features", check, n_matches, n_inl))
    if predicted is not None:
        t, r, check = _checked(di, dj, predicted[0], predicted[1], with_scale, opts)
        hyps.append(Hypothesis(t, r, "prediction", check, n_matches))
    if not any(_passes(h.check, opts) for h in hyps):
        for d in (di, dj):
            if d.fpfh is None:
                d.fpfh = fpfh_cloud(d.frame, voxel_m=fpfh_voxel_m)
        r0 = hyps[0].scale if hyps else 1.0
        for s in range(2):
            t = fpfh_ransac(dj.fpfh, di.fpfh, voxel_m=fpfh_voxel_m, seed=seed + s)
            t, r, check = _checked(di, dj, t, 1.0 if not with_scale else r0, with_scale, opts)
            hyps.append(Hypothesis(t, r, "fpfh", check, n_matches))
    good = sorted((h for h in hyps if _passes(h.check, opts)), key=Hypothesis.score, reverse=True)
    if not good:
        if hyps:
            best = max(hyps, key=Hypothesis.score)
            c = best.check
            reason = (
                f"no pose verified (best: {c.consistency:.0%} of the shared view agrees, overlap "
                f"{c.overlap:.0%}, grey-level residual {c.photometric:.1f})"
            )
        return PairRegistration(
            i, j, False, f"no overlap: {reason}" if reason else "no overlap", n_matches=n_matches
        )
    best = good[0]
    for other in good[1:]:
        moved = np.linalg.norm(other.transform[:3, 3] - best.transform[:3, 3])
        far = _rotation_deg(other.transform, best.transform) > opts.ambiguous_deg or moved > opts.ambiguous_m
        if far and other.score() >= opts.ambiguity * best.score():
            return PairRegistration(
                i, j, False,
                f"ambiguous: two poses {_rotation_deg(other.transform, best.transform):.0f} deg / "
                f"{moved:.2f} m apart fit about equally well (repetitive or featureless surfaces)",
                n_matches=n_matches, n_inliers=best.n_inliers,
            )  # fmt: skip
    return _refined(i, j, di, dj, best, with_scale, opts, icp, icp_voxel_m)


def _refined(
    i: int,
    j: int,
    di: FrameData,
    dj: FrameData,
    best: Hypothesis,
    with_scale: bool,
    opts: VerifyOptions,
    icp: str,
    icp_voxel_m: float,
) -> PairRegistration:
    """ICP from the best hypothesis, kept only when the verification does not get worse."""
    import open3d as o3d

    from metrocli.geometry.registration import icp_refine

    reg = o3d.pipelines.registration
    transform, scale, check, source = best.transform, best.scale, best.check, best.source
    src = o3d.geometry.PointCloud(dj.fine)
    src.scale(scale, np.zeros(3))
    if icp != "none":
        res = icp_refine(src, di.fine, transform, voxel_m=icp_voxel_m, method=icp)  # type: ignore[arg-type]
        t2, s2, c2 = _checked(di, dj, res.transform, scale, with_scale, opts)
        if c2.consistency >= check.consistency - 0.002 and c2.photometric <= check.photometric + 0.25:
            transform, scale, check, source = t2, s2, c2, source + "+icp"
            src = o3d.geometry.PointCloud(dj.fine)
            src.scale(scale, np.zeros(3))
    dist = 2.0 * icp_voxel_m
    ev = reg.evaluate_registration(src, di.fine, dist, transform)
    info = np.asarray(reg.get_information_matrix_from_point_clouds(src, di.fine, dist, transform))
    return PairRegistration(
        i, j, True, "",
        scale=scale, transform=transform, n_matches=best.n_matches, n_inliers=best.n_inliers,
        consistency=check.consistency, overlap=check.overlap, photometric=check.photometric,
        residual_m=float(ev.inlier_rmse), source=source, information=info,
    )  # fmt: skip
