"""Issue 16: candidate pairs, dense verification, ambiguity refusal and registration of rendered sequences
on checker, tiled and plain textures (orbit, walk, pan), exact depth and model-like depth."""

from __future__ import annotations

import numpy as np
import pytest

from metrocli.geometry.pairing import bag_of_words, candidate_pairs, retrieval_pairs, sequential_pairs
from metrocli.geometry.pairs import (
    _degenerate,
    _facing,
    _weak_motions,
    free_directions,
    guided_matches,
    knn_matches,
    pinning,
)
from metrocli.geometry.posegraph import _loop_sources, _motion, _travel, register_frames
from metrocli.geometry.registration import Features, Frame
from metrocli.geometry.verification import dense_view, rescaled, verify_pose
from metrocli.synth.trajectories import (
    model_like_depth,
    pose_errors,
    render_sequence,
    rotation_error_deg,
    trajectory_poses,
)


def test_sequential_pairs_and_small_sets_try_all_pairs() -> None:
    assert sequential_pairs(4, 2) == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)}
    descs = [np.zeros((5, 8), np.float32) for _ in range(5)]
    assert candidate_pairs(descs, window=2, k=2) == [(i, j) for i in range(5) for j in range(i + 1, 5)]


def test_retrieval_pairs_link_photos_with_the_same_words() -> None:
    rng = np.random.default_rng(0)
    # two "places", each with its own descriptor cluster; photos 0, 2, 4 see place A, 1, 3, 5 place B
    centres = rng.normal(size=(2, 16, 32)).astype(np.float32) * 10
    descs = [centres[k % 2][rng.integers(0, 16, 200)] + rng.normal(size=(200, 32)).astype(np.float32) * 0.1
             for k in range(6)]  # fmt: skip
    hist = bag_of_words(descs, words=16)
    np.testing.assert_allclose(np.linalg.norm(hist, axis=1), 1.0, atol=1e-9)
    pairs = retrieval_pairs(hist, k=2)
    assert pairs and all((i - j) % 2 == 0 for i, j in pairs)


def test_degenerate_normals() -> None:
    wall = np.tile([1.0, 0.0, 0.0], (100, 1))
    corner2 = np.concatenate([wall, np.tile([0.0, 0.0, 1.0], (100, 1))])
    corner3 = np.concatenate([corner2, np.tile([0.0, 1.0, 0.0], (100, 1))])
    assert _degenerate(wall) and _degenerate(corner2) and not _degenerate(corner3)
    assert _degenerate(np.zeros((3, 3)))


def test_knn_matches_keep_every_candidate() -> None:
    a = Features(np.zeros((6, 2), np.float32), np.eye(6, 8, dtype=np.float32), "sift")
    b = Features(np.zeros((2, 2), np.float32), np.eye(6, 8, dtype=np.float32)[:2], "sift")
    m = knn_matches(a, b, k=3)
    assert m.shape == (6, 2) and set(m[:, 1]) == {0, 1}
    assert (0, 0) in {tuple(x) for x in m} and (1, 1) in {tuple(x) for x in m}


