"""Verified registration of one pair of RGB-D frames: hypotheses from appearance and geometry, dense
verification decides.

Hypotheses (``p_i = T (r p_j)``)
    1. Image features (SIFT) lifted to 3D, RANSAC + Umeyama, **no** inlier-count gate (on periodic or plain
       surfaces a correct pair may have 20 inliers and a wrong one as many); a second RANSAC on the
       remaining matches gives a competing hypothesis (a periodic texture's shifted copy).
    2. When no feature hypothesis verifies: geometry alone, FPFH + Open3D's RANSAC on the metric clouds
       (two seeds).
    3. A predicted pose: from the rest of the graph, for loop closures (``"prediction"``), or from the
       capture order, the motion of the previous pair of photos (``"motion"``).

Refinement
    The most promising hypotheses of each stage are refined by ICP *before* the dense check decides
    (:data:`REFINE_TOP`): a coarse pose (FPFH at a 5 cm voxel, a few matches on a periodic texture) is right
    but too imprecise to pass it, which left most tiled and plain views out. The ICP runs coarse to fine on
    the points of ``j`` that face ``i``'s camera (:func:`_facing`) and ends with a pass at a tight
    correspondence distance (:attr:`VerifyOptions.icp_final_m`): both remove a bias of degrees on
    wide-baseline pairs, where the far side of a table top or leg pairs with the near side.

Decision
    Every hypothesis is checked densely (:func:`metrocli.geometry.verification.verify_pose`); with model
    depth its relative scale is first corrected by the measured depth ratio. The best one that passes
    (:meth:`Hypothesis.score`) is kept, the refined one only when ICP did not make the check worse (ICP
    slides along walls and floors, where a feature pose was right). When a clearly different hypothesis
    verifies almost as well, the pair is **ambiguous** and refused rather than guessed. A pose that few
    feature matches support, on surfaces whose normals leave it free (:func:`_degenerate`), is accepted
    only when the geometry pins it: moved along its weak motions, ICP brings it back (:func:`_slides`), or
    when it is the capture order's prediction (``"motion"``) refined: then the prediction fixes the free
    directions (a pan, or a walk past a bare wall, in plain paint). A pose refused for being free is
    returned with its free directions (``PairRegistration.free_directions``): a pair with a third photo
    that sees what pins it (a corner) may confirm it (:func:`metrocli.geometry.posegraph.register_frames`).

numpy + OpenCV + Open3D.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
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
    (over ``ambiguous_deg`` or ``ambiguous_m`` away) whose agreement (:meth:`Hypothesis.agreement`) is above
    this share of the best's makes the pair ambiguous. ``min_consistency`` applies to poses that ICP has
    refined or that needed none: on sensor depth a right pose reaches 0.99-1.0 there, a square room's
    mirror image of a plain pan 0.91.
    """

    tol_m: float = 0.01
    tol_rel: float = 0.01
    min_consistency: float = 0.95
    min_overlap: float = 0.08
    max_photometric: float = 5.0
    ambiguity: float = 0.9
    ambiguous_deg: float = 3.0
    ambiguous_m: float = 0.1
    #: correspondence distance of ICP's last pass (None: no such pass; see
    #: :func:`metrocli.geometry.registration.icp_refine`)
    icp_final_m: float | None = 0.01


#: For sensor depth (metric, mm-accurate) and for a monocular model's depth (per-cent errors).
SENSOR_VERIFY = VerifyOptions()
MODEL_VERIFY = VerifyOptions(tol_m=0.02, tol_rel=0.04, min_consistency=0.85, icp_final_m=None)


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
    #: the prediction this pose was refined from, when it was far off (it agreed with less than
    #: :data:`REFINE_MIN_CONSISTENCY` of the shared view): ICP fixed what the surfaces fix, not the rest
    coarse_from: np.ndarray | None = None

    def score(self) -> float:
        """Overlap, discounted steeply by disagreement: a periodic texture's shifted copy or a room's
        mirror image overlaps as much as the right pose, but 2 % of its shared view contradicts the other
        depth (0.98^20 = 0.67) or its grey levels differ by a few levels more (exp(-2/10) = 0.82)."""
        return self.check.overlap * self.agreement()

    def agreement(self) -> float:
        """How well the shared view agrees (1 = perfectly), whatever its size: what tells two poses of the
        same pair apart; overlap does not (a pose shifted along a wall overlaps more or less, not worse)."""
        c = self.check
        return c.consistency**20 * math.exp(-min(c.photometric, 100.0) / 10.0)


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


