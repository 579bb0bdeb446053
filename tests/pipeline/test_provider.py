"""The DepthProvider layer: FocalMode, ModelDepth, SensorDepth, make_provider and the listing rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metrocli.errors import DepthMapError, MetroUsageError
from metrocli.geometry.measure import MODEL_ERROR
from metrocli.model.spec import ModelSpec
from metrocli.pipeline.inputs import expand_inputs, is_project_output, list_photos
from metrocli.pipeline.provider import (
    FocalMode,
    ModelDepth,
    SensorDepth,
    check_focal_auto,
    make_provider,
    surface_normals,
    validity_confidence,
)
from metrocli.prediction import Prediction


@pytest.fixture(scope="module")
def photo_and_depth(tmp_path_factory: pytest.TempPathFactory):
    """A 160 x 120 PNG photo without EXIF and its sensor depth map (2 m wall, a hole of no depth)."""
    from PIL import Image

    from metrocli.camera.photo import load_photo

    folder = tmp_path_factory.mktemp("provider")
    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "wall.png")
    depth = np.full((120, 160), 2.0, np.float32)
    depth[:10, :10] = 0.0
    np.save(folder / "wall.depth.npy", depth)
    return folder, load_photo(folder / "wall.png"), depth


def test_focal_mode_is_one_of_exif_user_auto() -> None:
    assert FocalMode().mode == "exif"
    assert FocalMode(focal_px=500.0).mode == FocalMode(fov_deg=60.0).mode == "user"
    assert FocalMode(auto=True).mode == "auto"
    assert FocalMode(auto=True).key() == {"focal_px": None, "fov_deg": None, "focal": "auto"}
    assert "focal" not in FocalMode(focal_px=500.0).key()
    with pytest.raises(MetroUsageError, match="give --focal-px or --fov, not both"):
        FocalMode(focal_px=500.0, fov_deg=60.0)
    with pytest.raises(MetroUsageError, match="only one of"):
        FocalMode(focal_px=500.0, fov_deg=60.0, auto=True)


def test_focal_auto_rules_in_one_place() -> None:
    check_focal_auto(FocalMode())  # nothing to check without auto
    check_focal_auto(FocalMode(), sensor=True, model="convnext-tiny")
    check_focal_auto(FocalMode(auto=True), model="vit-small")
    with pytest.raises(MetroUsageError, match="sensor depth"):
        check_focal_auto(FocalMode(auto=True), sensor=True)
    with pytest.raises(MetroUsageError, match="ViT"):
        check_focal_auto(FocalMode(auto=True), model="convnext-tiny")
    # ... and the providers and make_provider apply exactly these rules
    with pytest.raises(MetroUsageError, match="ViT"):
        ModelDepth(ModelSpec("convnext-large"), FocalMode(auto=True))
    with pytest.raises(MetroUsageError, match="sensor depth"):
        make_provider(ModelSpec(), FocalMode(auto=True), sensor="d.png")
    assert isinstance(make_provider(ModelSpec(), FocalMode(auto=True)), ModelDepth)


def test_make_provider_picks_the_source() -> None:
    assert isinstance(make_provider(), ModelDepth)
    sensor = make_provider(ModelSpec(), FocalMode(focal_px=500.0), sensor="d.png", depth_scale=0.002)
    assert isinstance(sensor, SensorDepth) and sensor.depth_scale == 0.002
    assert sensor.focal == FocalMode(focal_px=500.0)
    with pytest.raises(MetroUsageError, match="--depth-scale"):
        make_provider(ModelSpec(), depth_scale=0.002)


def test_model_depth_is_lazy_and_keyed_by_what_shapes_its_output() -> None:
    provider = ModelDepth(
        ModelSpec("vit-small", Path("w.pth"), "cpu", "bf16", threads=1), FocalMode(fov_deg=60)
    )
    assert not provider.loaded  # nothing loaded (no torch) until a photo needs it
    assert provider.key() == {
        "model": "vit-small",
        "weights": "w.pth",
        "precision": "bf16",
        "focal_px": None,
        "fov_deg": 60,
    }
    # the device and the thread count do not change the output
    assert ModelDepth(ModelSpec("vit-small", Path("w.pth"), "auto", "bf16"), FocalMode(fov_deg=60)).key() == (
        provider.key()
    )
    assert ModelDepth(ModelSpec(precision="fp32")).key() != ModelDepth(ModelSpec(precision="bf16")).key()


def test_model_depth_of_a_prediction(photo_and_depth) -> None:
    _, photo, depth = photo_and_depth
    normal = np.zeros((120, 160, 3), np.float32)
    normal[..., 2] = -1.0
    pred = Prediction(
        depth, normal, np.ones_like(depth), None, photo.intrinsics, "vit-small", {"forward": 0.5}
    )
    dm = ModelDepth().from_prediction(pred, photo)
    assert dm.source == "model" and dm.name == dm.label == "vit-small" and dm.error == MODEL_ERROR
    assert dm.depth_m is depth and dm.normal is normal and dm.selfcal is None and dm.depth_file is None
    assert surface_normals(dm) is normal and validity_confidence(dm) is dm.confidence
    back = dm.to_prediction()
    assert back.model == "vit-small" and back.depth is depth and back.timings_s == {"forward": 0.5}
    # --focal auto self-calibrates the same prediction (a flat wall: falls back, with the calibration)
    auto = ModelDepth(ModelSpec(), FocalMode(auto=True)).from_prediction(pred, photo)
    assert auto.selfcal is not None and auto.selfcal.selfcal.fallback
    assert auto.selfcal.photo_intrinsics == photo.intrinsics
    assert auto.selfcal.report()["photo_focal_source"] == "default"


def test_sensor_depth_file_and_folder(photo_and_depth) -> None:
    folder, photo, depth = photo_and_depth
    for provider in (SensorDepth(folder / "wall.depth.npy"), SensorDepth(folder)):
        provider.prepare()
        dm = provider.provide(photo)
        assert dm.source == "sensor" and dm.label == "sensor" and dm.name == "wall.depth.npy"
        assert dm.depth_file == folder / "wall.depth.npy"
        np.testing.assert_array_equal(dm.depth_m, depth)
        assert dm.normal is None and dm.confidence is None and dm.intrinsics == photo.intrinsics
        assert dm.error.quantum_m == 0.0 and "sensor" in dm.error.description
        conf = validity_confidence(dm)
        assert conf[0, 0] == 0.0 and conf[50, 50] == 1.0
        normal = surface_normals(dm)
        assert normal is not None and np.isfinite(normal).all()
        np.testing.assert_allclose(normal[60, 80], [0, 0, -1], atol=1e-5)
        with pytest.raises(MetroUsageError, match="confidence"):
            dm.to_prediction()
    assert SensorDepth(folder).key() == {
        "depth_dir": str(folder),
        "depth_scale": None,
        "focal_px": None,
        "fov_deg": None,
    }
    assert "depth_file" in SensorDepth(folder / "wall.depth.npy", 0.5).key()
    with pytest.raises(MetroUsageError, match="no such"):
        SensorDepth(folder / "missing").prepare()
    other = folder / "empty"
    other.mkdir()
    with pytest.raises(DepthMapError, match="no depth map"):
        SensorDepth(other).provide(photo)


def test_user_focal_is_applied_when_the_photo_is_loaded(photo_and_depth) -> None:
    folder, _, _ = photo_and_depth
    provider = SensorDepth(folder, focal=FocalMode(focal_px=300.0))
    photo = provider.focal.load_photo(folder / "wall.png")
    assert photo.intrinsics.fx == 300.0 and photo.intrinsics.focal_source == "user"
    assert provider.provide(photo).intrinsics.fx == 300.0


def test_depth_maps_beside_photos_are_not_inputs(tmp_path: Path) -> None:
    """`metro depth FOLDER` used to run the model on the maps it had written beside the photos."""
    names = [
        "x.jpg",
        "x.depth.png",
        "x.depth.npy",
        "x.normal.npy",
        "x.confidence.npy",
        "x.preview.png",
        "x.json",
        ".y.jpg",
        "z.PNG",
        "z.Preview.PNG",
        "depth.png",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_inputs([tmp_path])] == ["depth.png", "x.jpg", "z.PNG"]
    assert [p.name for p in list_photos(tmp_path)] == ["depth.png", "x.jpg", "z.PNG"]
    assert is_project_output(Path("a.b.depth.tiff")) and not is_project_output(Path("depth.jpg"))
    # a file named explicitly is taken as given
    assert expand_inputs([tmp_path / "x.depth.png"]) == [tmp_path / "x.depth.png"]


@pytest.mark.slow
def test_model_depth_loads_once_with_its_spec(photo_and_depth, seeded_weights) -> None:
    import torch

    _, photo, _ = photo_and_depth
    before = torch.get_num_threads()
    try:
        spec = ModelSpec(weights=seeded_weights("vit-small"), device="cpu", threads=1)
        provider = ModelDepth(spec)
        provider.prepare()
        assert (
            provider.loaded
            and torch.get_num_threads() == 1
            and provider.device == "cpu"
            and provider.precision == "fp32"
        )
        model = provider.model()
        dm = provider.provide(photo)
        assert provider.model() is model  # loaded once
        assert dm.source == "model" and dm.name == "vit-small" and dm.error == MODEL_ERROR
        assert dm.depth_m.shape == (120, 160) and dm.normal is not None and dm.normal.shape == (120, 160, 3)
        assert dm.confidence is not None and dm.intrinsics == photo.intrinsics and dm.timings_s["forward"] > 0
        assert provider.provide(photo, normals=False).normal is None  # measuring needs depth only
    finally:
        torch.set_num_threads(before)
