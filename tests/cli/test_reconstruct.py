"""`metro reconstruct` end to end on rendered phone photos with exact depth maps (CliRunner, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metrocli.cli.common import run_cli
from metrocli.cli.main import cli
from metrocli.synth.multiview import ROOM_VIEWS, render_views, write_views

NAMES = [v.name for v in ROOM_VIEWS[:4]]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 320 x 240 views of the room (one stored with orientation 6) with 16-bit mm depth PNGs."""
    folder = tmp_path_factory.mktemp("room")
    write_views(folder, render_views(320, 240)[:4], views=ROOM_VIEWS[:4])
    return folder


def invoke(*args: str):
    return CliRunner().invoke(cli, ["reconstruct", *args])


def exit_code(capsys, *args: str) -> tuple[int, str]:
    code = run_cli(cli, ["reconstruct", *args])
    return code, capsys.readouterr().err


def test_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for opt in (
        "--depth-dir",
        "--separate",
        "--voxel-m",
        "--points-only",
        "--simplify",
        "--focal-px",
        "--json",
    ):
        assert opt in result.output


@pytest.mark.slow
def test_folder_to_scene_resume_and_force(photos: Path, tmp_path: Path) -> None:
    import open3d as o3d

    out = tmp_path / "scene.ply"
    result = invoke(str(photos), "-o", str(out), "--depth-dir", str(photos), "--voxel-m", "0.025", "--json")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["registered"] == [n + ".jpg" for n in NAMES] and not line["skipped"]
    mesh = o3d.io.read_triangle_mesh(str(out))
    assert len(mesh.triangles) > 10_000 and not mesh.has_vertex_normals() and mesh.has_vertex_colors()
    doc = json.loads((tmp_path / "scene.json").read_text())
    assert doc["reference_photo"] == "mv_01.jpg"
    assert [p["photo"] for p in doc["photos"]] == [n + ".jpg" for n in NAMES]
    np.testing.assert_allclose(doc["photos"][0]["pose_camera_to_reference"], np.eye(4), atol=1e-9)
    for p in doc["photos"]:
        pose = np.array(p["pose_camera_to_reference"])
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6)
        assert {"fx", "fy", "cx", "cy", "width", "height"} <= set(p["intrinsics"])
        assert p["focal_source"] and p["scale"] == 1.0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left

    stamp = out.stat().st_mtime_ns
    again = invoke(str(photos), "-o", str(out), "--depth-dir", str(photos), "--voxel-m", "0.025")
    assert again.exit_code == 0 and "skipped" in again.stdout
    assert out.stat().st_mtime_ns == stamp
    forced = invoke(str(photos), "-o", str(out), "--depth-dir", str(photos), "--force", "--voxel-m", "0.05")
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "scene.json").read_text())["voxel_m"] == 0.05
    assert len(o3d.io.read_triangle_mesh(str(out)).triangles) < len(mesh.triangles)