def test_guided_matches_tell_the_copies_of_a_periodic_texture_apart() -> None:
    from metrocli.camera.intrinsics import Intrinsics
    from metrocli.geometry.backproject import project
    from metrocli.geometry.registration import match_features

    # a checkerboard's corners: 5 x 5 points on a wall 2 m away, every descriptor alike (two kinds of corner)
    intr = Intrinsics(fx=300.0, fy=300.0, cx=160.0, cy=120.0, width=320, height=240)
    gx, gy = np.meshgrid(np.linspace(-0.4, 0.4, 5), np.linspace(-0.4, 0.4, 5))
    points_a = np.stack([gx.ravel(), gy.ravel(), np.full(25, 2.0)], axis=1)
    kinds = np.arange(25) % 2
    rng = np.random.default_rng(0)
    desc = np.eye(2, 8)[kinds]
    move = np.eye(4)
    move[:3, 3] = (0.05, 0.0, 0.0)  # b's camera frame from a's
    a = Features(project(points_a, intr).astype(np.float32), desc.astype(np.float32), "sift")
    order = np.random.default_rng(1).permutation(25)  # b's keypoints in another order
    pts_b = points_a[order] @ move[:3, :3].T + move[:3, 3]
    desc_b = np.eye(2, 8)[kinds[order]] + 0.01 * rng.normal(size=(25, 8))  # alike, not equal
    b = Features(project(pts_b, intr).astype(np.float32), desc_b.astype(np.float32), "sift")
    assert len(match_features(a, b)) <= 5  # the ratio test keeps few
    m = guided_matches(a, b, points_a, np.ones(25, bool), move, intr, k=25, gate_px=8.0)
    assert len(m) == 25 and all(order[j] == i for i, j in m)
    # a pose 2 px off still finds them; a keypoint without depth is never matched
    off = move.copy()
    off[0, 3] += 2.0 * 2.0 / 300.0
    valid = np.ones(25, bool)
    valid[7] = False
    m = guided_matches(a, b, points_a, valid, off, intr, k=25, gate_px=8.0)
    assert len(m) == 24 and all(order[j] == i for i, j in m) and 7 not in m[:, 0]


def test_a_photo_one_edge_links_is_as_uncertain_as_its_neighbour_and_more() -> None:
    from metrocli.geometry.posegraph import Edge, _pose_uncertainty
    from metrocli.geometry.registration import PairRegistration

    poses = {k: np.eye(4) for k in range(4)}
    links = [(0, 1), (0, 2), (1, 2), (2, 3)]  # 3 hangs on 2 alone
    edges = [Edge(i, j, np.eye(4), information=np.eye(6) * 1e6) for i, j in links]
    pairs = {(i, j): PairRegistration(i, j, True, residual_m=0.01) for i, j in links}
    moved = {1: (0.3, 0.01), 2: (1.0, 0.05), 3: (0.2, 0.01)}
    graph = _pose_uncertainty(poses, edges, pairs, 0, {})  # the whole graph alone: 3 hangs on 2
    assert graph[3][0] > graph[2][0] and graph[3][1] > graph[2][1]
    out = _pose_uncertainty(poses, edges, pairs, 0, moved)
    assert out[0] == (0.0, 0.0)
    assert out[1][0] == pytest.approx(np.hypot(graph[1][0], 0.3), rel=1e-6)
    assert out[2][0] == pytest.approx(np.hypot(graph[2][0], 1.0), rel=1e-6)
    # the leaf takes its own move and its neighbour's (nothing separates its turn from a tilt of its depth)
    assert out[3][0] == pytest.approx(np.hypot(graph[3][0], np.hypot(0.2, 1.0)), rel=1e-6)
    assert out[3][1] == pytest.approx(np.hypot(graph[3][1], np.hypot(0.01, 0.05)), rel=1e-6)
    assert out[3][0] > out[2][0]


@pytest.fixture(scope="module")
def checker_orbit():
    return render_sequence("checker", "orbit", 12, width=320, height=240)


def _true_rel(seq, i: int, j: int) -> np.ndarray:
    return np.linalg.inv(seq.renders[i].pose) @ seq.renders[j].pose


