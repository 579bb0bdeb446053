"""`metro reconstruct FOLDER -o scene.glb --cameras --export colmap DIR` on rendered photos with exact depth:
the GLB is y-up with the scene in front of each photo's glTF camera; pycolmap reads the COLMAP model back
with the poses and intrinsics of scene.json."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metrocli.cli.common import run_cli
from metrocli.cli.main import cli
from metrocli.synth.multiview import ROOM_VIEWS, render_views, write_views

NAMES = [v.name + ".jpg" for v in ROOM_VIEWS[:4]]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("room")
    write_views(folder, render_views(320, 240)[:4], views=ROOM_VIEWS[:4])
    return folder


def _glb_json(path: Path) -> dict:
    data = path.read_bytes()
    return json.loads(data[20 : 20 + struct.unpack_from("<I", data, 12)[0]])


@pytest.mark.slow
def test_folder_glb_with_cameras_and_colmap_export(photos: Path, tmp_path: Path) -> None:
    import trimesh

    pycolmap = pytest.importorskip("pycolmap")
    out, sparse = tmp_path / "scene.glb", tmp_path / "colmap"
    args = [str(photos), "-o", str(out), "--depth-dir", str(photos), "--voxel-m", "0.03"]
    result = CliRunner().invoke(
        cli, ["reconstruct", *args, "--cameras", "--export", "colmap", str(sparse), "--json"]
    )
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["registered"] == NAMES and line["colmap"] == str(sparse)
    doc = json.loads((tmp_path / "scene.json").read_text())

    # GLB: y up (the room's up, world +z, seen from the reference photo mv_01), in front of every camera
    scene = trimesh.load(out, process=False)
    verts = np.asarray(scene.geometry["scene"].vertices)
    reference = render_views(320, 240)[0]
    up = (np.asarray(reference.pose)[:3, :3].T @ [0.0, 0.0, 1.0]) * [1, -1, -1]
    assert up[1] > np.cos(np.radians(30))
    height_m = reference.camera_to_world(verts * [1, -1, -1])[:, 2]  # back to the room's frame: z up
    assert np.corrcoef(height_m, verts[:, 1])[0, 1] > 0.9
    gl = _glb_json(out)
    nodes = [n for n in gl["nodes"] if "camera" in n]
    assert [n["name"] for n in nodes] == NAMES
    assert sorted(n for n in scene.geometry if n.startswith("frustum")) == [f"frustum {n}" for n in NAMES]
    for node in nodes:
        local = trimesh.transform_points(verts, np.linalg.inv(np.array(node["matrix"]).reshape(4, 4).T))
        assert (local[:, 2] < 0).mean() > 0.9, node["name"]  # the glTF camera looks down its -z

    # COLMAP: same poses (<= 1e-6) and intrinsics as scene.json, the mesh as sparse points
    rec = pycolmap.Reconstruction(str(sparse))
    by_name = {im.name: im for im in rec.images.values()}
    assert sorted(by_name) == NAMES
    for p in doc["photos"]:
        image = by_name[p["photo"]]
        world_to_camera = np.linalg.inv(np.array(p["pose_camera_to_reference"]))[:3]
        np.testing.assert_allclose(image.cam_from_world().matrix(), world_to_camera, atol=1e-6)
        k = p["intrinsics"]
        camera = rec.cameras[image.camera_id]
        assert (camera.width, camera.height) == (k["width"], k["height"])
        np.testing.assert_allclose(camera.params, [k["fx"], k["fy"], k["cx"], k["cy"]], rtol=1e-12)
    xyz = np.array([pt.xyz for pt in rec.points3D.values()])
    assert len(xyz) > 1000
    mesh_cv = verts * [1, -1, -1]
    lo, hi = mesh_cv.min(axis=0), mesh_cv.max(axis=0)
    assert ((xyz >= lo - 1e-6) & (xyz <= hi + 1e-6)).all()  # in the OpenCV frame of scene.json


def test_cameras_and_export_usage_errors(photos: Path, tmp_path: Path, capsys) -> None:
    def code(*args: str) -> tuple[int, str]:
        rc = run_cli(cli, ["reconstruct", *args])
        return rc, capsys.readouterr().err

    rc, err = code(str(photos / "mv_01.jpg"), "-o", str(tmp_path / "a.glb"), "--cameras")
    assert rc == 2 and "--cameras" in err
    rc, err = code(str(photos / "mv_01.jpg"), "-o", str(tmp_path / "a.ply"), "--export", "colmap", "x")
    assert rc == 2 and "--export" in err
    rc, err = code(str(photos), "-o", str(tmp_path / "a.ply"), "--export", "nerf", str(tmp_path / "x"))
    assert rc == 2
    rc, err = code(str(photos), "-o", str(tmp_path / "s.ply"), "--depth-dir", str(photos), "--cameras")
    assert rc == 2 and ".glb" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())
