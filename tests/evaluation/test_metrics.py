"""Depth and normal metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metrocli.evaluation.metrics import (
    DEPTH_METRICS,
    angular_error_deg,
    crop_mask,
    depth_metrics,
    mean_metrics,
    normal_metrics,
)


def test_depth_metrics_hand_computed() -> None:
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # last pixel: no ground truth
    pred = np.array([[1.1, 1.6], [5.0, 3.0]])
    m = depth_metrics(pred, gt, max_depth_m=10.0)
    # valid: (1.0, 1.1), (2.0, 1.6), (4.0, 5.0)
    assert m["valid_pixels"] == 3
    assert m["abs_rel"] == pytest.approx((0.1 / 1 + 0.4 / 2 + 1.0 / 4) / 3)  # 0.183333
    assert m["sq_rel"] == pytest.approx((0.01 / 1 + 0.16 / 2 + 1.0 / 4) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0.01 + 0.16 + 1.0) / 3))  # 0.6245
    assert m["log10"] == pytest.approx(
        (abs(math.log10(1.1)) + abs(math.log10(0.8)) + abs(math.log10(1.25))) / 3
    )
    assert m["rmse_log"] == pytest.approx(
        math.sqrt((math.log(1.1) ** 2 + math.log(0.8) ** 2 + math.log(1.25) ** 2) / 3)
    )
    # ratios max(p/g, g/p): 1.1, 1.25, 1.25 -> strict "< 1.25" counts only the first
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == 1.0 and m["delta3"] == 1.0


def test_depth_metrics_perfect_prediction() -> None:
    gt = np.linspace(0.5, 9.5, 100).reshape(10, 10)
    m = depth_metrics(gt.copy(), gt, max_depth_m=10.0)
    assert m["abs_rel"] == 0 and m["rmse"] == 0 and m["log10"] == 0
    assert m["delta1"] == m["delta2"] == m["delta3"] == 1.0


def test_depth_caps_and_prediction_clipping() -> None:
    gt = np.array([0.0005, 0.5, 9.0, 10.0, 50.0, np.nan])
    pred = np.array([1.0, 0.0, 100.0, 1.0, 1.0, 1.0])
    m = depth_metrics(pred, gt, min_depth_m=1e-3, max_depth_m=10.0)
    # only gt 0.5 and 9.0 are inside (1e-3, 10); predictions clipped to [1e-3, 10] -> 0.001 and 10
    assert m["valid_pixels"] == 2
    assert m["abs_rel"] == pytest.approx((abs(0.001 - 0.5) / 0.5 + 1.0 / 9.0) / 2)
    assert m["delta3"] == pytest.approx(0.5)  # 10 / 9 < 1.25, 0.5 / 0.001 is not
    masked = depth_metrics(pred, gt, max_depth_m=10.0, mask=np.array([0, 0, 1, 0, 0, 0], bool))
    assert masked["valid_pixels"] == 1 and masked["abs_rel"] == pytest.approx(1 / 9)


def test_depth_metrics_nan_prediction_and_empty() -> None:
    m = depth_metrics(np.array([np.nan]), np.array([2.0]), min_depth_m=0.5, max_depth_m=10.0)
    assert m["abs_rel"] == pytest.approx(0.75)  # NaN counts as the minimum depth
    empty = depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    assert empty["valid_pixels"] == 0 and all(math.isnan(empty[k]) for k in DEPTH_METRICS)
    with pytest.raises(ValueError, match="shape"):
        depth_metrics(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="min_depth"):
        depth_metrics(np.ones(2), np.ones(2), min_depth_m=5, max_depth_m=1)


def test_angular_error_hand_computed() -> None:
    gt = np.array([[[0, 0, -1], [0, 0, -1], [0, 0, -1], [1, 0, 0], [0, 0, 0]]], float)
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    pred = np.array([[[0, 0, -1], [s, 0, -c], [0, 0, 1], [0, 2, 0], [0, 0, 1]]], float)
    angle, valid = angular_error_deg(pred, gt)
    np.testing.assert_array_equal(valid, [[True, True, True, True, False]])
    np.testing.assert_allclose(angle[0, :4], [0, 10, 180, 90], atol=1e-6)
    m = normal_metrics(pred, gt)
    assert m["valid_pixels"] == 4
    assert m["mean_deg"] == pytest.approx(70.0) and m["median_deg"] == pytest.approx(50.0)
    assert m["rmse_deg"] == pytest.approx(math.sqrt((0 + 100 + 180**2 + 90**2) / 4))
    assert m["within_11_25"] == 0.5 and m["within_22_5"] == 0.5 and m["within_30"] == 0.5


def test_normal_metrics_ignore_nan_ground_truth() -> None:
    gt = np.full((2, 2, 3), np.nan)
    gt[0, 0] = (0, 0, -1)
    pred = np.zeros((2, 2, 3))
    pred[..., 2] = -1
    m = normal_metrics(pred, gt)
    assert m["valid_pixels"] == 1 and m["mean_deg"] == 0 and m["within_11_25"] == 1.0


def test_mean_metrics_weighs_frames_equally_and_skips_nan() -> None:
    rows = [{"abs_rel": 0.1, "rmse": 1.0}, {"abs_rel": 0.3, "rmse": math.nan}, {"rmse": 3.0}]
    m = mean_metrics(rows, ["abs_rel", "rmse", "log10"])
    assert m["abs_rel"] == pytest.approx(0.2) and m["rmse"] == pytest.approx(2.0) and math.isnan(m["log10"])


def test_crop_masks() -> None:
    eigen = crop_mask((480, 640), "eigen")
    assert eigen.sum() == (471 - 45) * (601 - 41)
    assert eigen[45, 41] and eigen[470, 600] and not eigen[44, 41] and not eigen[45, 601]
    garg = crop_mask((375, 1242), "garg")
    rows, cols = np.nonzero(garg)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (153, 370, 44, 1196)
    assert crop_mask((3, 4), "none").all()
    assert crop_mask((240, 320), "eigen").sum() == (236 - 22) * (300 - 20)  # scaled with the frame
    with pytest.raises(ValueError, match="unknown crop"):
        crop_mask((3, 4), "square")  # type: ignore[arg-type]
