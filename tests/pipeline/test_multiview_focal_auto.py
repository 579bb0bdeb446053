"""``metro reconstruct --focal auto`` in the library: every photo self-calibrated from its own prediction.

The predictions are what the model returns when run with a photo's intrinsics, made from rendered exact
depth and normals: depth proportional to the focal length the photo claims (EXIF, or the default field of
view for a photo without EXIF), normals independent of it. So a photo without EXIF has a wrong scale until
its focal length is self-calibrated.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrocli.camera.intrinsics import centred
from metrocli.camera.photo import load_photo
from metrocli.errors import MetroUsageError
from metrocli.model.spec import ModelSpec
from metrocli.pipeline.multiview import MultiviewJob, MultiviewOptions
from metrocli.pipeline.provider import FocalMode, ModelDepth, SensorDepth
from metrocli.pipeline.single import reconstruct_photo
from metrocli.prediction import Prediction
from metrocli.synth.multiview import ROOM_VIEWS, render_views, write_views

VIEWS = ROOM_VIEWS[:3]  # 26 mm, 13 mm (written without EXIF), 26 mm


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """mv_01.jpg and mv_03.jpg with phone EXIF, mv_02.png (13 mm ultra-wide) without any metadata."""
    folder = tmp_path_factory.mktemp("focal_auto")
    renders = render_views(320, 240)[: len(VIEWS)]
    write_views(folder, list(renders), views=VIEWS)
    for p in folder.glob("mv_02.*"):
        p.unlink()
    Image.fromarray(renders[1].rgb).save(folder / "mv_02.png")
    return {"folder": folder, "renders": {f"mv_0{i + 1}": r for i, r in enumerate(renders)}}


def model_like(photo_path: Path, render) -> Prediction:
    """The prediction of a perfect model run with the photo's intrinsics (depth scales with its focal)."""
    photo = load_photo(photo_path)
    hit = render.depth_m > 0
    factor = photo.intrinsics.fx / render.intrinsics.fx
    return Prediction(
        depth=np.where(hit, render.depth_m * factor, 0.0).astype(np.float32),
        normal=np.where(hit[..., None], render.normal, np.nan).astype(np.float32),
        confidence=hit.astype(np.float32),
        normal_confidence=None,
        intrinsics=photo.intrinsics,
        model="vit-small",
    )


def auto_model(focal_auto: bool = True) -> ModelDepth:
    """The model provider with (or without) --focal auto; the tests give its predictions."""
    return ModelDepth(ModelSpec(), FocalMode(auto=focal_auto))


def photo_paths(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".jpg", ".png") and ".depth" not in p.name
    }


def run_folder(scene: dict, out: Path, focal_auto: bool):
    job = MultiviewJob(
        scene["folder"], out, auto_model(focal_auto), MultiviewOptions(voxel_m=0.03, force=True)
    )
    paths = photo_paths(scene["folder"])
    for photo in job.photos:
        job.load(photo, prediction=model_like(paths[photo.stem], scene["renders"][photo.stem]))
    return job.finish()


def test_folder_focal_auto_recovers_every_focal_and_records_it(scene: dict, tmp_path: Path) -> None:
    out = tmp_path / "scene.ply"
    result = run_folder(scene, out, focal_auto=True)
    assert result.registered == ("mv_01.jpg", "mv_02.png", "mv_03.jpg")
    doc = json.loads(result.json_path.read_text())
    for rec in doc["photos"]:
        name = Path(rec["photo"]).stem
        true_fx = scene["renders"][name].intrinsics.fx
        assert rec["focal_source"] == "self-calibrated", rec
        assert abs(rec["focal_px"] / true_fx - 1) < 0.02, (name, rec["focal_px"], true_fx)
        assert 0 < rec["focal_uncertainty_px"] < 0.05 * true_fx
        assert rec["selfcal"]["fallback"] is False and rec["selfcal"]["warning"] is None
        summary = result.to_dict()["focals"][rec["photo"]]
        assert summary["focal_px"] == rec["focal_px"] and summary["focal_source"] == "self-calibrated"
        assert summary["focal_uncertainty_px"] == rec["focal_uncertainty_px"]
    by_name = {Path(r["photo"]).stem: r for r in doc["photos"]}
    # the photo without EXIF had the default field of view: far off, now corrected
    assert by_name["mv_02"]["selfcal"]["photo_focal_source"] == "default"
    assert abs(by_name["mv_02"]["selfcal"]["disagreement"]) > 0.3
    # the EXIF photos are confirmed
    for name in ("mv_01", "mv_03"):
        assert by_name[name]["selfcal"]["photo_focal_source"].startswith("exif")
        assert abs(by_name[name]["selfcal"]["disagreement"]) < 0.02
    assert doc["options"]["focal"] == "auto"
    # resume: an up-to-date result reports the same focal lengths without recomputing
    again = MultiviewJob(scene["folder"], out, auto_model(), MultiviewOptions(voxel_m=0.03)).up_to_date()
    assert again is not None and again.skipped
    assert again.focals["mv_02.png"]["focal_px"] == by_name["mv_02"]["focal_px"]
    assert again.focals["mv_02.png"]["focal_uncertainty_px"] == by_name["mv_02"]["focal_uncertainty_px"]
    # ... but not for the run without --focal auto (other options)
    assert (
        MultiviewJob(scene["folder"], out, auto_model(False), MultiviewOptions(voxel_m=0.03)).up_to_date()
        is None
    )


