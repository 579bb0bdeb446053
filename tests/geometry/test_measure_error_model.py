"""The distance error model (issue 15): focal, depth and picking terms against Monte Carlo on rendered views.

The table lines end 1 cm inside the top (a few pixels at half size): picking errors stay on the table.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
import pytest

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.measure import (
    FOCAL_SIGMA_REL,
    MODEL_ERROR,
    ErrorModel,
    measure_lines,
    sensor_error,
)
from metrocli.synth.samples import SAMPLE_VIEWS, render_view, table_measurements

K = Intrinsics(200.0, 200.0, 120.0, 90.0, 240, 180, "user")


@functools.cache
def room_01() -> tuple[np.ndarray, Intrinsics, list[tuple[float, float, float, float]], list[float]]:
    """room_01 rendered at half its size: depth, intrinsics, the table's lines and true lengths."""
    scene, view = render_view(SAMPLE_VIEWS[0], scale=0.5, supersample=1)
    lines = table_measurements(scene, view)
    assert lines
    return (
        view.depth_m,
        view.intrinsics,
        [(*m["from_px"], *m["to_px"]) for m in lines],
        [m["true_m"] for m in lines],
    )


def test_focal_error_moves_lateral_and_depth_components_by_the_depth_source() -> None:
    depth = np.full((180, 240), 2.0, np.float32)
    lateral = [(20.0, 90.0, 220.0, 90.0)]  # both ends at the same depth: only x differs
    (model,) = measure_lines(
        depth, K, lateral, error=replace(MODEL_ERROR, scale_rel=0, local_rel=0), focal_sigma_rel=0.1
    )
    (sensor,) = measure_lines(depth, K, lateral, error=sensor_error(0.0), focal_sigma_rel=0.1)
    assert "focal" not in model.contributors  # model depth scales with f, X = (u - cx) Z / f does not change
    assert sensor.contributors["focal"] == pytest.approx(0.1 * sensor.distance_m)  # sensor: X scales with 1/f
    # a line mostly along the optical axis (a steep depth ramp): the other way round
    ramp = np.tile(np.linspace(1.0, 21.0, 240, dtype=np.float32), (180, 1))
    (m2,) = measure_lines(
        ramp, K, [(120.0, 90.0, 121.0, 90.0)], error=ErrorModel(kind="model"), focal_sigma_rel=0.1
    )
    (s2,) = measure_lines(
        ramp, K, [(120.0, 90.0, 121.0, 90.0)], error=ErrorModel(kind="sensor"), focal_sigma_rel=0.1
    )
    dx, dy, dz = np.subtract(m2.from_m, m2.to_m)
    assert m2.contributors["focal"] == pytest.approx(0.1 * dz**2 / m2.distance_m)
    assert s2.contributors["focal"] == pytest.approx(0.1 * (dx**2 + dy**2) / s2.distance_m)


def test_contributors_add_in_quadrature_to_sigma() -> None:
    depth = np.full((180, 240), 2.0, np.float32)
    (m,) = measure_lines(
        depth,
        K,
        [(20.0, 90.0, 220.0, 90.0)],
        error=sensor_error(0.001),
        focal_sigma_rel=0.01,
        picking_sigma_px=0.5,
    )
    assert m.sigma_m == m.uncertainty_m
    assert set(m.contributors) == {"focal", "picking", "quantisation"}
    assert m.contributors["focal"] > m.contributors["picking"] > m.contributors["quantisation"] > 0
    assert m.uncertainty_m == pytest.approx(math.sqrt(sum(v * v for v in m.contributors.values())))
    # without the issue 15 terms the uncertainty is the depth model's alone (issue 9's behaviour)
    (plain,) = measure_lines(depth, K, [(20.0, 90.0, 220.0, 90.0)], error=sensor_error(0.001))
    assert set(plain.contributors) == {"quantisation"}
    assert plain.uncertainty_m == pytest.approx(m.contributors["quantisation"])


def _monte_carlo(kind: str, focal_sigma: float, picking_px: float, scale_rel: float, n: int = 400) -> tuple:
    depth, k, lines, _ = room_01()
    rng = np.random.default_rng(3)
    samples = []
    for _ in range(n):
        delta = rng.normal(0.0, focal_sigma)
        f = k.fx * math.exp(delta)
        kk = Intrinsics(f, f, k.cx, k.cy, k.width, k.height, "user")
        d = depth
        if kind == "model":  # model depth follows the focal length it is computed with, plus a scale error
            d = depth * np.float32(math.exp(delta) * (1.0 + rng.normal(0.0, scale_rel)))
        moved = [tuple(np.asarray(line) + rng.normal(0.0, picking_px, 4)) for line in lines]
        samples.append([m.distance_m for m in measure_lines(d, kk, moved)])
    error = ErrorModel(scale_rel=scale_rel, kind="model") if kind == "model" else sensor_error(0.0)
    predicted = [
        m.uncertainty_m
        for m in measure_lines(
            depth, k, lines, error=error, focal_sigma_rel=focal_sigma, picking_sigma_px=picking_px
        )
    ]
    # Robust spread (1.4826 MAD): a picked point that slips off the table top is a blunder, not in the model.
    arr = np.asarray(samples)
    robust = 1.4826 * np.median(np.abs(arr - np.median(arr, axis=0)), axis=0)
    return robust, np.asarray(predicted)


@pytest.mark.parametrize(
    ("kind", "focal_sigma", "picking_px", "scale_rel"),
    [
        ("sensor", 0.05, 0.0, 0.0),
        ("sensor", 0.0, 0.3, 0.0),
        ("model", 0.05, 0.3, 0.03),
        ("sensor", 0.02, 0.3, 0.0),
    ],
)
def test_propagated_sigma_matches_monte_carlo_on_a_rendered_room(
    kind: str, focal_sigma: float, picking_px: float, scale_rel: float
) -> None:
    observed, predicted = _monte_carlo(kind, focal_sigma, picking_px, scale_rel)
    np.testing.assert_allclose(predicted, observed, rtol=0.2)


def test_default_focal_sigma_covers_the_true_error_with_exact_depth() -> None:
    """README's example: room_01 with exact depth but the 65 degree default focal length."""
    from metrocli.camera.focal import default_focal_px

    depth, k, lines, true = room_01()
    f = default_focal_px(k.width, k.height)
    k65 = Intrinsics(f, f, k.cx, k.cy, k.width, k.height, "default")
    ms = measure_lines(
        depth, k65, lines, error=sensor_error(0.001), focal_sigma_rel=FOCAL_SIGMA_REL["default"]
    )
    for m, t in zip(ms, true, strict=True):
        assert abs(m.distance_m - t) > 0.005  # the default focal length is really off
        assert abs(m.distance_m - t) <= 2 * m.uncertainty_m
    # half-size render: a quarter pixel here is the default half pixel of the full-size photo
    exif = measure_lines(
        depth,
        k,
        lines,
        error=sensor_error(0.001),
        focal_sigma_rel=FOCAL_SIGMA_REL["exif-focal-plane"],
        picking_sigma_px=0.25,
    )
    for m, t in zip(exif, true, strict=True):
        assert m.uncertainty_m < 0.01  # millimetre level
        assert abs(m.distance_m - t) <= 2 * m.uncertainty_m + 0.002