def test_dense_verification_tells_right_from_wrong(checker_orbit) -> None:
    seq = checker_orbit
    vi, vj = (dense_view(r.rgb, r.depth_m, r.intrinsics) for r in seq.renders[:2])
    truth = _true_rel(seq, 0, 1)
    good = verify_pose(vi, vj, truth)
    assert good.consistency > 0.98 and good.overlap > 0.3 and good.photometric < 2
    assert good.depth_ratio == pytest.approx(1.0, abs=2e-3)
    turned = truth.copy()
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    turned[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ truth[:3, :3]
    bad = verify_pose(vi, vj, turned)
    assert bad.consistency < 0.8 or bad.photometric > 5
    # a depth-scale error shows up as a depth ratio, and rescaled() corrects it
    scaled = verify_pose(vi, vj, truth, 0.95)
    assert scaled.depth_ratio == pytest.approx(1 / 0.95, rel=0.01)
    t2, s2 = rescaled(truth, 0.95, scaled.depth_ratio)
    assert s2 == pytest.approx(1.0, rel=0.01)
    assert verify_pose(vi, vj, t2, s2).consistency > max(0.9, scaled.consistency)


def test_a_tele_close_up_verifies_at_its_true_pose_and_not_turned() -> None:
    # a mixed-lens orbit: view 0 13 mm, 1 26 mm, 2 77 mm; the tele view covers a few per cent of the wide
    # ones, and its fine texture, several of its pixels per wide-lens pixel, must not read as a mismatch
    seq = render_sequence("rich", "orbit", 12, width=320, height=240, lenses_mm=(13.0, 26.0, 77.0))
    v0, v1, v2 = (dense_view(r.rgb, r.depth_m, r.intrinsics) for r in seq.renders[:3])
    gates = dict(min_consistency=0.95, min_overlap=0.08, max_photometric=5.0)
    truth = _true_rel(seq, 1, 2)
    good = verify_pose(v1, v2, truth)
    assert good.passes(**gates), good
    turned = truth.copy()
    c, s = np.cos(np.radians(3)), np.sin(np.radians(3))
    turned[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ truth[:3, :3]
    bad = verify_pose(v1, v2, turned)
    assert not bad.passes(**gates), bad
    # the 77 mm view lies inside the 13 mm one: it overlaps although it covers ~3 % of the wide view
    assert verify_pose(v0, v2, _true_rel(seq, 0, 2)).overlap > 0.1


def test_trajectories_and_model_like_depth() -> None:
    for kind in ("orbit", "walk", "pan"):
        poses = trajectory_poses(kind, 8)
        assert len(poses) == 8
        for p in poses:
            np.testing.assert_allclose(p[:3, :3].T @ p[:3, :3], np.eye(3), atol=1e-9)
    pan = trajectory_poses("pan", 8)
    assert all(np.allclose(p[:3, 3], pan[0][:3, 3]) for p in pan)  # pure rotation
    depth = np.full((30, 40), 2.0, np.float32)
    noisy, factor = model_like_depth(depth, 3, scale_error=0.1, distortion=0.03)
    assert 0.9 <= factor <= 1.1
    assert np.abs(noisy / (2.0 * factor) - 1).max() <= 0.03 + 1e-6
    assert rotation_error_deg(np.eye(4), pan[0]) > 0


def _register(seq, depth: str = "exact", **kw):
    depths = [
        model_like_depth(r.depth_m, 100 + k)[0] if depth == "model" else r.depth_m
        for k, r in enumerate(seq.renders)
    ]
    frames = [
        Frame(n, r.rgb, d, r.intrinsics) for n, r, d in zip(seq.names, seq.renders, depths, strict=True)
    ]
    reg = register_frames(frames, estimate_scale=depth == "model", **kw)
    err = pose_errors(
        [r.pose for r in seq.renders], depths, [r.intrinsics for r in seq.renders], reg.reference,
        reg.poses, reg.scales, true_depths_m=[r.depth_m for r in seq.renders],
        fields={k: reg.correction(k, depths[k].shape) for k in reg.poses},
    )  # fmt: skip
    return reg, err


@pytest.mark.slow
def test_checker_orbit_registers_every_view_accurately() -> None:
    seq = render_sequence("checker", "orbit", 12)
    reg, err = _register(seq)
    assert sorted(reg.poses) == list(range(12)), reg.left_out
    assert err.max_rotation_deg <= 0.5
    assert err.surface_median_m <= 0.01
    assert len(reg.pairs) < 12 * 11 // 2  # not every pair
    for p in reg.pairs:
        if p.ok:
            assert p.consistency >= 0.9 and np.isfinite(p.residual_m) and p.information.shape == (6, 6)
    assert set(reg.pose_uncertainty) == set(reg.poses) and reg.pose_uncertainty[reg.reference] == (0.0, 0.0)
    # the pose uncertainty covers the error at two sigma (the information of a pose's own edges alone
    # claimed 0.03 degrees for poses 0.28 degrees off) and stays informative
    for k, deg in err.rotation_deg.items():
        sigma_deg, sigma_m = reg.pose_uncertainty[k]
        assert deg <= 2 * sigma_deg or k == reg.reference, (k, deg, sigma_deg)
        assert err.translation_m[k] <= 2 * sigma_m or k == reg.reference, (k, err.translation_m[k], sigma_m)
        assert sigma_deg <= 0.5 and sigma_m <= 0.03


@pytest.mark.slow
@pytest.mark.parametrize(("texture", "kind"), [("plain", "pan"), ("tiles", "walk"), ("plain", "orbit")])
def test_hard_cases_never_accept_a_wrong_pose(texture: str, kind: str) -> None:
    seq = render_sequence(texture, kind, 12)
    reg, err = _register(seq)
    assert err.max_rotation_deg <= 5.0, err.rotation_deg
    assert len(reg.poses) + len(reg.left_out) == 12
    assert all(reason for reason in reg.left_out.values())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("texture", "kind", "max_sigma_deg"),
    [("rich", "orbit", 2.0), ("checker", "walk", 2.5)],  # the walk: issue 16's hardest model-depth case
)
def test_model_like_depth_within_the_bounds(texture: str, kind: str, max_sigma_deg: float) -> None:
    seq = render_sequence(texture, kind, 12)
    reg, err = _register(seq, "model")
    assert len(reg.poses) == 12, reg.left_out
    assert err.max_rotation_deg <= 2.0
    assert err.surface_median_m <= 0.05
    assert 0 < reg.scale_spread < 0.2
    # the pose uncertainty covers the model depth's error (the formal one alone claimed hundredths of a
    # degree) and stays informative
    for k, deg in err.rotation_deg.items():
        sigma_deg = reg.pose_uncertainty[k][0]
        assert deg <= 2 * sigma_deg or k == reg.reference, (k, deg, sigma_deg)
        assert sigma_deg <= max_sigma_deg


def _rigid(angle_deg: float, axis: int, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.radians(angle_deg) * np.eye(3)[axis]).as_matrix()
    m[:3, 3] = t
    return m


def test_weak_motions_of_a_plane_and_of_a_corner() -> None:
    rng = np.random.default_rng(0)
    # a floor (normal z): free to slide along x and y and to turn about z; nothing else
    floor = np.c_[rng.uniform(-1, 1, (400, 2)), np.zeros(400)]
    up = np.tile([0.0, 0.0, 1.0], (400, 1))
    motions = _weak_motions(floor, up)
    shifts = [m[:3, 3] for m in motions if np.allclose(m[:3, :3], np.eye(3))]
    turns = [m for m in motions if not np.allclose(m[:3, :3], np.eye(3))]
    assert len(shifts) == 4 and all(abs(s[2]) < 1e-9 and np.linalg.norm(s) > 0.05 for s in shifts)
    assert len(turns) == 2
    for m in turns:  # about the vertical through the points' centre: the floor stays on itself
        moved = floor @ m[:3, :3].T + m[:3, 3]
        np.testing.assert_allclose(moved[:, 2], 0.0, atol=1e-9)
        assert rotation_error_deg(m, np.eye(4)) == pytest.approx(3.0, abs=1e-6)
    # a corner of three walls fixes every motion
    pts = [floor, floor[:, [2, 0, 1]] + [0, 0, 1], floor[:, [1, 2, 0]] + [0, 1, 0]]
    nrm = [up, up[:, [2, 0, 1]], up[:, [1, 2, 0]]]
    assert _weak_motions(np.concatenate(pts), np.concatenate(nrm)) == []


def test_facing_drops_surfaces_the_other_camera_sees_from_behind() -> None:
    import open3d as o3d

    # a card 2 m in front of the source camera, facing it; placed by a half turn about the vertical axis
    # 4 m ahead, it faces away from the target camera (which would see its back)
    pts = np.c_[np.random.default_rng(1).uniform(-0.5, 0.5, (100, 2)), np.full(100, 2.0)]
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.normals = o3d.utility.Vector3dVector(np.tile([0.0, 0.0, -1.0], (100, 1)))
    (same,) = _facing((pcd,), np.eye(4))
    assert len(same.points) == 100
    behind = _rigid(180.0, 1, (0.0, 0.0, 4.0))  # the card ends up at z = 2 m, its normal along +z
    (culled,) = _facing((pcd,), behind)
    assert len(culled.points) == 100  # fewer than 30 left: kept as it is (too little to cull)
    big = o3d.geometry.PointCloud(pcd)
    big += o3d.geometry.PointCloud(pcd).translate((0.0, 0.0, 0.5))  # a second, thicker layer
    both = np.tile([0.0, 0.0, -1.0], (200, 1))
    both[100:] = [0.0, 0.0, 1.0]  # its far side: faces away from the source camera
    big.normals = o3d.utility.Vector3dVector(both)
    (kept,) = _facing((big,), behind)
    assert len(kept.points) == 100
    facing = np.asarray(kept.normals) @ behind[:3, :3].T
    np.testing.assert_allclose(facing, np.tile([0, 0, -1.0], (100, 1)), atol=1e-9)


def _frame_data(render, voxel_m: float):
    from metrocli.geometry.pairs import FrameData
    from metrocli.geometry.registration import detect_features, frame_cloud, lift_features

    f = Frame("view", render.rgb, render.depth_m, render.intrinsics)
    feats = lift_features(detect_features(f.rgb), f)
    view = dense_view(f.rgb, f.depth_m, f.intrinsics)
    return FrameData(f, feats, view, frame_cloud(f, voxel_m=voxel_m, max_points=80_000))


def _pair(seq, i: int, j: int, predicted=None):
    from metrocli.geometry.pairs import SENSOR_VERIFY, register_pair

    voxel = 0.027
    return register_pair(
        i, j, _frame_data(seq.renders[i], voxel), _frame_data(seq.renders[j], voxel), with_scale=False,
        opts=SENSOR_VERIFY, icp="point-to-plane", icp_voxel_m=voxel, fpfh_voxel_m=0.07,
        predicted=predicted, predicted_source="motion",
    )  # fmt: skip


def test_a_coarse_pose_on_tiles_is_refined_before_it_is_judged() -> None:
    # neighbours of a tiled orbit: a few feature matches give a pose that is right but too coarse for the
    # dense check; refined by ICP first, it passes, exact (the shared walls and floor alone leave it
    # free, the table pins it: the slide test)
    seq = render_sequence("tiles", "orbit", 12, width=320, height=240)
    p = _pair(seq, 8, 9)
    assert p.ok, p.reason
    assert "+icp" in p.source and p.consistency >= 0.97
    truth = _true_rel(seq, 8, 9)
    assert rotation_error_deg(truth, p.transform) < 0.1
    assert np.linalg.norm(truth[:3, 3] - p.transform[:3, 3]) < 0.01


def test_a_plain_pan_registers_from_the_capture_order_only() -> None:
    seq = render_sequence("plain", "pan", 12, width=320, height=240)
    assert not _pair(seq, 2, 3).ok  # bare walls: neither features nor FPFH find the pose
    motion = _true_rel(seq, 1, 2)  # the previous step of the pan
    p = _pair(seq, 2, 3, predicted=(motion, 1.0))
    assert p.ok and p.source.startswith("motion"), p.reason
    assert rotation_error_deg(_true_rel(seq, 2, 3), p.transform) < 0.05
    # a wrong prediction (turned the other way) is checked like any hypothesis, never taken on trust
    wrong = _pair(seq, 2, 3, predicted=(np.linalg.inv(motion), 1.0))
    assert not wrong.ok or rotation_error_deg(_true_rel(seq, 2, 3), wrong.transform) < 0.5


@pytest.mark.slow
@pytest.mark.parametrize(("texture", "kind"), [("tiles", "orbit"), ("tiles", "pan"), ("checker", "walk")])
def test_every_view_registers_accurately_on_exact_depth(texture: str, kind: str) -> None:
    seq = render_sequence(texture, kind, 12)
    reg, err = _register(seq)
    assert sorted(reg.poses) == list(range(12)), reg.left_out
    assert err.max_rotation_deg <= 0.5, err.rotation_deg
    assert err.surface_median_m <= 0.01


@pytest.mark.slow
def test_model_like_depth_checker_orbit() -> None:
    seq = render_sequence("checker", "orbit", 12)
    reg, err = _register(seq, "model")
    assert len(reg.poses) == 12, reg.left_out
    assert err.max_rotation_deg <= 2.0, err.rotation_deg
    assert err.surface_median_m <= 0.05


def test_loop_closures_grow_with_the_path_not_with_the_number_of_photos() -> None:
    walk, orbit = trajectory_poses("walk", 48), trajectory_poses("orbit", 12)
    assert _motion(walk[0], walk[0]) == pytest.approx(0.0, abs=1e-6)
    assert _motion(orbit[0], orbit[3]) == pytest.approx(
        np.linalg.norm(orbit[0][:3, 3] - orbit[3][:3, 3]) + np.radians(rotation_error_deg(orbit[0], orbit[3]))
    )
    tw = _travel(list(range(48)), dict(enumerate(walk)))
    assert tw[0] == 0.0 and all(tw[k + 1] > tw[k] for k in range(47))
    # every photo of a sparse capture starts loop closures; of the same walk photographed 4x as densely,
    # about as many photos as of the sparse one, not 4x as many
    sparse = _loop_sources(list(range(12)), dict(enumerate(trajectory_poses("walk", 12))))
    assert sparse == list(range(12))
    assert _loop_sources(list(range(12)), dict(enumerate(orbit))) == list(range(12))
    dense = _loop_sources(list(range(48)), dict(enumerate(walk)))
    assert dense[0] == 0 and 12 <= len(dense) <= 24


@pytest.mark.slow
def test_a_view_of_bare_walls_is_placed_through_a_pair_that_pins_it() -> None:
    # a plain walk whose gaze swings back at view 9: the previous step (7 -> 8) predicts 8 -> 9 13 degrees
    # off, and 8 and 9 share only a wall and the floor, which leave 9 free to slide along the wall;
    # features and FPFH find nothing but the room's symmetric twins. ICP from the prediction finds the
    # rotation, the prediction gives the position along the wall, and view 3, which sees the corner that
    # 9 sees, pins it (9 was left out)
    from metrocli.synth.camera import intrinsics_for_lens
    from metrocli.synth.render import render
    from metrocli.synth.trajectories import textured_room

    walk = trajectory_poses("walk", 12)
    true_rel = [np.linalg.inv(a) @ b for a, b in ((walk[7], walk[8]), (walk[8], walk[9]))]
    assert rotation_error_deg(*true_rel) > 10.0
    rs = [render(textured_room("plain"), intrinsics_for_lens(480, 360, 26.0), walk[k]) for k in (3, 7, 8, 9)]
    frames = [Frame(f"walk_{n}", r.rgb, r.depth_m, r.intrinsics) for n, r in enumerate(rs)]
    reg = register_frames(frames)
    assert sorted(reg.poses) == [0, 1, 2, 3], reg.left_out
    err = pose_errors(
        [r.pose for r in rs], [r.depth_m for r in rs], [r.intrinsics for r in rs], reg.reference,
        reg.poses, reg.scales,
    )  # fmt: skip
    assert err.max_rotation_deg <= 0.5 and err.surface_median_m <= 0.01, err.rotation_deg
    pairs = {(p.i, p.j): p for p in reg.pairs}
    free = pairs[(2, 3)]  # 8 -> 9: refused, its pose kept for another pair to pin down
    assert not free.ok and free.free_directions is not None and len(free.free_directions) == 1
    assert rotation_error_deg(true_rel[1], free.transform) < 0.1
    assert pairs[(0, 3)].ok and pairs[(0, 3)].source.startswith("prediction")  # 3 -> 9 pins it


def test_free_directions_and_pinning() -> None:
    wall, floor = np.tile([1.0, 0.0, 0.0], (100, 1)), np.tile([0.0, 0.0, 1.0], (100, 1))
    free = free_directions(np.concatenate([wall, floor]))
    assert free.shape == (1, 3) and abs(free[0] @ [0.0, 1.0, 0.0]) == pytest.approx(1.0)
    assert pinning(np.concatenate([wall, floor]), free) == pytest.approx(0.0, abs=1e-12)
    side = np.tile([0.0, 1.0, 0.0], (20, 1))  # a door frame across the slide: 20 of 220 normals
    assert pinning(np.concatenate([wall, floor, side]), free) == pytest.approx(20 / 220)
    assert pinning(wall, np.zeros((0, 3))) == 1.0 and free_directions(wall[:3]).shape == (3, 3)


def test_edge_information_is_point_to_plane() -> None:
    import open3d as o3d

    from metrocli.geometry.pairs import plane_information

    # a wall (normal x) and the floor (normal z) fix neither a slide along their common line (y) nor
    # anything else Open3D's point-to-point information counts
    rng = np.random.default_rng(2)
    wall = np.c_[np.full(300, 2.0), rng.uniform(-1, 1, 300), rng.uniform(0, 1, 300)]
    floor = np.c_[rng.uniform(0, 2, 300), rng.uniform(-1, 1, 300), np.zeros(300)]
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.concatenate([wall, floor])))
    pcd.normals = o3d.utility.Vector3dVector(np.repeat([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], 300, axis=0))
    ev = o3d.pipelines.registration.evaluate_registration(pcd, pcd, 0.05, np.eye(4))
    info = plane_information(pcd, pcd, ev, np.eye(4))
    assert info.shape == (6, 6) and np.allclose(info, info.T)
    slide = np.r_[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # (rotation, translation): along y
    assert slide @ info @ slide == pytest.approx(0.0, abs=1e-9)
    assert np.r_[0.0, 0.0, 0.0, 1.0, 0.0, 0.0] @ info @ np.r_[0.0, 0.0, 0.0, 1.0, 0.0, 0.0] == pytest.approx(
        300
    )
    point = np.asarray(
        o3d.pipelines.registration.get_information_matrix_from_point_clouds(pcd, pcd, 0.05, np.eye(4))
    )
    assert slide @ point @ slide > 500  # what the pose graph used to be told


def test_model_depth_leaves_out_a_photo_that_only_geometry_links() -> None:
    from metrocli.geometry.posegraph import _solve_graph, _unconfirmed
    from metrocli.geometry.registration import PairRegistration

    def edge(i: int, j: int, support: int) -> PairRegistration:
        t = np.eye(4)
        t[0, 3] = 0.3 * (j - i)
        return PairRegistration(
            i, j, True, "", transform=t, n_inliers=support, consistency=0.98, overlap=0.5,
            information=100.0 * np.eye(6),
        )  # fmt: skip

    # 0-1-2 a triangle of feature-supported pairs; 1-3 only the geometry found (a plain room's twin?)
    pairs = [edge(0, 1, 40), edge(1, 2, 40), edge(0, 2, 40), edge(1, 3, 0)]
    assert [(p.i, p.j) for p in _unconfirmed(4, pairs)] == [(1, 3)]
    assert not _unconfirmed(4, [*pairs, edge(2, 3, 0)])  # a cycle confirms it
    assert not _unconfirmed(4, [*pairs[:3], edge(2, 3, 0)])  # neighbours in capture order are exempt
    comp, *_ = _solve_graph(4, pairs, True, 0.02, (3.0, 0.15))
    assert comp == [0, 1, 2]  # model depth: left out rather than risked
    comp, *_ = _solve_graph(4, pairs, False, 0.02, (1.5, 0.05))
    assert comp == [0, 1, 2, 3]  # exact depth: the dense check tells twins apart