def guided_matches(
    a: Features,
    b: Features,
    points_a: np.ndarray,
    valid_a: np.ndarray,
    transform: np.ndarray,
    intrinsics_b: Intrinsics,
    *,
    k: int = 5,
    gate_px: float = 8.0,
    ratio: float = 0.8,
) -> np.ndarray:
    """``(M, 2)`` index pairs ``(index in a, index in b)`` that a known pose allows: of each keypoint of
    ``b``'s ``k`` nearest descriptors in ``a`` (:func:`knn_matches`) those about as alike as the nearest
    (its distance at least ``ratio`` times theirs: a periodic texture's copies), the nearest one whose 3D
    point (``points_a`` (N, 3) in ``a``'s camera frame, ``valid_a`` (N,) bool), mapped into ``b``'s camera
    frame by ``transform`` (4x4) and projected, lands within ``gate_px`` of the keypoint; at most one match
    per keypoint of either side (the nearest descriptor). On a periodic texture Lowe's ratio test leaves few
    matches (the next checker corner looks the same: 7-18 right ones of 180 on a checkered walk's later
    views); the predicted position tells the copies apart."""
    from metrocli.geometry.backproject import project

    m = knn_matches(a, b, k)
    if not len(m):
        return m
    da, db = np.asarray(a.descriptors)[m[:, 0]], np.asarray(b.descriptors)[m[:, 1]]
    if a.method == "orb":
        dist = np.unpackbits(np.bitwise_xor(da, db), axis=1).sum(axis=1).astype(np.float64)
    else:
        dist = np.linalg.norm(da.astype(np.float64) - db.astype(np.float64), axis=1)
    nearest = np.full(len(b.keypoints_px), np.inf)
    np.minimum.at(nearest, m[:, 1], dist)
    pts = np.asarray(points_a, np.float64)[m[:, 0]]
    # a copy looks about as alike as the nearest descriptor does (Lowe's ratio, the other way round)
    ok = (
        (dist * ratio <= nearest[m[:, 1]]) & np.asarray(valid_a, bool)[m[:, 0]] & np.isfinite(pts).all(axis=1)
    )
    pts = pts @ transform[:3, :3].T + transform[:3, 3]
    ok &= pts[:, 2] > 1e-6
    with np.errstate(invalid="ignore"):
        ok &= np.linalg.norm(project(pts, intrinsics_b) - b.keypoints_px[m[:, 1]], axis=1) < gate_px
    m, dist = m[ok], dist[ok]
    m = m[np.argsort(dist, kind="stable")]
    for side in (1, 0):  # nearest descriptor first: the first occurrence of a keypoint is its best match
        _, first = np.unique(m[:, side], return_index=True)
        m = m[np.sort(first)]
    return m


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


#: A direction is weakly constrained when less than this share of the shared surfaces' normal energy
#: (an eigenvalue of ``sum n n^T / M``, or of the rotational moments) lies along it.
WEAK_EIGENVALUE = 0.03


def _degenerate(normals: np.ndarray) -> bool:
    """Whether the shared surfaces (their unit ``normals`` (M, 3)) leave a translation free: one or two
    plane directions only (a wall; a wall and the floor), by the eigenvalues of ``sum n n^T``."""
    if len(normals) < 10:
        return True
    ev = np.linalg.eigvalsh(normals.T @ normals / len(normals))
    return bool(ev[0] < WEAK_EIGENVALUE)


def free_directions(normals: np.ndarray) -> np.ndarray:
    """``(K, 3)`` unit translation directions that the shared surfaces (unit ``normals`` (M, 3)) leave
    weakly constrained (:data:`WEAK_EIGENVALUE`): a wall and the floor leave their common horizontal."""
    if len(normals) < 10:
        return np.eye(3)
    ev, vecs = np.linalg.eigh(normals.T @ normals / len(normals))
    return vecs[:, ev < WEAK_EIGENVALUE].T.copy()


def pinning(normals: np.ndarray, directions: np.ndarray) -> float:
    """How firmly surfaces with unit ``normals`` (M, 3) fix a pose along each of ``directions`` (K, 3): the
    smallest share of their normal energy along one of them, ``min_d mean((n . d)^2)`` (1 when K = 0)."""
    if not len(directions):
        return 1.0
    if not len(normals):
        return 0.0
    return float(((normals @ np.asarray(directions).T) ** 2).mean(axis=0).min())


