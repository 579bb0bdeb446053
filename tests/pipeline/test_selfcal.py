"""``--focal auto`` glue (metrocli.pipeline.selfcal) on metrocli.synth renders, and with the model."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
import pytest

from metrocli.camera.intrinsics import centred
from metrocli.errors import MetroUsageError
from metrocli.pipeline.provider import FocalMode, SensorDepth, check_photo_focal
from metrocli.pipeline.selfcal import (
    apply_focal,
    focal_check,
    self_calibrate_prediction,
    self_calibrated_prediction,
)
from metrocli.prediction import Prediction


@pytest.fixture(scope="module")
def rendered():
    """A synth room view (26 mm equivalent, 640 x 480) with exact depth and normals."""
    from metrocli.synth import intrinsics_for_lens, look_at, render, room_scene

    k = intrinsics_for_lens(640, 480, 26)
    view = render(room_scene(), k, look_at((1.0, 0.45, 1.55), (2.0, 2.9, 0.65)))
    return view


def model_like_prediction(view, assumed_focal_px: float) -> Prediction:
    """What the model would return when run with a wrong focal length: depth proportional to it."""
    k = view.intrinsics
    hit = view.depth_m > 0
    depth = np.where(hit, view.depth_m * (assumed_focal_px / k.fx), 0.0).astype(np.float32)
    normal = np.where(hit[..., None], view.normal, np.nan).astype(np.float32)
    return Prediction(
        depth=depth,
        normal=normal,
        confidence=hit.astype(np.float32),
        normal_confidence=np.full(depth.shape, 5.0, np.float32),
        intrinsics=centred(k.width, k.height, assumed_focal_px, "default"),
        model="vit-small",
    )


def test_apply_focal_rescales_depth_and_intrinsics(rendered) -> None:
    pred = model_like_prediction(rendered, 500.0)
    out = apply_focal(pred, 600.0, "self-calibrated")
    assert out.intrinsics.fx == out.intrinsics.fy == 600.0
    assert out.intrinsics.focal_source == "self-calibrated"
    assert (out.intrinsics.cx, out.intrinsics.cy) == (pred.intrinsics.cx, pred.intrinsics.cy)
    np.testing.assert_allclose(out.depth, pred.depth * 1.2, rtol=1e-6)
    assert out.normal is pred.normal
    with pytest.raises(MetroUsageError):
        apply_focal(pred, -1.0, "user")


@pytest.mark.parametrize("assumed", [350.0, 900.0])
def test_self_calibrated_prediction_recovers_focal_and_metric_depth(rendered, assumed: float) -> None:
    true_k = rendered.intrinsics
    pred = model_like_prediction(rendered, assumed)
    out = self_calibrated_prediction(pred)
    assert abs(out.prediction.intrinsics.fx / true_k.fx - 1) < 0.02
    assert out.prediction.intrinsics.focal_source == "self-calibrated"
    assert out.selfcal.focal_source == "self-calibrated" and not out.selfcal.fallback
    hit = rendered.depth_m > 0
    ratio = out.prediction.depth[hit] / rendered.depth_m[hit]
    assert abs(float(np.median(ratio)) - 1) < 0.02
    d = out.to_dict()
    assert d["intrinsics"]["focal_source"] == "self-calibrated"
    assert d["photo_focal_px"] == assumed and d["selfcal"]["warning"] is None


def test_flat_wall_falls_back_to_photo_intrinsics_with_warning(caplog) -> None:
    h, w = 480, 640
    k = centred(w, h, 500.0, "default")
    depth = np.full((h, w), 2.0, np.float32)  # fronto-parallel wall
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = -1.0
    pred = Prediction(depth, normal, np.ones((h, w), np.float32), None, k, model="vit-small")
    exif = centred(w, h, 450.0, "exif-35mm")
    with caplog.at_level(logging.WARNING, logger="metrocli.pipeline.selfcal"):
        out = self_calibrated_prediction(pred, exif)
    assert out.selfcal.objective_flat and out.selfcal.fallback
    assert out.prediction.intrinsics.fx == 450.0
    assert out.prediction.intrinsics.focal_source == "exif-35mm"
    np.testing.assert_allclose(out.prediction.depth, 1.8, rtol=1e-6)
    assert any("flat" in r.getMessage() for r in caplog.records)
    check = focal_check(exif, out.selfcal)
    assert math.isnan(check.ratio) and not check.is_off
    assert "inconclusive" in check.message


def test_focal_auto_messages_never_contradict_each_other(rendered, tmp_path, caplog) -> None:
    """Issue 15: a trusted self-calibration is not accompanied by "METRIC SCALE IS UNRELIABLE"; a fallback to
    the 65 degree default says so once, with the reason."""
    from PIL import Image

    photo_path = tmp_path / "no-exif.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(photo_path)
    with caplog.at_level(logging.INFO, logger="metrocli"):
        photo = FocalMode(auto=True).load_photo(photo_path)
        assert photo.intrinsics.focal_source == "default"
        assert any("UNRELIABLE" in w for w in photo.warnings)  # kept for the JSON ...
        assert not any("UNRELIABLE" in r.getMessage() for r in caplog.records)  # ... not logged yet
        FocalMode().load_photo(photo_path)
        assert sum("UNRELIABLE" in r.getMessage() for r in caplog.records) == 1  # exif mode logs it at once
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="metrocli"):
        out = self_calibrated_prediction(model_like_prediction(rendered, 500.0), label="room.jpg")
    assert not out.selfcal.fallback
    messages = [r.getMessage() for r in caplog.records]
    assert not any("UNRELIABLE" in m for m in messages)
    assert any(m.startswith("room.jpg: self-calibrated focal length") for m in messages)
    caplog.clear()
    h, w = 480, 640
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = -1.0
    wall = Prediction(
        np.full((h, w), 2.0, np.float32), normal, np.ones((h, w), np.float32), None,
        centred(w, h, 500.0, "default"), model="vit-small",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="metrocli"):
        out = self_calibrated_prediction(wall, label="wall.jpg")
    assert out.selfcal.fallback
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("wall.jpg: ") and "UNRELIABLE" in warning


def test_an_uncertain_self_calibration_is_combined_and_says_so(rendered, half_tilted, caplog) -> None:
    """Issue 15: an untrusted estimate is combined with the 65 degree default by their sigmas; the photo's
    depth uses the combination (``focal_source`` "combined"), and the warning says so and keeps "METRIC SCALE
    IS UNRELIABLE" (the sigma is still wide)."""
    pred = model_like_prediction(rendered, 500.0)
    pred = replace(pred, normal=half_tilted(pred.normal, 20.0))
    with caplog.at_level(logging.INFO, logger="metrocli"):
        out = self_calibrated_prediction(pred, label="tilted.jpg")
    sc = out.selfcal
    assert sc.combined and not sc.trusted and sc.reason == "uncertain"
    assert out.prediction.intrinsics.fx == pytest.approx(sc.focal_px) != 500.0
    assert out.prediction.intrinsics.focal_source == "combined"
    np.testing.assert_allclose(out.prediction.depth, pred.depth * (sc.focal_px / 500.0), rtol=1e-5)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("tilted.jpg: self-calibration: ") and "combined with the fallback" in warning
    assert "UNRELIABLE" in warning
    assert not any("self-calibrated focal length" in r.getMessage() for r in caplog.records)
    report = out.report()
    assert report["focal_source"] == "combined" and report["uncertainty_px"] == pytest.approx(
        sc.focal_sigma_px
    )
    assert report["disagreement"] is None  # an untrusted estimate cross-checks nothing
    true_fx = rendered.intrinsics.fx
    assert abs(math.log(sc.focal_px / true_fx)) <= 2 * sc.focal_sigma_px / sc.focal_px


