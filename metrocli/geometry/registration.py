"""Pairwise registration of RGB-D frames with metric depth: features, RANSAC similarity, ICP refinement.

Conventions
    A frame's points are in its camera frame (OpenCV: x right, y down, z forward), metres. The result of
    registering frame ``j`` onto frame ``i`` is a transform ``T_ij`` (4x4) that maps points of ``j`` into
    the frame of ``i``: ``p_i = T_ij @ p_j``.

Scale
    Model depth has a per-image scale error. :func:`register_features` can estimate a similarity
    ``p_i = s R p_j + t`` instead of a rigid motion: ``s`` is the scale of frame ``j``'s depth *relative to*
    frame ``i``'s (multiply ``j``'s depth by ``s`` to make it agree with ``i``'s). Sensor depth is metric
    in every frame, so there the motion is rigid (``s = 1``).

Pipeline of one pair
    1. SIFT features (ORB when SIFT is unavailable) on the upright photos, ratio-test matching.
    2. Each matched keypoint is lifted to 3D with its depth (nearest pixel; keypoints on depth edges are
       dropped because their depth is ambiguous).
    3. RANSAC over minimal 3-point samples with the closed-form Umeyama solution, then least squares on
       the inliers (:func:`ransac_similarity`).
    4. ICP (point-to-plane, or coloured) on voxel-downsampled dense clouds refines the rigid part
       (:func:`icp_refine`).

numpy + OpenCV + Open3D only (never torch).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.backproject import backproject_pixels
from metrocli.geometry.sampling import valid_depth_mask

if TYPE_CHECKING:
    import open3d as o3d

log = logging.getLogger("metrocli.geometry.registration")

FeatureMethod = Literal["sift", "orb"]
IcpMethod = Literal["point-to-plane", "colored", "none"]


@dataclass(frozen=True)
class Frame:
    """One upright RGB-D view.

    Attributes:
        name: label used in messages (usually the photo's file name).
        rgb: (H, W, 3) uint8 upright RGB.
        depth_m: (H, W) float32 metric depth along z (0 / NaN = invalid).
        intrinsics: intrinsics of this H x W image.
    """

    name: str
    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: Intrinsics


@dataclass(frozen=True)
class Features:
    """Keypoints ``(N, 2)`` float32 pixel (u, v) of the upright image and their descriptors ``(N, D)``."""

    keypoints_px: np.ndarray
    descriptors: np.ndarray | None
    method: FeatureMethod
    #: (N, 3) float64 camera-frame points of the keypoints (metres), once lifted (:func:`lift_features`)
    points_m: np.ndarray | None = None
    #: (N,) bool: the keypoint has a reliable depth
    valid: np.ndarray | None = None


@dataclass(frozen=True)
class Similarity:
    """``p' = scale * R @ p + t`` (R (3, 3) rotation, t (3,) metres, scale unitless)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @property
    def rigid(self) -> np.ndarray:
        """4x4 float64 rigid matrix ``[R | t]`` (the scale dropped)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform ``(N, 3)`` points."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation


@dataclass(frozen=True)
class PairRegistration:
    """Registration of frame ``j`` onto frame ``i``.

    Attributes:
        i, j: frame indices.
        ok: whether the pair overlaps reliably (enough consistent matches).
        reason: why not, when not ok.
        scale: depth scale of ``j`` relative to ``i`` (1 for rigid registration).
        transform: 4x4 rigid ``T_ij`` mapping ``j``'s points, *after* multiplying ``j``'s depth by ``scale``
            and in ``i``'s depth units, into ``i``'s frame.
        n_matches: feature matches with valid depth on both sides.
        n_inliers: RANSAC inliers.
        inlier_rmse_m: RMS 3D residual of the inliers (metres).
        consistency, overlap, photometric: dense verification of the accepted pose
            (:class:`metrocli.geometry.verification.Verification`; NaN when not verified).
        residual_m: RMS point-to-surface residual of the accepted pose (ICP's inlier RMSE; NaN if none).
        source: where the accepted pose came from: ``"features"`` (image features lifted to 3D),
            ``"fpfh"`` (geometry only), ``"prediction"`` (the other poses, for a loop closure), each
            followed by ``"+icp"`` when ICP refined it.
        information: 6x6 information matrix of the alignment (for the pose graph), or None.
        free_directions: for a pair refused because the shared surfaces leave the pose free (a bare wall
            and the floor), the ``(K, 3)`` unit translation directions, in ``i``'s frame, along which it is
            free; ``transform`` and ``scale`` are then the pose that fits, which a pair of another frame
            may pin down (:func:`metrocli.geometry.posegraph.register_frames`). None otherwise.
    """

    i: int
    j: int
    ok: bool
    reason: str = ""
    scale: float = 1.0
    transform: np.ndarray = field(default_factory=lambda: np.eye(4))
    n_matches: int = 0
    n_inliers: int = 0
    inlier_rmse_m: float = float("nan")
    consistency: float = float("nan")
    overlap: float = float("nan")
    photometric: float = float("nan")
    residual_m: float = float("nan")
    source: str = ""
    information: np.ndarray | None = None
    free_directions: np.ndarray | None = None


# --------------------------------------------------------------------------------------------- features


def detect_features(
    rgb: np.ndarray, *, method: FeatureMethod = "sift", max_features: int = 2500, max_side_px: int = 800
) -> Features:
    """Keypoints and descriptors of an upright (H, W, 3) uint8 RGB image.

    SIFT by default (scale invariant, so photos taken with different lenses still match); ORB when SIFT is
    not available in this OpenCV build or when asked for. Images larger than ``max_side_px`` are detected on
    a downscaled copy (coarse registration needs no more; ICP refines on the full depth), keypoints are
    returned in full-resolution pixels.
    """
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    factor = 1.0
    if max(h, w) > max_side_px:
        factor = max_side_px / max(h, w)
        gray = cv2.resize(gray, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    if method == "sift" and hasattr(cv2, "SIFT_create"):
        detector = cv2.SIFT_create(nfeatures=max_features)
    else:
        method = "orb"
        detector = cv2.ORB.create(nfeatures=max_features)
    keypoints, descriptors = detector.detectAndCompute(gray, None)
    pts = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
    if factor != 1.0:  # pixel centres: u_full + 0.5 = (u_small + 0.5) / factor
        pts = (pts + 0.5) / factor - 0.5
    return Features(pts, descriptors, method)


def match_features(a: Features, b: Features, *, ratio: float = 0.8) -> np.ndarray:
    """``(M, 2)`` int index pairs ``(index in a, index in b)`` passing Lowe's ratio test (one per b point)."""
    import cv2

    if a.descriptors is None or b.descriptors is None or len(a.descriptors) < 2 or len(b.descriptors) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    norm = cv2.NORM_HAMMING if a.method == "orb" else cv2.NORM_L2
    matcher = cv2.BFMatcher(norm)
    knn = matcher.knnMatch(a.descriptors, b.descriptors, k=2)
    best: dict[int, tuple[float, int]] = {}
    for pair in knn:
        if len(pair) < 2:
            continue
        m, n = pair
        if m.distance < ratio * n.distance and (m.trainIdx not in best or m.distance < best[m.trainIdx][0]):
            best[m.trainIdx] = (m.distance, m.queryIdx)
    if not best:
        return np.zeros((0, 2), dtype=np.int64)
    return np.array([(q, t) for t, (_, q) in best.items()], dtype=np.int64)


def lift_keypoints(
    keypoints_px: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics, *, max_rel_jump: float = 0.03
) -> tuple[np.ndarray, np.ndarray]:
    """3D points (camera frame, metres) of keypoints, with the depth of their nearest pixel.

    Keypoints whose 3x3 depth neighbourhood holds invalid depth or spans a relative jump above
    ``max_rel_jump`` (an occlusion edge, where the depth of a corner feature is ambiguous) are invalid.

    Returns:
        ``(points (N, 3) float64, valid (N,) bool)``.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    depth = np.asarray(depth_m, dtype=np.float32)
    good = valid_depth_mask(depth, max_depth_m=math.inf)
    d = np.where(good, depth, 0.0).astype(np.float32)
    dmax = maximum_filter(np.where(good, d, np.inf), size=3, mode="nearest")
    dmin = minimum_filter(np.where(good, d, 0.0), size=3, mode="nearest")
    h, w = depth.shape
    kp = np.asarray(keypoints_px, dtype=np.float64).reshape(-1, 2)
    u = np.clip(np.rint(kp[:, 0]).astype(np.int64), 0, w - 1)
    v = np.clip(np.rint(kp[:, 1]).astype(np.int64), 0, h - 1)
    z = d[v, u].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        flat = (dmax[v, u] - dmin[v, u]) <= max_rel_jump * z
    valid = (z > 0) & np.isfinite(dmax[v, u]) & (dmin[v, u] > 0) & flat
    return backproject_pixels(kp[:, 0], kp[:, 1], z, intrinsics), valid


def lift_features(features: Features, frame: Frame) -> Features:
    """``features`` with every keypoint lifted to 3D with ``frame``'s depth (see :func:`lift_keypoints`)."""
    from dataclasses import replace

    pts, valid = lift_keypoints(features.keypoints_px, frame.depth_m, frame.intrinsics)
    return replace(features, points_m=pts, valid=valid)


def _lifted(features: Features, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """``(points_m, valid)`` of ``features``, lifted with ``frame``'s depth when they are not yet."""
    if features.points_m is not None and features.valid is not None:
        return features.points_m, features.valid
    return lift_keypoints(features.keypoints_px, frame.depth_m, frame.intrinsics)


# --------------------------------------------------------------------------------------- robust fitting


def _umeyama_batch(src: np.ndarray, dst: np.ndarray, with_scale: bool) -> tuple[np.ndarray, ...]:
    """Batched Umeyama: src, dst (K, N, 3) -> scale (K,), R (K, 3, 3), t (K, 3) with dst ≈ s R src + t."""
    mu_s = src.mean(axis=1, keepdims=True)
    mu_d = dst.mean(axis=1, keepdims=True)
    xs = src - mu_s
    xd = dst - mu_d
    n = src.shape[1]
    cov = np.einsum("kni,knj->kij", xd, xs) / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    d = np.where(d == 0, 1.0, d)
    smat = np.ones((src.shape[0], 3))
    smat[:, 2] = d
    rot = np.einsum("kij,kj,kjl->kil", u, smat, vt)
    if with_scale:
        var_s = (xs**2).sum(axis=(1, 2)) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = (sig * smat).sum(axis=1) / var_s
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    else:
        scale = np.ones(src.shape[0])
    t = mu_d[:, 0, :] - scale[:, None] * np.einsum("kij,kj->ki", rot, mu_s[:, 0, :])
    return scale, rot, t


def umeyama(src: np.ndarray, dst: np.ndarray, *, with_scale: bool = False) -> Similarity:
    """Least-squares similarity (or rigid motion) with ``dst ≈ s R src + t`` (Umeyama 1991).

    Args:
        src, dst: (N, 3) corresponding points, N >= 3.
        with_scale: estimate ``s``; otherwise ``s = 1``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or src.shape[0] < 3:
        raise ValueError(f"umeyama needs two (N>=3, 3) arrays, got {src.shape} and {dst.shape}")
    s, r, t = _umeyama_batch(src[None], dst[None], with_scale)
    return Similarity(float(s[0]), r[0], t[0])


@dataclass(frozen=True)
class RansacResult:
    """Best similarity of :func:`ransac_similarity` and its inlier mask ``(N,)`` bool."""

    transform: Similarity
    inliers: np.ndarray

    @property
    def n_inliers(self) -> int:
        return int(self.inliers.sum())


def ransac_similarity(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    with_scale: bool = False,
    threshold_m: float = 0.02,
    threshold_rel: float = 0.02,
    iterations: int = 2000,
    seed: int = 0,
    scale_range: tuple[float, float] = (0.5, 2.0),
) -> RansacResult:
    """Robust ``dst ≈ s R src + t`` from correspondences with outliers.

    A correspondence is an inlier when its residual is below ``threshold_m + threshold_rel * |dst|`` (depth
    noise grows with distance). Minimal samples of 3, scored by inlier count (ties by residual), then two
    rounds of least squares on the inliers.

    Args:
        src, dst: (N, 3) float metres, N >= 3.
        with_scale: estimate a scale, restricted to ``scale_range``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = len(src)
    if n < 3:
        raise ValueError(f"RANSAC needs at least 3 correspondences, got {n}")
    thr = threshold_m + threshold_rel * np.linalg.norm(dst, axis=1)
    rng = np.random.default_rng(seed)
    batch = 256
    best_count, best_cost, best = -1, np.inf, None
    done = 0
    needed = iterations
    while done < needed:
        k = min(batch, needed - done)
        idx = rng.integers(0, n, size=(k, 3))
        dup = (idx[:, 0] == idx[:, 1]) | (idx[:, 0] == idx[:, 2]) | (idx[:, 1] == idx[:, 2])
        while dup.any():  # minimal samples of 3 distinct correspondences
            idx[dup] = rng.integers(0, n, size=(int(dup.sum()), 3))
            dup = (idx[:, 0] == idx[:, 1]) | (idx[:, 0] == idx[:, 2]) | (idx[:, 1] == idx[:, 2])
        s, r, t = _umeyama_batch(src[idx], dst[idx], with_scale)
        diff = np.matmul(src[None], r.transpose(0, 2, 1)) * s[:, None, None] + t[:, None, :] - dst[None]
        res = np.sqrt(np.einsum("kni,kni->kn", diff, diff))
        inl = res < thr[None]
        if with_scale:
            inl &= ((s >= scale_range[0]) & (s <= scale_range[1]))[:, None]
        counts = inl.sum(axis=1)
        costs = np.where(inl, res / thr[None], 1.0).sum(axis=1)
        for kk in np.flatnonzero(counts >= max(best_count, 3)):
            if counts[kk] > best_count or (counts[kk] == best_count and costs[kk] < best_cost):
                best_count, best_cost, best = int(counts[kk]), float(costs[kk]), inl[kk].copy()
        done += k
        if best_count > 3:  # adaptive number of iterations (99.9 % confidence)
            w = best_count / n
            need = int(np.ceil(np.log(1e-3) / np.log(max(1e-12, 1.0 - w**3)))) if w < 1 else 1
            needed = min(iterations, max(need, 64))
    if best is None or best.sum() < 3:
        return RansacResult(Similarity(1.0, np.eye(3), np.zeros(3)), np.zeros(n, dtype=bool))
    inliers = best
    sim = umeyama(src[inliers], dst[inliers], with_scale=with_scale)
    for _ in range(2):
        res = np.linalg.norm(sim.apply(src) - dst, axis=1)
        new = res < thr
        if new.sum() < 3:
            break
        inliers = new
        sim = umeyama(src[inliers], dst[inliers], with_scale=with_scale)
    return RansacResult(sim, inliers)


def register_features(
    i: int,
    j: int,
    frame_i: Frame,
    frame_j: Frame,
    feat_i: Features,
    feat_j: Features,
    *,
    with_scale: bool = False,
    min_inliers: int = 15,
    min_inlier_ratio: float = 0.15,
    seed: int = 0,
) -> PairRegistration:
    """Coarse registration of ``frame_j`` onto ``frame_i`` from feature matches lifted to 3D.

    The pair is accepted when RANSAC finds at least ``min_inliers`` consistent matches making at least
    ``min_inlier_ratio`` of the matches with depth; ``reason`` says why otherwise.
    """
    matches = match_features(feat_i, feat_j)
    if len(matches) < 3:
        return PairRegistration(i, j, False, f"{len(matches)} feature matches")
    points_i, valid_i = _lifted(feat_i, frame_i)
    points_j, valid_j = _lifted(feat_j, frame_j)
    pi, vi = points_i[matches[:, 0]], valid_i[matches[:, 0]]
    pj, vj = points_j[matches[:, 1]], valid_j[matches[:, 1]]
    ok = vi & vj
    src, dst = pj[ok], pi[ok]
    n = len(src)
    if n < max(3, min_inliers):
        return PairRegistration(i, j, False, f"{n} feature matches with depth", n_matches=n)
    rs = ransac_similarity(src, dst, with_scale=with_scale, seed=seed)
    k = rs.n_inliers
    if k < min_inliers or k < min_inlier_ratio * n:
        return PairRegistration(
            i, j, False, f"{k} consistent of {n} feature matches", n_matches=n, n_inliers=k
        )
    sim = rs.transform
    res = np.linalg.norm(sim.apply(src[rs.inliers]) - dst[rs.inliers], axis=1)
    return PairRegistration(
        i,
        j,
        True,
        "",
        scale=sim.scale,
        transform=sim.rigid,
        n_matches=n,
        n_inliers=k,
        inlier_rmse_m=float(np.sqrt(np.mean(res**2))),
    )


# ------------------------------------------------------------------------------------------------- ICP


#: voxel-size multiples of the coarse-to-fine ICP levels
ICP_LEVELS = (4.0, 2.0, 1.0)


def frame_cloud(
    frame: Frame, *, scale: float = 1.0, voxel_m: float = 0.02, max_points: int = 200_000, stride: int = 0
) -> o3d.geometry.PointCloud:
    """Voxel-downsampled coloured point cloud of a frame (depth multiplied by ``scale``), with normals.

    Normals are estimated from neighbours within ``2.5 * voxel_m`` and oriented towards the camera.
    ``stride`` subsamples pixels first (0 = automatic, about ``max_points`` pixels).
    """
    import open3d as o3d

    depth = np.asarray(frame.depth_m, dtype=np.float32)
    h, w = depth.shape
    if stride <= 0:
        stride = max(1, int(np.ceil(np.sqrt(h * w / max_points))))
    intr = frame.intrinsics
    vs, us = np.mgrid[0:h:stride, 0:w:stride]
    z = depth[vs, us].astype(np.float64) * scale
    good = valid_depth_mask(z, max_depth_m=math.inf)
    u, v, z = us[good], vs[good], z[good]
    pts = backproject_pixels(u, v, z, intr)
    cols = frame.rgb[v, u].astype(np.float64) / 255.0
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.colors = o3d.utility.Vector3dVector(cols)
    return _with_normals(pcd.voxel_down_sample(voxel_m), voxel_m)


def _with_normals(pcd: o3d.geometry.PointCloud, voxel_m: float) -> o3d.geometry.PointCloud:
    import open3d as o3d

    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2.5 * voxel_m, max_nn=30))
    pcd.orient_normals_towards_camera_location(np.zeros(3))
    return pcd


def cloud_pyramid(
    frame: Frame, *, scale: float = 1.0, voxel_m: float = 0.02
) -> tuple[o3d.geometry.PointCloud, ...]:
    """Clouds of a frame for coarse-to-fine ICP: one per level of :data:`ICP_LEVELS` (voxel ``f * voxel_m``),
    finest last, camera frame, with normals (facing the camera)."""
    fine = frame_cloud(frame, scale=scale, voxel_m=voxel_m)
    coarse = [_with_normals(fine.voxel_down_sample(f * voxel_m), f * voxel_m) for f in ICP_LEVELS[:-1]]
    return (*coarse, fine)


@dataclass(frozen=True)
class IcpResult:
    """Refined 4x4 ``transform`` (source -> target), overlap ``fitness`` (0-1), ``rmse_m`` and the 6x6
    ``information`` matrix of the alignment (for the pose graph)."""

    transform: np.ndarray
    fitness: float
    rmse_m: float
    information: np.ndarray


def icp_refine(
    source: o3d.geometry.PointCloud | Sequence[o3d.geometry.PointCloud],
    target: o3d.geometry.PointCloud | Sequence[o3d.geometry.PointCloud],
    init: np.ndarray,
    *,
    voxel_m: float,
    method: IcpMethod = "point-to-plane",
    iterations: tuple[int, ...] = (20, 15, 10),
    final_distance_m: float | None = None,
) -> IcpResult:
    """Coarse-to-fine ICP of ``source`` onto ``target`` from ``init`` (4x4, source -> target).

    ``source`` and ``target`` are Open3D point clouds with normals at voxel size ``voxel_m``, or pyramids
    from :func:`cloud_pyramid`. Levels run at ``4, 2, 1 x voxel_m`` with a correspondence distance of 2
    voxels. Point-to-plane by default; ``"colored"`` uses Open3D's coloured ICP (geometry + photometry).

    ``final_distance_m``: one more point-to-plane pass on the finest level with this (tighter)
    correspondence distance. At 2 voxels, points of one frame pair with surfaces of the other they do not
    belong to (the far side of a thin table top, the next face at a corner), which biases a pose along
    weakly constrained directions by centimetres and degrees; with depth accurate to millimetres, a
    distance near the depth tolerance removes that bias (0.1-0.2 deg to 0.01-0.05 deg on the rendered
    rooms).
    """
    import open3d as o3d

    reg = o3d.pipelines.registration
    src_levels = source if isinstance(source, tuple | list) else (source,)
    tgt_levels = target if isinstance(target, tuple | list) else (target,)
    factors = ICP_LEVELS[-len(src_levels) :]
    transform = np.asarray(init, dtype=np.float64).copy()
    fitness: float | None = None
    rmse = float("nan")
    if method != "none":
        for src, tgt, factor, iters in zip(
            src_levels, tgt_levels, factors, iterations[-len(factors) :], strict=True
        ):
            crit = reg.ICPConvergenceCriteria(relative_fitness=1e-6, relative_rmse=1e-6, max_iteration=iters)
            dist = 2.0 * voxel_m * factor
            plane = reg.TransformationEstimationPointToPlane()
            if method == "colored":
                try:
                    result = reg.registration_colored_icp(
                        src, tgt, dist, transform, reg.TransformationEstimationForColoredICP(), crit
                    )
                except RuntimeError:  # too few colour correspondences: geometric fallback
                    result = reg.registration_icp(src, tgt, dist, transform, plane, crit)
            else:
                result = reg.registration_icp(src, tgt, dist, transform, plane, crit)
            if len(result.correspondence_set) >= 30:
                transform = np.asarray(result.transformation)
                if factor == factors[-1]:
                    fitness, rmse = float(result.fitness), float(result.inlier_rmse)
    source, target = src_levels[-1], tgt_levels[-1]
    dist = 2.0 * voxel_m
    if method != "none" and final_distance_m is not None:
        crit = reg.ICPConvergenceCriteria(relative_fitness=1e-7, relative_rmse=1e-7, max_iteration=30)
        result = reg.registration_icp(
            source, target, final_distance_m, transform, reg.TransformationEstimationPointToPlane(), crit
        )
        if len(result.correspondence_set) >= 30:
            transform = np.asarray(result.transformation)
            fitness = None  # evaluated below at the usual distance
    if method == "none" or fitness is None:
        ev = reg.evaluate_registration(source, target, dist, transform)
        fitness, rmse = float(ev.fitness), float(ev.inlier_rmse)
    info = reg.get_information_matrix_from_point_clouds(source, target, dist, transform)
    return IcpResult(transform, fitness, rmse, np.asarray(info))


# ------------------------------------------------------------------------------------- FPFH (geometry)


def fpfh_cloud(
    frame: Frame, *, voxel_m: float
) -> tuple[o3d.geometry.PointCloud, o3d.pipelines.registration.Feature]:
    """A frame's cloud at ``voxel_m`` with normals and its FPFH features (radius ``5 * voxel_m``)."""
    import open3d as o3d

    pcd = frame_cloud(frame, voxel_m=voxel_m, max_points=60_000)
    feat = o3d.pipelines.registration.compute_fpfh_feature(  # type: ignore[call-arg]
        pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=5.0 * voxel_m, max_nn=100)
    )
    return pcd, feat


def fpfh_ransac(
    source: tuple[o3d.geometry.PointCloud, o3d.pipelines.registration.Feature],
    target: tuple[o3d.geometry.PointCloud, o3d.pipelines.registration.Feature],
    *,
    voxel_m: float,
    seed: int = 0,
    iterations: int = 20_000,
) -> np.ndarray:
    """Open3D's global registration (RANSAC on FPFH matches, edge-length and distance checks) of
    ``source`` onto ``target`` (from :func:`fpfh_cloud`): a 4x4 rigid hypothesis, source -> target."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    o3d.utility.random.seed(seed)
    dist = 1.5 * voxel_m
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        result = reg.registration_ransac_based_on_feature_matching(
            source[0],
            target[0],
            source[1],
            target[1],
            True,
            dist,
            reg.TransformationEstimationPointToPoint(False),
            3,
            [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(dist)],
            reg.RANSACConvergenceCriteria(iterations, 0.999),
        )
    return np.asarray(result.transformation)
