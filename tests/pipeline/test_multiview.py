"""Folder -> one metric scene: the acceptance tests of issue 5 on rendered photos with exact depth.

Six views of the synthetic room (640 x 480, lenses 13-52 mm equivalent, one JPEG stored with EXIF
orientation 6) with their exact 16-bit millimetre depth maps. The fused mesh is compared, in the first
photo's camera frame, with the true surfaces.

Scale convention for the model-like case: each depth map is multiplied by a random factor f_k in
[0.9, 1.1]. The first photo defines the metric frame, so the recovered scale of photo k must be f_0 / f_k
and the mesh is compared with the true scene scaled by f_0.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metrocli.errors import DepthMapError, MetroUsageError, ReconstructionError
from metrocli.pipeline.inputs import find_depth_file, list_photos
from metrocli.pipeline.multiview import MultiviewJob, MultiviewOptions, reconstruct_folder
from metrocli.pipeline.provider import ModelDepth, SensorDepth
from metrocli.synth.multiview import ROOM_VIEWS, render_views, scene_metrics, to_world, write_views

FACTOR_SEED = 20261121


@pytest.fixture(scope="module")
def renders():
    return render_views(640, 480)


def _metrics(out: Path, renders, scale: float, normals: bool = False):
    import open3d as o3d

    from metrocli.synth import room_scene

    mesh = o3d.io.read_triangle_mesh(str(out))
    assert mesh.has_vertex_normals() == normals and mesh.has_vertex_colors()  # normals: --mesh-normals
    if normals:
        lengths = np.linalg.norm(np.asarray(mesh.vertex_normals), axis=1)
        assert np.abs(lengths - 1.0).max() < 1e-3, (np.sum(np.abs(lengths - 1) > 1e-3), lengths.min())
    verts = to_world(np.asarray(mesh.vertices), renders[0].pose, scale)
    return scene_metrics(verts, np.asarray(mesh.triangles), room_scene(), list(renders))


def _check_poses(doc: dict, renders, scale: float, tol_m: float) -> None:
    names = [v.name + ".jpg" for v in ROOM_VIEWS]
    for p in doc["photos"]:
        k = names.index(p["photo"])
        truth = np.linalg.inv(renders[0].pose) @ renders[k].pose
        pose = np.array(p["pose_camera_to_reference"])
        assert np.linalg.norm(pose[:3, 3] - scale * truth[:3, 3]) < tol_m, p["photo"]
        cos = (np.trace(pose[:3, :3].T @ truth[:3, :3]) - 1) / 2
        assert np.degrees(np.arccos(min(1.0, cos))) < 1.0, p["photo"]


@pytest.mark.slow
def test_six_views_with_sensor_depth(renders, tmp_path) -> None:
    folder = tmp_path / "room"
    write_views(folder, renders)
    out = tmp_path / "out" / "scene.ply"
    with_normals = MultiviewOptions(mesh_normals=True)
    result = reconstruct_folder(folder, out, SensorDepth(folder), with_normals)
    assert result.registered == tuple(v.name + ".jpg" for v in ROOM_VIEWS)
    assert result.left_out == {}
    assert result.reference == "mv_01.jpg"
    doc = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert doc["reference_photo"] == "mv_01.jpg" and doc["units"] == "metres"
    assert doc["per_photo_scale"] is False
    assert result.loose == {} and doc["loose_poses"] == []  # sensor depth: every pose is tight
    rotated = next(p for p in doc["photos"] if p["photo"] == "mv_04.jpg")
    assert rotated["orientation"] == 6 and rotated["intrinsics"]["width"] == 480
    for p, v, r in zip(doc["photos"], ROOM_VIEWS, renders, strict=True):
        assert p["scale"] == 1.0
        assert p["depth_correction"] is None  # metric depth: no correction
        assert p["focal_source"].startswith("exif")
        assert p["focal_px"] == pytest.approx(r.intrinsics.fx, rel=0.01), v.name
    _check_poses(doc, renders, 1.0, 0.02)
    m = _metrics(out, renders, 1.0, normals=True)
    print(f"sensor depth: {m}")
    assert m.accuracy_median_m <= 0.02
    assert m.accuracy_p90_m <= 0.05
    assert m.completeness >= 0.85

    # resumable: an up-to-date output is not recomputed; --force recomputes
    stamp = out.stat().st_mtime_ns
    again = reconstruct_folder(folder, out, SensorDepth(folder), with_normals)
    assert again.skipped and out.stat().st_mtime_ns == stamp
    assert again.registered == result.registered


@pytest.mark.slow
def test_six_views_with_scaled_depth_recover_scales(renders, tmp_path) -> None:
    factors = np.random.default_rng(FACTOR_SEED).uniform(0.9, 1.1, len(ROOM_VIEWS))
    folder = tmp_path / "room"
    write_views(folder, renders, depth_factors=factors)
    out = tmp_path / "scene.ply"
    # the first photo's scale as the reference (default: 1.6 cm voxels, the median scale)
    options = MultiviewOptions(per_photo_scale=True, scale_reference="first", voxel_m=0.02)
    result = reconstruct_folder(folder, out, SensorDepth(folder), options)
    assert result.left_out == {}
    for k, v in enumerate(ROOM_VIEWS):
        expected = factors[0] / factors[k]
        assert result.scales[v.name + ".jpg"] == pytest.approx(expected, rel=0.02), v.name
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["per_photo_scale"] is True and doc["scale_reference"] == "first"
    # depth off by a scale only: the smooth correction, recorded per photo, is next to nothing
    for p in doc["photos"]:
        assert set(p["depth_correction"]["coefficients"]) == {"x", "y", "x2", "y2", "xy"}
        assert p["depth_correction"]["rms"] < 0.005, p["photo"]
    # the spread of the per-photo scales, in scene.json and in the summary
    spread = float(np.std(np.log(factors)))
    assert doc["scale_spread"] == pytest.approx(spread, abs=0.01)
    assert result.to_dict()["scale_spread"] == pytest.approx(doc["scale_spread"], abs=1e-4)
    _check_poses(doc, renders, factors[0], 0.04)
    m = _metrics(out, renders, factors[0])
    print(f"scaled depth: {m}")
    assert m.accuracy_median_m <= 0.04
    assert m.accuracy_p90_m <= 0.10
    assert m.completeness >= 0.85


@pytest.mark.slow
def test_mean_scale_reference_and_left_out_photo(renders, tmp_path) -> None:
    """Four photos plus one of an unrelated wall texture: it is left out with a reason; scales normalised."""
    from metrocli.camera.exif_write import write_jpeg

    small = render_views(320, 240)
    factors = np.array([1.05, 0.95, 1.0, 1.02])
    folder = tmp_path / "room"
    write_views(folder, small[:4], views=ROOM_VIEWS[:4], depth_factors=factors)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    write_jpeg(folder / "aa_noise.jpg", noise, make="Apple", model="iPhone 13 Pro", focal_35mm=26.0)
    np.save(folder / "aa_noise.npy", np.full((240, 320), 2.0, np.float32))
    out = tmp_path / "scene.ply"
    result = reconstruct_folder(
        folder,
        out,
        SensorDepth(folder),
        MultiviewOptions(per_photo_scale=True, scale_reference="mean", voxel_m=0.03),
    )
    assert "aa_noise.jpg" in result.left_out and "overlap" in result.left_out["aa_noise.jpg"]
    assert result.reference == "mv_01.jpg"  # the first photo by name was left out
    scales = np.array([result.scales[v.name + ".jpg"] for v in ROOM_VIEWS[:4]])
    assert np.exp(np.mean(np.log(scales))) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(scales / scales[0], factors[0] / factors, rtol=0.02)
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["scale_reference"] == "mean"
    assert doc["left_out"][0]["photo"] == "aa_noise.jpg"


def test_list_photos_and_depth_pairing(tmp_path) -> None:
    for name in ["b.jpg", "a.JPG", "a.depth.png", "c.png", "c.npy", ".hidden.jpg", "notes.txt", "d.heic"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in list_photos(tmp_path)] == ["a.JPG", "b.jpg", "c.png", "d.heic"]
    depth = tmp_path / "depth"
    depth.mkdir()
    (depth / "a.depth.png").write_bytes(b"x")
    (depth / "b.npy").write_bytes(b"x")
    assert find_depth_file(tmp_path / "a.JPG", depth).name == "a.depth.png"
    assert find_depth_file(tmp_path / "b.jpg", depth).name == "b.npy"
    assert find_depth_file(tmp_path / "a.JPG", tmp_path).name == "a.depth.png"
    with pytest.raises(DepthMapError, match=r"c\.png"):
        find_depth_file(tmp_path / "c.png", depth)
    # a photo is never its own depth map
    with pytest.raises(DepthMapError):
        find_depth_file(tmp_path / "d.heic", tmp_path)
    # depth maps of photos in the same folder are not photos (c.png pairs with... c.npy is not an image)
    (tmp_path / "e.jpg").write_bytes(b"x")
    (tmp_path / "e.png").write_bytes(b"x")
    assert "e.png" not in [p.name for p in list_photos(tmp_path, depth_dir=tmp_path)]
    assert "e.png" in [p.name for p in list_photos(tmp_path)]


def test_job_usage_errors(tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(MetroUsageError, match="extension"):
        MultiviewJob(tmp_path, tmp_path / "scene.xyz", ModelDepth())
    with pytest.raises(MetroUsageError, match="voxel"):
        MultiviewJob(tmp_path, tmp_path / "scene.ply", ModelDepth(), MultiviewOptions(voxel_m=-1.0))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MetroUsageError, match="no photos"):
        MultiviewJob(empty, tmp_path / "scene.ply", ModelDepth())
    with pytest.raises(MetroUsageError, match="not a folder"):
        list_photos(tmp_path / "a.jpg")


def test_fewer_than_two_readable_photos(tmp_path) -> None:
    small = render_views(320, 240)
    write_views(tmp_path, small[:1], views=ROOM_VIEWS[:1])
    shutil.copy(tmp_path / "mv_01.jpg", tmp_path / "zz_broken.jpg")
    (tmp_path / "zz_broken.jpg").write_bytes(b"not a jpeg at all")
    job = MultiviewJob(tmp_path, tmp_path / "out.ply", SensorDepth(tmp_path))
    job.load(job.photos[0])
    with pytest.raises(Exception, match="zz_broken"):
        job.load(job.photos[1])
    assert list(job.failed) == [tmp_path / "zz_broken.jpg"]
    with pytest.raises(ReconstructionError, match="at least 2"):
        job.finish()
    assert not (tmp_path / "out.ply").exists()


def test_summary_carries_the_scale_spread(tmp_path) -> None:
    from metrocli.pipeline.scene_json import MultiviewResult, result_from_doc

    result = MultiviewResult(tmp_path / "s.ply", tmp_path / "s.json", "a.jpg", ("a.jpg",), {}, {"a.jpg": 1.0},
                             3, 1, 0.02, scale_spread=0.04)  # fmt: skip
    assert result.to_dict()["scale_spread"] == 0.04
    photo = {"photo": "a.jpg", "scale": 1.0, "focal_px": 500.0, "focal_source": "exif"}
    doc = {"reference_photo": "a.jpg", "left_out": [], "n_vertices": 3, "n_triangles": 1, "voxel_m": 0.02,
           "scale_spread": 0.04, "photos": [photo]}  # fmt: skip
    again = result_from_doc(tmp_path / "s.ply", tmp_path / "s.json", doc)
    assert again.skipped and again.scale_spread == 0.04


def test_loosely_placed_photos_are_reported(tmp_path) -> None:
    """A registered photo whose pose sigma is over 1 deg or 5 cm is named with its sigma, in the result, its
    dict (--json) and again when the scene is read back; the reference photo and tight poses are not."""
    from metrocli.pipeline.scene_json import MultiviewResult, loose_poses, result_from_doc

    def rec(name: str, rot: float | None, trans: float | None) -> dict:
        return {"photo": name, "scale": 1.0, "focal_px": 500.0, "focal_source": "exif",
                "pose_uncertainty": {"rotation_deg": rot, "translation_m": trans}}  # fmt: skip

    photos = [rec("a.jpg", 0.0, 0.0), rec("b.jpg", 0.3, 0.01), rec("c.jpg", 1.6, 0.02),
              rec("d.jpg", 0.2, 0.08), rec("e.jpg", None, None), {"photo": "f.jpg"}]  # fmt: skip
    loose = loose_poses(photos)
    assert sorted(loose) == ["c.jpg", "d.jpg", "e.jpg"]  # f.jpg: an old scene.json records no sigma
    assert "rotation ± 1.60°" in loose["c.jpg"] and "position ± 8.0 cm" in loose["d.jpg"]
    assert "unknown" in loose["e.jpg"]
    result = MultiviewResult(tmp_path / "s.ply", tmp_path / "s.json", "a.jpg", ("a.jpg",), {}, {"a.jpg": 1.0},
                             3, 1, 0.02, loose=loose)  # fmt: skip
    assert result.to_dict()["loose"] == loose
    doc = {"reference_photo": "a.jpg", "left_out": [], "n_vertices": 3, "n_triangles": 1, "voxel_m": 0.02,
           "photos": photos[:5]}  # fmt: skip
    assert result_from_doc(tmp_path / "s.ply", tmp_path / "s.json", doc).loose == loose
