"""Registration: Umeyama, RANSAC, keypoint lifting, match graph, scales, pose graph, pairwise on renders."""

from __future__ import annotations

import numpy as np
import pytest

from metrocli.camera.intrinsics import centred
from metrocli.errors import ReconstructionError
from metrocli.geometry.posegraph import (
    Edge,
    connected_components,
    largest_component,
    optimise_poses,
    reference_scale,
    register_frames,
    solve_scales,
    spanning_tree_poses,
    tree_edges,
)
from metrocli.geometry.registration import (
    Frame,
    cloud_pyramid,
    detect_features,
    icp_refine,
    lift_keypoints,
    ransac_similarity,
    register_features,
    umeyama,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def rigid(rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = t
    return m


@pytest.mark.parametrize("with_scale", [False, True])
def test_umeyama_recovers_exact_similarity(with_scale: bool) -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    rot, t = random_rotation(rng), rng.normal(size=3)
    s = 1.37 if with_scale else 1.0
    dst = s * src @ rot.T + t
    sim = umeyama(src, dst, with_scale=with_scale)
    assert sim.scale == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(sim.rotation, rot, atol=1e-9)
    np.testing.assert_allclose(sim.translation, t, atol=1e-9)
    np.testing.assert_allclose(sim.apply(src), dst, atol=1e-9)
    assert np.linalg.det(sim.rotation) == pytest.approx(1.0)


def test_umeyama_rejects_too_few_points() -> None:
    with pytest.raises(ValueError):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))


def test_ransac_ignores_outliers_and_finds_scale() -> None:
    rng = np.random.default_rng(2)
    src = rng.uniform(-2, 2, size=(200, 3)) + np.array([0.0, 0.0, 4.0])
    rot, t = random_rotation(rng), np.array([0.3, -0.2, 0.5])
    dst = 0.92 * src @ rot.T + t + rng.normal(scale=0.002, size=src.shape)
    bad = rng.choice(200, 80, replace=False)  # 40 % outliers
    dst[bad] = rng.uniform(-3, 3, size=(80, 3))
    res = ransac_similarity(src, dst, with_scale=True, seed=0)
    truth = np.ones(200, bool)
    truth[bad] = False
    assert res.transform.scale == pytest.approx(0.92, rel=2e-3)
    np.testing.assert_allclose(res.transform.rotation, rot, atol=3e-3)
    assert (res.inliers & truth).sum() >= 115
    assert (res.inliers & ~truth).sum() <= 3
    rigid_res = ransac_similarity(src, dst, with_scale=False, seed=0)
    assert rigid_res.transform.scale == 1.0
    assert rigid_res.n_inliers < res.n_inliers  # an 8 % scale error cannot be absorbed by a rigid motion


def test_lift_keypoints_backprojects_and_rejects_edges() -> None:
    intr = centred(40, 30, 50.0, "user")
    depth = np.full((30, 40), 2.0, np.float32)
    depth[:, 20:] = 4.0  # occlusion edge between columns 19 and 20
    depth[0:3, 0:3] = 0.0  # a hole
    kp = np.array([[10.0, 15.0], [19.0, 15.0], [30.0, 10.0], [1.0, 1.0], [25.2, 5.4]])
    pts, valid = lift_keypoints(kp, depth, intr)
    assert valid.tolist() == [True, False, True, False, True]
    np.testing.assert_allclose(pts[0], [(10 - 20) * 2 / 50, (15 - 15) * 2 / 50, 2.0])
    np.testing.assert_allclose(pts[2], [(30 - 20) * 4 / 50, (10 - 15) * 4 / 50, 4.0])


def test_connected_components_and_largest() -> None:
    comps = connected_components(7, [(0, 1), (2, 3), (3, 4), (5, 6), (4, 2)])
    assert comps == [[2, 3, 4], [0, 1], [5, 6]]
    assert largest_component(4, [(0, 1), (2, 3)]) == [0, 1]  # ties: the one with the lowest node
    assert largest_component(3, []) == [0]


def test_solve_scales_is_relative_to_the_reference() -> None:
    truth = {0: 1.0, 1: 0.9, 2: 1.1, 3: 1.05}
    edges = [Edge(i, j, np.eye(4), truth[j] / truth[i], 10.0) for i, j in [(0, 1), (1, 2), (2, 3), (0, 3)]]
    scales = solve_scales([0, 1, 2, 3], edges, reference=1)
    for k in truth:
        assert scales[k] == pytest.approx(truth[k] / truth[1], rel=1e-9)


def test_reference_scale_is_the_majoritys_by_default() -> None:
    # five photos agree within 1 %, one (the first) has a model scale 30 % off
    scales = [1.3, 1.0, 1.01, 0.99, 1.005, 0.995]
    assert reference_scale(scales, "median") == pytest.approx(1.0, abs=0.006)
    assert reference_scale(scales, "mean") == pytest.approx(np.exp(np.mean(np.log(scales))))
    assert reference_scale(scales, "first") == 1.3
    from metrocli.pipeline.multiview import MultiviewOptions

    assert MultiviewOptions().scale_reference == "median"