#: The slide test (:func:`_slides`) moves a pose this far along a weakly constrained direction, ...
SLIDE_M = 0.1
#: ... or turns it this far about a weakly constrained axis ...
SLIDE_DEG = 3.0
#: ... and the geometry fixes the pose when ICP brings it back within this distance and angle.
SLIDE_RETURN_M = 0.01
SLIDE_RETURN_DEG = 0.25


def _weak_motions(points: np.ndarray, normals: np.ndarray) -> list[np.ndarray]:
    """4x4 motions (in ``i``'s frame) along which the shared surfaces (points (M, 3) of ``i``'s surface and
    their unit normals) constrain a pose weakly: :data:`SLIDE_M` both ways along each translation
    direction, and :data:`SLIDE_DEG` both ways about each rotation axis through the points' centre, that
    point-to-plane distances hardly change (eigenvalues of ``sum n n^T / M`` and of
    ``sum (q x n)(q x n)^T / sum |q|^2``, ``q`` the points about their centre, below the
    :func:`_degenerate` limit)."""
    from scipy.spatial.transform import Rotation

    if len(normals) < 10:
        return [_shift(sign * SLIDE_M * e) for e in np.eye(3) for sign in (1.0, -1.0)]
    out = []
    ev, vecs = np.linalg.eigh(normals.T @ normals / len(normals))
    weak = [k for k in range(3) if ev[k] < WEAK_EIGENVALUE]
    out += [_shift(sign * SLIDE_M * vecs[:, k]) for k in weak for sign in (1.0, -1.0)]
    centre = points.mean(axis=0)
    q = points - centre
    moment = np.cross(q, normals)
    ev, vecs = np.linalg.eigh(moment.T @ moment / max(float((q**2).sum()), 1e-12))
    for k in range(3):
        if ev[k] < WEAK_EIGENVALUE:
            for sign in (1.0, -1.0):
                m = np.eye(4)
                m[:3, :3] = Rotation.from_rotvec(sign * math.radians(SLIDE_DEG) * vecs[:, k]).as_matrix()
                m[:3, 3] = centre - m[:3, :3] @ centre
                out.append(m)
    return out


