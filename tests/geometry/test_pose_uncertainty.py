"""Pose uncertainty from the whole pose graph: chains grow, loops shrink, free directions are infinite."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from metrocli.geometry.pose_uncertainty import (
    VERIFIED_TRANSLATION_M,
    adjoint,
    edge_information,
    floored_information,
    graph_pose_sigmas,
)


def _twist_matrix(xi: np.ndarray) -> np.ndarray:
    """4x4 matrix of a twist (rotation, translation) for expm."""
    w, v = xi[:3], xi[3:]
    m = np.zeros((4, 4))
    m[:3, :3] = [[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]
    m[:3, 3] = v
    return m


def _pose(rot_z_deg: float = 0.0, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    c, s = np.cos(np.radians(rot_z_deg)), np.sin(np.radians(rot_z_deg))
    out = np.eye(4)
    out[:2, :2] = [[c, -s], [s, c]]
    out[:3, 3] = t
    return out


def test_adjoint_moves_a_perturbation_through_a_transform() -> None:
    rng = np.random.default_rng(0)
    t = expm(_twist_matrix(rng.normal(size=6)))
    xi = 1e-3 * rng.normal(size=6)
    lhs = t @ expm(_twist_matrix(xi)) @ np.linalg.inv(t)
    np.testing.assert_allclose(lhs, expm(_twist_matrix(adjoint(t) @ xi)), atol=1e-9)


def _info(rot_sigma_deg: float, trans_sigma_m: float) -> np.ndarray:
    return np.diag([np.radians(rot_sigma_deg) ** -2] * 3 + [trans_sigma_m**-2] * 3)


def test_one_edge_gives_its_own_sigma_and_the_lever_arm() -> None:
    poses = {0: np.eye(4), 1: _pose(10.0, (0.0, 0.0, 0.0))}
    sig = graph_pose_sigmas(poses, [(0, 1, _info(0.5, 0.01))], reference=0)
    assert sig[0] == (0.0, 0.0)
    assert sig[1][0] == pytest.approx(0.5, rel=1e-6) and sig[1][1] == pytest.approx(0.01, rel=1e-6)
    # a camera 2 m from the reference: its centre also moves by the rotation's uncertainty times 2 m
    far = {0: np.eye(4), 1: _pose(0.0, (2.0, 0.0, 0.0))}
    rot, pos = graph_pose_sigmas(far, [(0, 1, _info(0.5, 0.01))], reference=0)[1]
    assert rot == pytest.approx(0.5, rel=1e-6)
    assert pos == pytest.approx(np.hypot(0.01, 2.0 * np.radians(0.5)), rel=1e-3)


def test_a_chain_grows_and_a_loop_closure_shrinks() -> None:
    poses = {k: _pose(30.0 * k, (np.cos(k), np.sin(k), 0.0)) for k in range(6)}
    chain = [(k, k + 1, _info(0.2, 0.005)) for k in range(5)]
    sig = graph_pose_sigmas(poses, chain, reference=0)
    rots = [sig[k][0] for k in range(1, 6)]
    assert rots == sorted(rots) and rots[-1] == pytest.approx(0.2 * np.sqrt(5), rel=1e-6)
    closed = graph_pose_sigmas(poses, [*chain, (5, 0, _info(0.2, 0.005))], reference=0)
    assert closed[5][0] < 0.5 * sig[5][0]
    assert closed[3][0] < sig[3][0]


def test_a_direction_no_edge_sees_is_infinite_and_a_floor_keeps_it_so() -> None:
    wall = _info(0.1, 0.002)
    wall[3, 3] = 0.0  # a plane facing x... slides along x freely
    floored = floored_information(wall)
    assert floored[3, 3] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.linalg.eigvalsh(floored) >= -1e-6)
    poses = {0: np.eye(4), 1: _pose(5.0), 2: _pose(10.0)}
    sig = graph_pose_sigmas(poses, [(0, 1, floored), (1, 2, _info(0.1, 0.002))], reference=0)
    assert sig[1] == (np.inf, np.inf) and sig[2] == (np.inf, np.inf)
    # not connected at all
    assert graph_pose_sigmas(poses, [(0, 1, _info(0.1, 0.002))], reference=0)[2] == (np.inf, np.inf)


def test_the_floor_bounds_what_thousands_of_points_claim() -> None:
    huge = _info(0.001, 0.00001)  # what a dense cloud's information says
    poses = {0: np.eye(4), 1: _pose(5.0)}
    raw = graph_pose_sigmas(poses, [(0, 1, huge)], reference=0)[1]
    floored = graph_pose_sigmas(poses, [(0, 1, floored_information(huge, 0.1, 0.005))], reference=0)[1]
    assert raw[0] == pytest.approx(0.001, rel=1e-3)
    assert floored[0] == pytest.approx(np.hypot(0.001, 0.1), rel=1e-3)
    assert floored[1] == pytest.approx(np.hypot(0.00001, 0.005), rel=1e-3)


def test_verification_pins_what_the_surfaces_leave_free() -> None:
    """A wall leaves a slide free in the ICP information; the verified pair still pins it to about
    VERIFIED_TRANSLATION_M, so a photo between two such pairs is not reported at hundreds of metres."""
    wall = _info(0.05, 0.001)
    wall[3, 3] = 0.0
    poses = {0: np.eye(4), 1: _pose(5.0)}
    rot, pos = graph_pose_sigmas(poses, [(0, 1, edge_information(wall))], reference=0)[1]
    assert pos == pytest.approx(VERIFIED_TRANSLATION_M, rel=0.05)
    assert rot < 0.25