def test_pose_graph_spreads_loop_error() -> None:
    rng = np.random.default_rng(3)
    poses = {0: np.eye(4)}
    for k in range(1, 4):
        poses[k] = rigid(random_rotation(rng) * 1.0, rng.normal(size=3))
    edges = []
    for i, j in [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3)]:
        t_ij = np.linalg.inv(poses[i]) @ poses[j]
        noisy = t_ij.copy()
        noisy[:3, 3] += rng.normal(scale=0.01, size=3)
        edges.append(Edge(i, j, noisy, 1.0, 100.0, np.eye(6) * 100.0))
    init = spanning_tree_poses([0, 1, 2, 3], edges, 0)
    opt, pruned = optimise_poses([0, 1, 2, 3], edges, 0, init, max_correspondence_m=0.05)
    assert pruned == []
    np.testing.assert_allclose(opt[0], np.eye(4), atol=1e-9)
    for k in range(1, 4):
        assert np.linalg.norm(opt[k][:3, 3] - poses[k][:3, 3]) < 0.03


@pytest.fixture(scope="module")
def room_renders():
    from metrocli.synth.multiview import render_views

    return render_views(320, 240)


def _frames(renders, factors=None):
    from metrocli.synth.multiview import ROOM_VIEWS

    factors = np.ones(len(renders)) if factors is None else factors
    return [
        Frame(v.name, r.rgb, (r.depth_m * f).astype(np.float32), r.intrinsics)
        for v, r, f in zip(ROOM_VIEWS, renders, factors, strict=True)
    ]


def _true_relative(renders, i: int, j: int) -> np.ndarray:
    return np.linalg.inv(renders[i].pose) @ renders[j].pose


def test_pair_registration_on_rendered_photos_with_scale(room_renders) -> None:
    frames = _frames(room_renders, [1.0, 1.0, 0.93, 1.0, 1.0, 1.0])
    fi, fj = (detect_features(frames[k].rgb) for k in (0, 2))
    pair = register_features(0, 2, frames[0], frames[2], fi, fj, with_scale=True)
    assert pair.ok, pair.reason
    assert pair.scale == pytest.approx(1 / 0.93, rel=0.01)
    truth = _true_relative(room_renders, 0, 2)
    assert np.linalg.norm(pair.transform[:3, 3] - truth[:3, 3]) < 0.05
    # ICP on the rescaled clouds lands within a centimetre
    fine_j = cloud_pyramid(frames[2], scale=pair.scale, voxel_m=0.03)
    fine_i = cloud_pyramid(frames[0], voxel_m=0.03)
    res = icp_refine(fine_j, fine_i, pair.transform, voxel_m=0.03)
    assert np.linalg.norm(res.transform[:3, 3] - truth[:3, 3]) < 0.01
    assert res.fitness > 0.3
    assert res.information.shape == (6, 6)


def test_pair_without_overlap_is_refused(room_renders) -> None:
    frames = _frames(room_renders)
    rng = np.random.default_rng(0)
    noise = Frame(
        "noise",
        rng.integers(0, 255, frames[0].rgb.shape, dtype=np.uint8),
        frames[0].depth_m,
        frames[0].intrinsics,
    )
    pair = register_features(
        0, 1, frames[0], noise, detect_features(frames[0].rgb), detect_features(noise.rgb)
    )
    assert not pair.ok
    assert "match" in pair.reason


def test_register_frames_leaves_out_unrelated_photo(room_renders) -> None:
    frames = _frames(room_renders)[:3]
    rng = np.random.default_rng(1)
    noise = Frame(
        "noise.jpg",
        rng.integers(0, 255, frames[0].rgb.shape, dtype=np.uint8),
        frames[0].depth_m,
        frames[0].intrinsics,
    )
    reg = register_frames([noise, *frames])
    assert set(reg.poses) == {1, 2, 3}
    assert reg.reference == 1  # the first photo of the connected part
    assert list(reg.left_out) == [0]
    assert "no overlap" in reg.left_out[0]
    for k in (2, 3):
        truth = _true_relative(room_renders, 0, k - 1)
        assert np.linalg.norm(reg.poses[k][:3, 3] - truth[:3, 3]) < 0.02


def test_register_frames_needs_overlap() -> None:
    rng = np.random.default_rng(2)
    intr = centred(64, 48, 60.0, "user")
    frames = [
        Frame(
            f"n{k}",
            rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
            np.full((48, 64), 2.0, np.float32),
            intr,
        )
        for k in range(2)
    ]
    with pytest.raises(ReconstructionError, match="overlap"):
        register_frames(frames)
    with pytest.raises(ReconstructionError, match="at least 2"):
        register_frames(frames[:1])


def test_initial_poses_follow_the_certain_tree_edges_on_ties() -> None:
    # Every edge has the same weight and the loop is inconsistent: any of three trees is a maximum one,
    # and the initial poses must be chained along exactly the edges marked certain in the pose graph.
    rng = np.random.default_rng(5)
    edges = [
        Edge(i, j, rigid(random_rotation(rng), rng.normal(size=3)), 1.0, 7.0)
        for i, j in [(0, 1), (1, 2), (2, 0), (2, 3)]
    ]
    tree = tree_edges([0, 1, 2, 3], edges, 0)
    assert len(tree) == 3 and (2, 3) in tree
    poses = spanning_tree_poses([0, 1, 2, 3], edges, 0)
    for e in edges:
        if (e.i, e.j) in tree:
            np.testing.assert_allclose(poses[e.j], poses[e.i] @ e.transform, atol=1e-9)
    with pytest.raises(ValueError, match="not connected"):
        spanning_tree_poses([0, 1, 4], edges, 0)