def _shift(t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


def _slides(
    di: FrameData,
    dj: FrameData,
    pair: PairRegistration,
    surface: tuple[np.ndarray, np.ndarray],
    voxel_m: float,
    final_distance_m: float | None,
) -> bool:
    """Whether a pose is free to slide along the shared surfaces' weak motions (:func:`_weak_motions`):
    moved both ways along each, does point-to-plane ICP bring it back (the geometry fixes it: a table
    edge, a door frame, a corner) or not (a bare wall, a floor: the pose is not determined)?

    A share of normals alone can not tell: a few per cent of the points on a table's side fix the pose
    exactly with metric depth, while a wall with a poster seen at a grazing angle does not."""
    for motion in _weak_motions(*surface):
        back = _icp(di, dj, motion @ pair.transform, pair.scale, "point-to-plane", voxel_m, final_distance_m)
        if not _close(back, pair.transform, deg=SLIDE_RETURN_DEG, m=SLIDE_RETURN_M):
            return True
    return False


#: At most this many k-nearest-neighbour matches go into RANSAC (time).
MAX_KNN_MATCHES = 4000

#: A verified hypothesis with at least this consistency ends the search for more (time): a right pose on
#: sensor depth reaches 0.99-1.0, a periodic texture's shifted copy 0.97-0.98 (the furniture disagrees).
SETTLED_CONSISTENCY = 0.99

#: ICP refines at most this many hypotheses per stage (features, k-nearest features, FPFH), those whose
#: dense check has at least this consistency (a coarse but right pose scores 0.6-0.9 on periodic or plain
#: surfaces; a wrong one far less).
REFINE_TOP = 3
REFINE_MIN_CONSISTENCY = 0.5


def _close(a: np.ndarray, b: np.ndarray, *, deg: float = 1.0, m: float = 0.02) -> bool:
    """Whether two poses are within ``deg`` degrees and ``m`` metres of each other."""
    return _rotation_deg(a, b) <= deg and float(np.linalg.norm(a[:3, 3] - b[:3, 3])) <= m


def _pyramid(d: FrameData, scale: float, voxel_m: float) -> tuple:
    """Coarse-to-fine clouds (:data:`metrocli.geometry.registration.ICP_LEVELS`) of a frame, its depth
    multiplied by ``scale``; the unscaled levels are computed once per frame."""
    import open3d as o3d

    from metrocli.geometry.registration import ICP_LEVELS, _with_normals

    if "pyramid" not in d.extra:
        coarse = [_with_normals(d.fine.voxel_down_sample(f * voxel_m), f * voxel_m) for f in ICP_LEVELS[:-1]]
        d.extra["pyramid"] = (*coarse, d.fine)
    if scale == 1.0:
        return d.extra["pyramid"]
    out = []
    for level in d.extra["pyramid"]:
        c = o3d.geometry.PointCloud(level)
        c.scale(scale, np.zeros(3))
        out.append(c)
    return tuple(out)


#: :func:`_facing` keeps points seen up to this cosine from behind (start poses are a few degrees off).
FACING_MARGIN = 0.3


def _facing(levels: tuple, transform: np.ndarray) -> tuple:
    """The points of each cloud that face the target camera once placed by ``transform`` (normals oriented
    towards their own camera): a surface ``i`` sees from behind can not be on ``i``'s surface, and pairing it
    with a surface a few centimetres away (the other side of a table top, the back of a leg) pulls ICP off
    by degrees on wide-baseline pairs."""
    rot, t = transform[:3, :3], transform[:3, 3]
    out = []
    for c in levels:
        if not c.has_normals():
            out.append(c)
            continue
        pts = np.asarray(c.points) @ rot.T + t
        nrm = np.asarray(c.normals) @ rot.T
        # cosine between the normal and the line of sight; a margin for a start pose a few degrees off
        cos = -np.einsum("ij,ij->i", pts, nrm) / np.maximum(np.linalg.norm(pts, axis=1), 1e-9)
        keep = np.flatnonzero(cos > -FACING_MARGIN)
        out.append(c.select_by_index(keep) if len(keep) >= 30 else c)
    return tuple(out)


def _icp(
    di: FrameData,
    dj: FrameData,
    transform: np.ndarray,
    scale: float,
    icp: str,
    voxel_m: float,
    final_distance_m: float | None = None,
):
    """Coarse-to-fine ICP of ``j`` (depth times ``scale``) onto ``i`` from ``transform``, ending with a pass
    at ``final_distance_m`` (see :func:`metrocli.geometry.registration.icp_refine`)."""
    from metrocli.geometry.registration import icp_refine

    source = _facing(_pyramid(dj, scale, voxel_m), transform)
    res = icp_refine(
        source, _pyramid(di, 1.0, voxel_m), transform, voxel_m=voxel_m,
        method=icp, final_distance_m=final_distance_m,  # type: ignore[arg-type]
    )  # fmt: skip
    return res.transform


#: A pose needs this many agreeing feature matches to count as fixed by appearance; otherwise the geometry
#: alone must fix it (:func:`_degenerate`).
MIN_SUPPORT = 12


def shared_surface(
    di: FrameData, dj: FrameData, transform: np.ndarray, scale: float, distance_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points (M, 3) and normals (M, 3) of ``i``'s surface where ``j``'s cloud (depth times ``scale``,
    placed by ``transform``) meets it within ``distance_m``."""
    import open3d as o3d

    src = o3d.geometry.PointCloud(dj.fine)
    src.scale(scale, np.zeros(3))
    ev = o3d.pipelines.registration.evaluate_registration(src, di.fine, distance_m, transform)
    corr = np.asarray(ev.correspondence_set)
    if not len(corr) or not di.fine.has_normals():
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.asarray(di.fine.points)[corr[:, 1]], np.asarray(di.fine.normals)[corr[:, 1]]


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
    predicted_source: str = "prediction",
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
        return any(_passes(h.check, opts) and h.check.consistency >= SETTLED_CONSISTENCY for h in hyps)

    refined: list[Hypothesis] = []

    def refine(final: bool = False) -> None:
        """ICP from the most promising unrefined hypotheses: a coarse pose (FPFH at a 5 cm voxel, a few
        feature matches on a periodic texture) is right but not precise enough to pass the dense check.
        ``final``: once a hypothesis has settled the search, the ones that pass the check, so that what
        competes with the best is refined too (only those: an easy pair then costs one ICP).

        A predicted pose is refined whatever its score, at the latest in the final round: off by a turn
        that the capture order did not foresee (a walk's gaze swinging back, 10-15 degrees), it agrees
        with only a third of the shared view, and ICP turns it right, where features and FPFH find on
        bare walls only the room's symmetric twins. Along the directions that the surfaces leave free
        ICP slides it by tens of centimetres, so such a pose is marked (``coarse_from``): it is accepted
        only where the geometry fixes it, otherwise it is handed on, with the predicted position along
        the free directions, for a pair of another photo to pin down."""
        if icp == "none" or (settled() and not final):
            return
        todo = [
            h for h in sorted(hyps, key=Hypothesis.score, reverse=True)
            if "+icp" not in h.source
            and (h.source == predicted_source or (
                h.check.consistency >= REFINE_MIN_CONSISTENCY and (not final or _passes(h.check, opts))
            ))
            and h.check.overlap >= opts.min_overlap
            and not any(_close(h.transform, r.transform) for r in refined)
        ]  # fmt: skip
        todo = todo[:REFINE_TOP] + [h for h in todo[REFINE_TOP:] if h.source == predicted_source]
        for h in todo:
            refined.append(h)
            t = _icp(di, dj, h.transform, h.scale, icp, icp_voxel_m, opts.icp_final_m)
            t, r, check = _checked(di, dj, t, h.scale, with_scale, opts)
            coarse = h.transform if h.check.consistency < REFINE_MIN_CONSISTENCY else None
            hyps.append(
                Hypothesis(t, r, h.source + "+icp", check, n_matches, _support(src, dst, t, r), coarse)
            )

    if predicted is not None:
        add([(predicted[0], predicted[1], 0)], predicted_source)
    if n_matches >= 6:
        add(feature_hypotheses(src, dst, with_scale, seed, iterations=2000), "features")
        refine()
    if not settled():
        ksrc, kdst = _lifted_matches(di, dj, knn_matches(di.features, dj.features))
        if len(ksrc) > MAX_KNN_MATCHES:
            keep = np.random.default_rng(seed).choice(len(ksrc), MAX_KNN_MATCHES, replace=False)
            ksrc, kdst = ksrc[keep], kdst[keep]
        if len(ksrc) >= 6:
            add(feature_hypotheses(ksrc, kdst, with_scale, seed, rounds=3, iterations=6000), "features")
        refine()
    if not settled():
        for d in (di, dj):
            if d.fpfh is None:
                d.fpfh = fpfh_cloud(d.frame, voxel_m=fpfh_voxel_m)
        r0 = max(hyps, key=Hypothesis.score).scale if hyps and with_scale else 1.0
        for s in range(3):
            t = fpfh_ransac(dj.fpfh, di.fpfh, voxel_m=fpfh_voxel_m, seed=seed + s)
            add([(t, r0, 0)], "fpfh")
        refine()
    for h in hyps:
        log.debug("  %d-%d %s: %s support %d", i, j, h.source, h.check, h.n_inliers)
    refine(final=True)
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
    # a pose that a far-off prediction led to counts for its rotation only (ICP slid it along the free
    # surfaces): where a hypothesis of its own turned the same way, that one is judged, and it is no rival
    # to the others
    if good[0].coarse_from is not None:
        own = [
            h for h in good
            if h.coarse_from is None and _rotation_deg(h.transform, good[0].transform) <= opts.ambiguous_deg
        ]  # fmt: skip
        good = own[:1] + [h for h in good if h is not own[0]] if own else good
    best = good[0]
    for other in good[1:]:
        if other.coarse_from is not None:
            continue
        moved = np.linalg.norm(other.transform[:3, 3] - best.transform[:3, 3])
        turn = _rotation_deg(other.transform, best.transform)
        if (
            turn > opts.ambiguous_deg or moved > opts.ambiguous_m
        ) and other.agreement() >= opts.ambiguity * best.agreement():
            return PairRegistration(
                i, j, False,
                f"ambiguous: two poses {turn:.0f} deg / {moved:.2f} m apart fit about equally well "
                "(repetitive or featureless surfaces)",
                n_matches=n_matches, n_inliers=best.n_inliers,
            )  # fmt: skip
    pair = _refined(i, j, di, dj, best, with_scale, opts, icp, icp_voxel_m)
    support = _support(src, dst, pair.transform, pair.scale)
    # a pose the capture order predicted keeps the prediction along the free directions (a pan or a walk
    # past a bare wall); any other pose there would be a guess. A prediction that was far off (a turn the
    # capture order did not foresee) fixes nothing: ICP slid it along the wall, tens of centimetres.
    coarse = best.coarse_from is not None
    if (
        support < MIN_SUPPORT
        and (coarse or not best.source.startswith("motion"))
        and _degenerate((surface := shared_surface(di, dj, pair.transform, pair.scale, 2.0 * icp_voxel_m))[1])
        and (coarse or icp == "none" or _slides(di, dj, pair, surface, icp_voxel_m, opts.icp_final_m))
    ):
        # what fits, for another pair to pin down: from a far-off prediction, the rotation that ICP found
        # and the predicted position along the free directions (not where ICP slid)
        free = free_directions(surface[1])
        transform = pair.transform.copy()
        if best.coarse_from is not None:
            t = transform[:3, 3]
            transform[:3, 3] = t + free.T @ (free @ (best.coarse_from[:3, 3] - t))
        return PairRegistration(
            i, j, False,
            f"ambiguous: only {support} feature matches and the shared surfaces leave the pose free "
            "(flat or featureless view)",
            scale=pair.scale, transform=transform, n_matches=n_matches, n_inliers=support,
            free_directions=free,
        )  # fmt: skip
    from dataclasses import replace

    return replace(pair, n_inliers=support)


def plane_information(source, target, evaluation, transform: np.ndarray) -> np.ndarray:
    """6x6 information matrix (rotation, translation: Open3D's pose-graph order) of an alignment from its
    point-to-plane residuals: ``sum J^T J`` with ``J = [p x n, n]`` for each correspondence (``p`` the
    placed source point, ``n`` the target's normal) of ``evaluation`` (Open3D's ``evaluate_registration``
    of ``source`` onto ``target`` by ``transform``).

    Open3D's ``get_information_matrix_from_point_clouds`` is point-to-point: it counts a wall's points as
    fixing a translation along the wall, which they do not (their residuals do not change), and the pose
    graph then turned the poses of a walk past bare walls by tenths of a degree to honour a centimetre
    that no surface measured. Here a direction that the shared surfaces leave free carries no information."""
    corr = np.asarray(evaluation.correspondence_set)
    if not len(corr) or not target.has_normals():
        return np.zeros((6, 6))
    pts = np.asarray(source.points)[corr[:, 0]] @ transform[:3, :3].T + transform[:3, 3]
    nrm = np.asarray(target.normals)[corr[:, 1]]
    jac = np.hstack([np.cross(pts, nrm), nrm])
    return jac.T @ jac


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

    reg = o3d.pipelines.registration
    transform, scale, check, source = best.transform, best.scale, best.check, best.source
    src = o3d.geometry.PointCloud(dj.fine)
    src.scale(scale, np.zeros(3))
    if icp != "none" and "+icp" not in source:
        refined = _icp(di, dj, transform, scale, icp, icp_voxel_m, opts.icp_final_m)
        t2, s2, c2 = _checked(di, dj, refined, scale, with_scale, opts)
        if c2.consistency >= check.consistency - 0.002 and c2.photometric <= check.photometric + 0.25:
            transform, scale, check, source = t2, s2, c2, source + "+icp"
            src = o3d.geometry.PointCloud(dj.fine)
            src.scale(scale, np.zeros(3))
    dist = 2.0 * icp_voxel_m
    ev = reg.evaluate_registration(src, di.fine, dist, transform)
    # model depth: its distorted surfaces give point-to-plane residuals a confidence they do not deserve,
    # and the graph bent a rich pan's poses by 6 degrees to honour them (issue 16); Open3D's point-to-point
    # information spreads the weight over the whole shared view
    info = (
        np.asarray(reg.get_information_matrix_from_point_clouds(src, di.fine, dist, transform))
        if with_scale
        else plane_information(src, di.fine, ev, transform)
    )
    return PairRegistration(
        i, j, True, "",
        scale=scale, transform=transform, n_matches=best.n_matches, n_inliers=best.n_inliers,
        consistency=check.consistency, overlap=check.overlap, photometric=check.photometric,
        residual_m=float(ev.inlier_rmse), source=source, information=info,
    )  # fmt: skip
