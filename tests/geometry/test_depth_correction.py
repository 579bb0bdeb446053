"""Per-photo smooth depth correction refined jointly with poses and scales (model depth, issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from metrocli.geometry.depth_correction import (
    CORRECTION_TERMS,
    correction_basis,
    correction_field,
    correction_rms,
    refine_jointly,
)
from metrocli.synth.trajectories import render_sequence, rotation_error_deg

#: known fields (log-coefficients of x, y, x^2 - 1/3, y^2 - 1/3, xy) of the three photos
TRUE = {
    0: (0.01, -0.01, 0.01, 0.0, 0.0),
    1: (-0.015, 0.005, 0.0, 0.01, 0.01),
    2: (0.01, 0.01, -0.01, 0.0, -0.01),
    3: (0.0, -0.01, 0.0, -0.01, 0.01),
}
EDGES = [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3)]


def test_field_is_one_without_coefficients_and_centred() -> None:
    assert np.array_equal(correction_field(None, (6, 8)), np.ones((6, 8), np.float32))
    assert np.allclose(correction_field(np.zeros(len(CORRECTION_TERMS)), (6, 8, 3)), 1.0)
    assert correction_rms(None, (6, 8)) == 0.0
    v, u = np.mgrid[0:300, 0:400]
    phi = correction_basis(u.ravel(), v.ravel(), 400, 300)
    assert phi.shape == (300 * 400, 5)
    np.testing.assert_allclose(phi.mean(axis=0), 0.0, atol=1e-4)  # no constant: the scale holds it
    field = correction_field(np.array([0.02, 0, 0, 0, 0]), (300, 400))
    assert field[:, 0].mean() < 0.99 < 1.01 < field[:, -1].mean()  # x grows to the right
    assert correction_rms(np.array([0.02, 0, 0, 0, 0]), (300, 400)) == pytest.approx(
        0.02 / np.sqrt(3), rel=0.02
    )


def _views(distorted: bool):
    seq = render_sequence("rich", "orbit", 16, width=240, height=180)
    views = [seq.renders[k] for k in (0, 1, 2, 3)]
    ref = np.linalg.inv(views[0].pose)
    truth = {k: ref @ r.pose for k, r in enumerate(views)}
    depths = {
        k: r.depth_m * (correction_field(np.array(TRUE[k]), r.depth_m.shape) if distorted else 1.0)
        for k, r in enumerate(views)
    }
    return views, truth, depths


def _moved(pose: np.ndarray, deg: float, axis: int) -> np.ndarray:
    out = pose.copy()
    out[:3, :3] = Rotation.from_rotvec(np.radians(deg) * np.eye(3)[axis]).as_matrix() @ pose[:3, :3]
    return out


def test_joint_refinement_recovers_a_known_field_and_the_poses() -> None:
    views, truth, depths = _views(distorted=True)
    intr = {k: r.intrinsics for k, r in enumerate(views)}
    start = {0: truth[0], 1: _moved(truth[1], 1.5, 1), 2: _moved(truth[2], -1.5, 0), 3: truth[3]}
    # the depth distorted by TRUE: the correction that undoes it is -TRUE
    fit = refine_jointly(depths, intr, start, dict.fromkeys(range(4), 1.0), EDGES, 0, stride=4)
    assert fit.rms_after_m < 0.1 * fit.rms_before_m
    for k in (1, 2, 3):  # 1 and 2 started 1.5 degrees off; a short arc leaves a tilt nearly free
        assert rotation_error_deg(fit.poses[k], truth[k]) < 0.75, k
    # the field as the depth sees it: what the correction removes, up to the photo's scale
    for k in range(4):
        log_err = np.log(depths[k] * correction_field(fit.coefficients[k], depths[k].shape) * fit.scales[k])
        log_err -= np.log(np.where(views[k].depth_m > 0, views[k].depth_m, 1.0))
        ok = views[k].depth_m > 0
        before = np.log(correction_field(np.array(TRUE[k]), depths[k].shape))[ok]
        assert np.std(log_err[ok]) < 0.35 * np.std(before), k


def test_joint_refinement_started_at_the_true_poses_stays_there() -> None:
    """The ridge only holds what no edge observes: a stronger one (0.005) held back the correction and turned
    the poses by 0.3-0.45 degrees away from the truth to make up for it."""
    views, truth, depths = _views(distorted=True)
    intr = {k: r.intrinsics for k, r in enumerate(views)}
    fit = refine_jointly(depths, intr, truth, dict.fromkeys(range(4), 1.0), EDGES, 0, stride=4)
    for k in (1, 2, 3):
        assert rotation_error_deg(fit.poses[k], truth[k]) < 0.05, k


def test_joint_refinement_is_identity_on_exact_depth() -> None:
    views, truth, depths = _views(distorted=False)
    intr = {k: r.intrinsics for k, r in enumerate(views)}
    fit = refine_jointly(depths, intr, truth, dict.fromkeys(range(4), 1.0), EDGES, 0, stride=4)
    for k in range(4):
        assert np.abs(fit.coefficients[k]).max() < 2e-3, fit.coefficients[k]
        assert rotation_error_deg(fit.poses[k], truth[k]) < 0.05
        assert fit.scales[k] == pytest.approx(1.0, abs=2e-3)


def test_feature_matches_fix_the_turns_of_a_pan() -> None:
    """A pure pan: a photo's turn and a tilt of its depth explain the shared surfaces about equally well;
    the features' reprojection tells them apart."""
    from metrocli.geometry.registration import detect_features, match_features
    from metrocli.synth.camera import intrinsics_for_lens
    from metrocli.synth.render import render
    from metrocli.synth.trajectories import textured_room, trajectory_poses

    # four neighbouring views of a 16-view pan, at full size (the features need it)
    pan = trajectory_poses("pan", 16)
    views = [render(textured_room("rich"), intrinsics_for_lens(480, 360, 26.0), pan[k]) for k in range(4)]
    ref = np.linalg.inv(views[0].pose)
    truth = {k: ref @ r.pose for k, r in enumerate(views)}
    depths = {
        k: r.depth_m * correction_field(np.array(TRUE[k]), r.depth_m.shape) for k, r in enumerate(views)
    }
    intr = {k: r.intrinsics for k, r in enumerate(views)}
    start = {
        0: truth[0],
        1: _moved(truth[1], 1.5, 1),
        2: _moved(truth[2], -1.5, 0),
        3: _moved(truth[3], 1.0, 2),
    }
    feats = {k: detect_features(r.rgb) for k, r in enumerate(views)}
    matches = {}
    for a, b in EDGES:
        m = match_features(feats[a], feats[b])
        matches[(a, b)] = (feats[a].keypoints_px[m[:, 0]], feats[b].keypoints_px[m[:, 1]])
    errors = {}
    for name, given in (("surfaces", None), ("features", matches)):
        fit = refine_jointly(depths, intr, start, dict.fromkeys(range(4), 1.0), EDGES, 0, matches=given)
        errors[name] = max(rotation_error_deg(fit.poses[k], truth[k]) for k in range(4))
    assert errors["features"] < 0.3, errors
    assert errors["features"] < 0.5 * errors["surfaces"]