@pytest.mark.slow
def test_corrupt_photo_is_reported_and_the_rest_completes(photos: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in NAMES[:3]:
        for suffix in (".jpg", ".depth.png"):
            (folder / (n + suffix)).write_bytes((photos / (n + suffix)).read_bytes())
    (folder / "mv_00_corrupt.jpg").write_bytes((photos / "mv_01.jpg").read_bytes()[:2000])
    out = tmp_path / "scene.ply"
    code, err = exit_code(
        capsys, str(folder), "-o", str(out), "--depth-dir", str(folder), "--voxel-m", "0.03"
    )
    assert code == 1
    assert "mv_00_corrupt.jpg" in err and "Traceback" not in err
    assert "3 of 4 photos succeeded" in err
    doc = json.loads((tmp_path / "scene.json").read_text())
    assert [p["photo"] for p in doc["photos"]] == [n + ".jpg" for n in NAMES[:3]]
    assert doc["reference_photo"] == "mv_01.jpg"
    assert doc["left_out"][0]["photo"] == "mv_00_corrupt.jpg"
    assert out.is_file()


@pytest.mark.slow
def test_separate_batch_resume_force_and_bad_photo(photos: Path, tmp_path: Path, capsys) -> None:
    import open3d as o3d

    folder = tmp_path / "in"
    folder.mkdir()
    for n in NAMES[:2]:
        for suffix in (".jpg", ".depth.png"):
            (folder / (n + suffix)).write_bytes((photos / (n + suffix)).read_bytes())
    (folder / "zz_text.jpg").write_text("not a photo\n")
    out = tmp_path / "meshes"
    args = [str(folder), "-o", str(out), "--separate", "--depth-dir", str(folder), "--mesh-normals"]
    code, err = exit_code(capsys, *args)
    assert code == 1 and "zz_text.jpg" in err and "2 of 3 photos succeeded" in err
    assert sorted(p.name for p in out.iterdir()) == ["mv_01.ply", "mv_02.ply"]
    mesh = o3d.io.read_triangle_mesh(str(out / "mv_01.ply"))
    assert len(mesh.triangles) > 1000 and mesh.has_vertex_normals()

    (folder / "zz_text.jpg").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert [x["skipped"] for x in lines] == [True, True]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    result = invoke(*args, "--force", "--points-only", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert [x["skipped"] for x in lines] == [False, False] and lines[0]["kind"] == "points"


def test_single_photo_with_sensor_depth(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.ply"
    depth = photos / "mv_04.depth.png"  # stored rotated like its photo (orientation 6)
    result = invoke(str(photos / "mv_04.jpg"), "-o", str(out), "--depth", str(depth), "--json")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip())
    assert line["kind"] == "mesh" and line["n_triangles"] > 1000
    assert b"property float nx" not in out.read_bytes()[:1000]  # vertex normals only with --mesh-normals
    with_normals = tmp_path / "one-n.ply"
    result = invoke(
        str(photos / "mv_04.jpg"), "-o", str(with_normals), "--depth", str(depth), "--mesh-normals"
    )
    assert result.exit_code == 0, result.output
    assert b"property float nx" in with_normals.read_bytes()[:1000]
    # --depth-dir pairs the depth map for a single photo too
    out2 = tmp_path / "two.ply"
    result = invoke(str(photos / "mv_02.jpg"), "-o", str(out2), "--depth-dir", str(photos), "--points-only")
    assert result.exit_code == 0, result.output
    assert out2.is_file() and "points" in result.stdout


def test_usage_errors(photos: Path, tmp_path: Path, capsys) -> None:
    depth = str(photos / "mv_01.depth.png")
    code, err = exit_code(capsys, str(photos), "-o", str(tmp_path / "s.ply"), "--depth", depth)
    assert code == 2 and "--depth-dir" in err
    code, err = exit_code(capsys, str(photos), "-o", str(tmp_path / "s.ply"), "--points-only")
    assert code == 2 and "--points-only" in err
    code, err = exit_code(capsys, str(photos), "-o", str(tmp_path / "s.txt"), "--depth-dir", str(photos))
    assert code == 2 and "extension" in err
    code, err = exit_code(capsys, str(photos), "-o", str(tmp_path / "s.ply"), "--voxel-m", "-1")
    assert code == 2
    code, err = exit_code(
        capsys, str(photos / "mv_01.jpg"), "-o", "x.ply", "--focal-px", "500", "--fov", "60"
    )
    assert code == 2 and "not both" in err
    code, err = exit_code(
        capsys, str(photos / "mv_01.jpg"), "-o", str(tmp_path / "x.ply"), "--depth-dir", str(tmp_path)
    )
    assert code == 1 and "no depth map" in err and "Traceback" not in err


def test_separate_outputs_never_escape_the_output_folder(tmp_path: Path) -> None:
    """A photo named to climb out of -o (backslashes are ordinary characters on POSIX) stays inside it."""
    from metrocli.camera.exif_write import write_jpeg

    folder = tmp_path / "a" / "b" / "photos"
    folder.mkdir(parents=True)
    crafted = "x\\..\\..\\..\\escaped"
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    write_jpeg(folder / f"{crafted}.jpg", rgb, make="Apple", model="iPhone 13 Pro", focal_35mm=26)
    np.save(folder / f"{crafted}.npy", np.full((48, 64), 2.0, np.float32))
    out = tmp_path / "a" / "b" / "out"
    before = {p for p in tmp_path.rglob("*")}
    result = CliRunner().invoke(
        cli, ["reconstruct", str(folder), "--separate", "-o", str(out), "--depth-dir", str(folder)]
    )
    assert result.exit_code == 0, result.output
    created = {p for p in tmp_path.rglob("*")} - before
    assert created, "nothing was written"
    assert all(out in p.parents or p == out for p in created), sorted(map(str, created))
    assert any(p.suffix == ".ply" for p in created)
