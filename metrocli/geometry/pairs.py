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

import logging
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

log = logging.getLogger("metrocli.geometry.pairs")


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
    max_photometric: float = 5.0
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


def _lifted_matches(di: FrameData, dj: FrameData, matches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(points of j, points of i)`` of the matches whose keypoints both have depth."""
    points_i, valid_i = _lifted(di.features, di.frame)
    points_j, valid_j = _lifted(dj.features, dj.frame)
    if not len(matches):
        return np.zeros((0, 3)), np.zeros((0, 3))
    ok = valid_i[matches[:, 0]] & valid_j[matches[:, 1]]
    return points_j[matches[ok, 1]], points_i[matches[ok, 0]]


def knn_matches(a: Features, b: Features, k: int = 3) -> np.ndarray:
    """``(M, 2)`` index pairs: every point of ``b`` with its ``k`` nearest descriptors in ``a``, no ratio
    test (on a periodic texture the right match is often the second or third nearest)."""
    import cv2

    if a.descriptors is None or b.descriptors is None or len(a.descriptors) < k or len(b.descriptors) < 1:
        return np.zeros((0, 2), dtype=np.int64)
    norm = cv2.NORM_HAMMING if a.method == "orb" else cv2.NORM_L2
    knn = cv2.BFMatcher(norm).knnMatch(b.descriptors, a.descriptors, k=k)
    return np.array([(m.trainIdx, m.queryIdx) for ms in knn for m in ms], dtype=np.int64).reshape(-1, 2)


def feature_hypotheses(
    src: np.ndarray, dst: np.ndarray, with_scale: bool, seed: int, *, rounds: int = 2, iterations: int = 1000
) -> list[tuple[np.ndarray, float, int]]:
    """``[(T, r, n_inliers)]``: RANSAC + Umeyama on 3D correspondences, then again on what is left."""
    out = []
    remaining = np.ones(len(src), bool)
    for attempt in range(rounds):
        if remaining.sum() < 6:
            break
        idx = np.flatnonzero(remaining)
        rs = ransac_similarity(
            src[idx], dst[idx], with_scale=with_scale, seed=seed + attempt, iterations=iterations
        )
        if rs.n_inliers < 4:
            break
        out.append((rs.transform.rigid, rs.transform.scale, rs.n_inliers))
        remaining[idx[rs.inliers]] = False
    return out


def _support(src: np.ndarray, dst: np.ndarray, transform: np.ndarray, scale: float) -> int:
    """Feature matches (ratio test) that agree with a pose within 2 cm + 2 %: its appearance support."""
    if not len(src):
        return 0
    pred = scale * src @ transform[:3, :3].T + transform[:3, 3]
    return int((np.linalg.norm(pred - dst, axis=1) < 0.02 + 0.02 * np.linalg.norm(dst, axis=1)).sum())


def _degenerate(normals: np.ndarray) -> bool:
    """Whether the shared surfaces (their unit ``normals`` (M, 3)) leave a translation free: one or two
    plane directions only (a wall; a wall and the floor), by the eigenvalues of ``sum n n^T``."""
    if len(normals) < 10:
        return True
    ev = np.linalg.eigvalsh(normals.T @ normals / len(normals))
    return bool(ev[0] < 0.03)


#: At most this many k-nearest-neighbour matches go into RANSAC (time).
MAX_KNN_MATCHES = 4000

#: A pose needs this many agreeing feature matches to count as fixed by appearance; otherwise the geometry
#: alone must fix it (:func:`_degenerate`).
MIN_SUPPORT = 12


def _shared_normals(di: FrameData, dj: FrameData, pair: PairRegistration, voxel_m: float) -> np.ndarray:
    """Normals of ``i``'s surface where ``j``'s cloud (placed by the pair's pose) meets it."""
    import open3d as o3d

    src = o3d.geometry.PointCloud(dj.fine)
    src.scale(pair.scale, np.zeros(3))
    ev = o3d.pipelines.registration.evaluate_registration(src, di.fine, 2.0 * voxel_m, pair.transform)
    corr = np.asarray(ev.correspondence_set)
    if not len(corr) or not di.fine.has_normals():
        return np.zeros((0, 3))
    return np.asarray(di.fine.normals)[corr[:, 1]]


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

    matches = match_features(di.features, dj.features)
    src, dst = _lifted_matches(di, dj, matches)
    n_matches = len(src)
    hyps: list[Hypothesis] = []

    def add(candidates, source: str) -> None:
        for t, r, _ in candidates:
            t, r, check = _checked(di, dj, t, r, with_scale, opts)
            hyps.append(Hypothesis(t, r, source, check, n_matches, _support(src, dst, t, r)))

    def settled() -> bool:
        return any(_passes(h.check, opts) and h.check.consistency >= 0.97 for h in hyps)

    if predicted is not None:
        add([(predicted[0], predicted[1], 0)], "prediction")
    if n_matches >= 6:
        add(feature_hypotheses(src, dst, with_scale, seed, iterations=2000), "features")
    if not settled():
        ksrc, kdst = _lifted_matches(di, dj, knn_matches(di.features, dj.features))
        if len(ksrc) > MAX_KNN_MATCHES:
            keep = np.random.default_rng(seed).choice(len(ksrc), MAX_KNN_MATCHES, replace=False)
            ksrc, kdst = ksrc[keep], kdst[keep]
        if len(ksrc) >= 6:
            add(feature_hypotheses(ksrc, kdst, with_scale, seed, rounds=3, iterations=6000), "features")
    if not settled():
        for d in (di, dj):
            if d.fpfh is None:
                d.fpfh = fpfh_cloud(d.frame, voxel_m=fpfh_voxel_m)
        r0 = max(hyps, key=Hypothesis.score).scale if hyps and with_scale else 1.0
        for s in range(3):
            t = fpfh_ransac(dj.fpfh, di.fpfh, voxel_m=fpfh_voxel_m, seed=seed + s)
            add([(t, r0, 0)], "fpfh")
    for h in hyps:
        log.debug("  %d-%d %s: %s support %d", i, j, h.source, h.check, h.n_inliers)
    good = sorted((h for h in hyps if _passes(h.check, opts)), key=Hypothesis.score, reverse=True)
    if not good:
        reason = f"{n_matches} feature matches with depth"
        if hyps:
            c = max(hyps, key=Hypothesis.score).check
            reason = (
                f"no pose verified (best: {c.consistency:.0%} of the shared view agrees, overlap "
                f"{c.overlap:.0%}, grey-level residual {c.photometric:.1f})"
            )
        return PairRegistration(i, j, False, f"no overlap: {reason}", n_matches=n_matches)
    best = good[0]
    for other in good[1:]:
        moved = np.linalg.norm(other.transform[:3, 3] - best.transform[:3, 3])
        turn = _rotation_deg(other.transform, best.transform)
        if (
            turn > opts.ambiguous_deg or moved > opts.ambiguous_m
        ) and other.score() >= opts.ambiguity * best.score():
            return PairRegistration(
                i, j, False,
                f"ambiguous: two poses {turn:.0f} deg / {moved:.2f} m apart fit about equally well "
                "(repetitive or featureless surfaces)",
                n_matches=n_matches, n_inliers=best.n_inliers,
            )  # fmt: skip
    pair = _refined(i, j, di, dj, best, with_scale, opts, icp, icp_voxel_m)
    support = _support(src, dst, pair.transform, pair.scale)
    if support < MIN_SUPPORT and _degenerate(_shared_normals(di, dj, pair, icp_voxel_m)):
        return PairRegistration(
            i, j, False,
            f"ambiguous: only {support} feature matches and the shared surfaces leave the pose free "
            "(flat or featureless view)",
            n_matches=n_matches, n_inliers=support,
        )  # fmt: skip
    from dataclasses import replace

    return replace(pair, n_inliers=support)


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