def test_folder_without_focal_auto_cannot_place_the_photo_without_exif(scene: dict, tmp_path: Path) -> None:
    """At the default field of view the ultra-wide photo's geometry is distorted: it does not register."""
    result = run_folder(scene, tmp_path / "scene.ply", focal_auto=False)
    assert "mv_02.png" in result.left_out and "mv_02.png" not in result.focals
    focals = result.to_dict()["focals"]
    assert set(focals) == {"mv_01.jpg", "mv_03.jpg"}
    assert all(rec["focal_source"].startswith("exif") for rec in focals.values())
    assert all(rec["focal_uncertainty_px"] is None and "selfcal" not in rec for rec in focals.values())
    doc = json.loads(result.json_path.read_text())
    assert "focal" not in doc["options"] and all("selfcal" not in r for r in doc["photos"])


def test_single_photo_focal_auto_gives_metric_geometry(scene: dict, tmp_path: Path) -> None:
    import open3d as o3d

    photo = photo_paths(scene["folder"])["mv_02"]
    render = scene["renders"]["mv_02"]
    out = tmp_path / "one.ply"
    result = reconstruct_photo(
        photo, out, auto_model(), points_only=True, prediction=model_like(photo, render)
    )
    assert result.focal_source == "self-calibrated"
    assert abs(result.focal_px / render.intrinsics.fx - 1) < 0.02
    assert result.focal_uncertainty_px is not None and result.focal_uncertainty_px > 0
    d = result.to_dict()
    assert d["selfcal"]["photo_focal_source"] == "default" and d["focal_uncertainty_px"] > 0
    z = np.asarray(o3d.io.read_point_cloud(str(out)).points)[:, 2]
    true_z = render.depth_m[render.depth_m > 0]
    assert abs(np.median(z) / np.median(true_z) - 1) < 0.03
    # without --focal auto the same photo is reconstructed at the default focal length: wrong scale
    plain = reconstruct_photo(
        photo, tmp_path / "two.ply", auto_model(False), points_only=True, prediction=model_like(photo, render)
    )
    assert plain.focal_source == "default" and "selfcal" not in plain.to_dict()
    z2 = np.asarray(o3d.io.read_point_cloud(str(tmp_path / "two.ply")).points)[:, 2]
    assert abs(np.median(z2) / np.median(true_z) - 1) > 0.3


def test_flat_wall_photo_falls_back_with_a_warning_naming_it(scene: dict, tmp_path: Path, caplog) -> None:
    photo = photo_paths(scene["folder"])["mv_01"]  # EXIF 26 mm
    k = load_photo(photo).intrinsics
    h, w = k.height, k.width
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = -1.0  # a fronto-parallel wall
    wall = Prediction(
        np.full((h, w), 2.0, np.float32), normal, np.ones((h, w), np.float32), None, k, "vit-small"
    )
    with caplog.at_level(logging.WARNING, logger="metrocli.pipeline.selfcal"):
        result = reconstruct_photo(
            photo, tmp_path / "wall.ply", auto_model(), points_only=True, prediction=wall
        )
    assert result.focal_source == k.focal_source and result.focal_px == pytest.approx(k.fx)
    assert result.focal_uncertainty_px is None
    assert result.selfcal["fallback"] and result.selfcal["objective_flat"]
    assert any("mv_01.jpg" in r.getMessage() and "flat" in r.getMessage() for r in caplog.records)


def test_focal_auto_refuses_sensor_depth_and_focal_overrides(scene: dict, tmp_path: Path) -> None:
    folder = scene["folder"]
    # the rules are checked where the provider is built, once for every pipeline
    with pytest.raises(MetroUsageError, match="sensor"):
        SensorDepth(folder, focal=FocalMode(auto=True))  # --depth-dir (folder, --separate)
    with pytest.raises(MetroUsageError, match="not both"):
        FocalMode(focal_px=300.0, auto=True)
    with pytest.raises(MetroUsageError, match="sensor"):
        SensorDepth(folder / "mv_01.depth.png", focal=FocalMode(auto=True))  # --depth (single photo)


def test_given_prediction_must_match_the_photo(scene: dict, tmp_path: Path) -> None:
    from metrocli.errors import DepthMapError

    job = MultiviewJob(scene["folder"], tmp_path / "s.ply", auto_model())
    photo = job.photos[0]
    small = Prediction(
        np.ones((10, 10), np.float32), None, None, None, centred(10, 10, 10.0, "default"), "vit-small"
    )
    with pytest.raises(DepthMapError, match="10x10"):
        job.load(photo, prediction=small)
    assert photo in job.failed