def test_focal_check_reports_disagreement(rendered) -> None:
    pred = model_like_prediction(rendered, 700.0)
    result = self_calibrate_prediction(pred)
    true_k = rendered.intrinsics
    good = focal_check(true_k, result)
    assert not good.is_off and abs(good.ratio) < 0.02 and "agrees" in good.message
    bad = focal_check(true_k.with_focal(true_k.fx * 1.3, "exif-35mm"), result)
    assert bad.is_off and bad.ratio < -0.1 and "DISAGREES" in bad.message
    assert bad.to_dict()["is_off"] is True


def test_predictions_without_predicted_normals_are_refused(rendered) -> None:
    pred = model_like_prediction(rendered, 700.0)
    from dataclasses import replace

    with pytest.raises(MetroUsageError, match="normals"):
        self_calibrate_prediction(replace(pred, normal=None, model="convnext-tiny"))
    with pytest.raises(MetroUsageError, match="sensor depth"):
        SensorDepth(
            "depth.png", focal=FocalMode(auto=True)
        )  # sensor depth is no Prediction: refused up front


@pytest.mark.slow
def test_check_photo_focal_runs_one_forward_of_the_seeded_model(seeded_weights, exif_samples) -> None:
    from metrocli.camera.photo import load_photo
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.provider import ModelDepth

    photo = load_photo(exif_samples / "jpg" / "Canon_40D.jpg")
    model = ModelDepth(ModelSpec(weights=seeded_weights("vit-small"), device="cpu"), FocalMode(auto=True))
    check = check_photo_focal(photo, model)  # one forward, self-calibrated + focal_check
    # seeded (not trained) weights: only the plumbing is checked, not the value
    assert check.photo_focal_px == photo.intrinsics.fx
    assert check.photo_focal_source == photo.intrinsics.focal_source
    assert isinstance(check.is_off, bool)
    assert check.selfcal.fallback == (check.selfcal.warning is not None)
    assert (check.selfcal.focal_px > 0 and 20 <= check.selfcal.fov_deg <= 120) or check.selfcal.fallback
    assert math.isnan(check.ratio) == check.selfcal.fallback
