"""Point cloud and mesh files by extension: attributes survive a round trip, writes are atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metrocli.errors import MetroUsageError
from metrocli.geometry.mesh import Mesh
from metrocli.geometry.pointcloud import PointCloud
from metrocli.io.geometry_io import read_ply_vertices, write_mesh, write_point_cloud


def cloud(n: int = 500) -> PointCloud:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    pts[:, 2] += 3
    normals = rng.normal(size=(n, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    conf = rng.uniform(0, 10, n).astype(np.float32)
    return PointCloud(pts, colors, normals, conf)


def mesh() -> Mesh:
    v = np.array([[0, 0, 2], [1, 0, 2], [0, 1, 2], [1, 1, 2]], np.float32)
    t = np.array([[0, 2, 1], [1, 2, 3]], np.int32)
    n = np.tile(np.array([0, 0, -1], np.float32), (4, 1))
    c = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    return Mesh(v, t, n, c)


def test_ply_keeps_colour_normal_and_confidence(tmp_path: Path) -> None:
    import open3d as o3d

    pc = cloud()
    path = write_point_cloud(tmp_path / "c.ply", pc)
    props = read_ply_vertices(path)
    assert list(props) == ["x", "y", "z", "nx", "ny", "nz", "red", "green", "blue", "confidence"]
    np.testing.assert_array_equal(np.stack([props["x"], props["y"], props["z"]], 1), pc.points)
    np.testing.assert_array_equal(np.stack([props["red"], props["green"], props["blue"]], 1), pc.colors)
    np.testing.assert_array_equal(props["confidence"], pc.confidence)
    # Open3D reads it: legacy (positions, normals, colours) and tensor API (also the confidence)
    legacy = o3d.io.read_point_cloud(str(path))
    assert len(legacy.points) == 500 and legacy.has_normals() and legacy.has_colors()
    np.testing.assert_allclose(np.asarray(legacy.normals), pc.normals, atol=1e-6)
    t = o3d.t.io.read_point_cloud(str(path))
    np.testing.assert_allclose(t.point.confidence.numpy().ravel(), pc.confidence)


def test_pcd_obj_glb_point_clouds(tmp_path: Path) -> None:
    import open3d as o3d
    import trimesh

    pc = cloud()
    t = o3d.t.io.read_point_cloud(str(write_point_cloud(tmp_path / "c.pcd", pc)))
    np.testing.assert_allclose(t.point.positions.numpy(), pc.points)
    np.testing.assert_allclose(t.point.confidence.numpy().ravel(), pc.confidence)
    for ext in ("obj", "glb"):
        loaded = trimesh.load(write_point_cloud(tmp_path / f"c.{ext}", pc))
        if isinstance(loaded, trimesh.Scene):
            loaded = next(iter(loaded.geometry.values()))
        assert len(loaded.vertices) == 500
        z = pc.points[:, 2] if ext == "obj" else -pc.points[:, 2]  # GLB: glTF axes (x, -y, -z)
        np.testing.assert_allclose(np.sort(loaded.vertices[:, 2]), np.sort(z), atol=1e-5)


def test_meshes_keep_normals_when_asked_and_colours(tmp_path: Path) -> None:
    import open3d as o3d
    import trimesh

    m = mesh()
    o = o3d.io.read_triangle_mesh(str(write_mesh(tmp_path / "m.ply", m, normals=True)))
    assert len(o.triangles) == 2 and o.has_vertex_normals() and o.has_vertex_colors()
    np.testing.assert_allclose(np.asarray(o.vertex_normals), m.vertex_normals)
    np.testing.assert_allclose(np.asarray(o.vertex_colors) * 255, m.vertex_colors, atol=0.5)
    for ext in ("obj", "glb"):
        tm = trimesh.load(write_mesh(tmp_path / f"m.{ext}", m, normals=True), force="mesh", process=False)
        assert len(tm.faces) == 2
        flip = np.array([1, 1, 1]) if ext == "obj" else np.array([1, -1, -1])  # GLB: glTF axes
        np.testing.assert_allclose(np.asarray(tm.vertex_normals), m.vertex_normals * flip, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(tm.visual.vertex_colors)[:, :3], m.vertex_colors)


def test_bad_extension_and_atomicity(tmp_path: Path) -> None:
    with pytest.raises(MetroUsageError, match=r"\.stl"):
        write_mesh(tmp_path / "m.stl", mesh())
    with pytest.raises(MetroUsageError, match="point cloud"):
        write_point_cloud(tmp_path / "c.xyz", cloud())
    target = tmp_path / "c.ply"
    target.write_bytes(b"old")

    class Boom(PointCloud):
        def __len__(self) -> int:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_point_cloud(target, Boom(*cloud().__dict__.values()))
    assert target.read_bytes() == b"old"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ply"]  # and no temporary file is left


def test_ply_round_trip_keeps_dtypes_and_normals(tmp_path: Path) -> None:
    pc = cloud()
    props = read_ply_vertices(write_point_cloud(tmp_path / "c.ply", pc))
    assert {k: v.dtype for k, v in props.items()} == {
        **dict.fromkeys(["x", "y", "z", "nx", "ny", "nz", "confidence"], np.dtype(np.float32)),
        **dict.fromkeys(["red", "green", "blue"], np.dtype(np.uint8)),
    }
    np.testing.assert_array_equal(np.stack([props["nx"], props["ny"], props["nz"]], 1), pc.normals)
    bare = PointCloud(pc.points, None, None, None)
    assert list(read_ply_vertices(write_point_cloud(tmp_path / "bare.ply", bare))) == ["x", "y", "z"]


def test_empty_point_cloud_is_refused(tmp_path: Path) -> None:
    from metrocli.errors import ReconstructionError

    with pytest.raises(ReconstructionError, match="empty"):
        write_point_cloud(tmp_path / "c.ply", PointCloud(np.zeros((0, 3), np.float32), None, None, None))
    assert not list(tmp_path.iterdir())


def _glb_json(path: Path) -> dict:
    import json
    import struct

    data = path.read_bytes()
    n = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20 : 20 + n])


def _pose(yaw_deg: float, t: tuple[float, float, float]) -> np.ndarray:
    """Camera -> reference (OpenCV axes): turned about the camera's y axis, then moved by ``t``."""
    a = np.radians(yaw_deg)
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    pose[:3, 3] = t
    return pose


def room_mesh() -> Mesh:
    """A floor 1.5 m below the camera (OpenCV y down) and a wall 3 m ahead, normals towards the camera."""
    floor = np.array([[-1, 1.5, 1], [1, 1.5, 1], [-1, 1.5, 3], [1, 1.5, 3]], np.float32)
    wall = np.array([[-1, -1, 3], [1, -1, 3], [-1, 1.5, 3], [1, 1.5, 3]], np.float32)
    v = np.vstack([floor, wall])
    t = np.array([[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6]], np.int32)
    n = np.vstack([np.tile([0, -1, 0], (4, 1)), np.tile([0, 0, -1], (4, 1))]).astype(np.float32)
    return Mesh(v, t, n, np.full((8, 3), 200, np.uint8))


def test_glb_is_y_up_and_in_front_of_its_gltf_cameras(tmp_path: Path) -> None:
    import trimesh

    from metrocli.camera.intrinsics import centred
    from metrocli.io.geometry_io import CameraView, gltf_camera_matrix

    k = centred(640, 480, 500.0, "user")
    cams = (CameraView("a.jpg", k, np.eye(4)), CameraView("b.jpg", k, _pose(20.0, (0.5, 0.0, 0.2))))
    m = room_mesh()
    for frustums in (False, True):
        path = write_mesh(tmp_path / f"m{frustums}.glb", m, normals=True, cameras=cams, frustums=frustums)
        scene = trimesh.load(path, process=False)
        assert isinstance(scene, trimesh.Scene)
        verts = np.asarray(scene.geometry["scene"].vertices)
        # y up: the floor (1.5 m below the camera) is at y = -1.5, the wall's top above it
        assert verts[:, 1].min() == pytest.approx(-1.5) and verts[:, 1].max() == pytest.approx(1.0)
        # normals turned with the positions: the floor's normal points up, the wall's towards the camera (+z)
        normals = np.asarray(scene.geometry["scene"].vertex_normals)
        np.testing.assert_allclose(normals[:4], np.tile([0, 1, 0], (4, 1)), atol=1e-6)
        np.testing.assert_allclose(normals[4:], np.tile([0, 0, 1], (4, 1)), atol=1e-6)
        # trimesh reads a glTF camera; the scene lies in front of it (its local -z)
        assert scene.camera is not None
        local = trimesh.transform_points(verts, np.linalg.inv(scene.camera_transform))
        assert (local[:, 2] < 0).all()
        # every camera node: perspective camera with the photo's field of view, scene in front of it
        doc = _glb_json(path)
        nodes = [n for n in doc["nodes"] if "camera" in n]
        assert [n["name"] for n in nodes] == ["a.jpg", "b.jpg"]
        for node, cam in zip(nodes, cams, strict=True):
            gl = doc["cameras"][node["camera"]]
            assert gl["type"] == "perspective"
            assert gl["perspective"]["yfov"] == pytest.approx(np.radians(k.fov_y_deg))
            assert gl["perspective"]["aspectRatio"] == pytest.approx(640 / 480)
            matrix = np.array(node["matrix"]).reshape(4, 4).T
            np.testing.assert_allclose(matrix, gltf_camera_matrix(cam.pose_camera_to_reference))
            local = trimesh.transform_points(verts, np.linalg.inv(matrix))
            assert (local[:, 2] < 0).mean() > 0.7  # in front (a turned camera sees most of it)
        np.testing.assert_allclose(gltf_camera_matrix(np.eye(4)), np.eye(4))
        frustum_names = sorted(n for n in scene.geometry if n.startswith("frustum"))
        assert frustum_names == (["frustum a.jpg", "frustum b.jpg"] if frustums else [])


def test_mesh_files_have_no_normals_unless_asked_and_a_grid_mesh_ply_is_about_half_of_float64(
    tmp_path: Path,
) -> None:
    import open3d as o3d
    import trimesh

    from metrocli.camera.intrinsics import centred
    from metrocli.geometry.mesh import grid_mesh

    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 2.0 + 0.3 * np.sin(xx / 20) + 0.2 * np.cos(yy / 15)
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    m = grid_mesh(depth, centred(w, h, 250.0, "user"), rgb=rgb)
    plain = write_mesh(tmp_path / "m.ply", m)
    header = plain.read_bytes().split(b"end_header")[0].decode()
    assert "nx" not in header and "property float x" in header and "property uchar red" in header
    o = o3d.io.read_triangle_mesh(str(plain))
    assert not o.has_vertex_normals() and o.has_vertex_colors()
    np.testing.assert_array_equal(np.asarray(o.vertices), m.vertices)
    # The old file: Open3D's legacy writer, float64 positions and normals (94.6 MB at 1.2 MP in the issue).
    old = tmp_path / "old.ply"
    assert o3d.io.write_triangle_mesh(str(old), m.to_open3d(), write_ascii=False)
    assert "double" in old.read_bytes()[:600].decode("latin-1")
    assert plain.stat().st_size < 0.56 * old.stat().st_size
    assert write_mesh(tmp_path / "n.ply", m, normals=True).stat().st_size > plain.stat().st_size
    assert "\nvn " not in write_mesh(tmp_path / "m.obj", m).read_text()
    assert "\nvn " in write_mesh(tmp_path / "n.obj", m, normals=True).read_text()
    glb = trimesh.load(write_mesh(tmp_path / "m.glb", m), process=False)
    assert "vertex_normals" not in next(iter(glb.geometry.values()))._cache.cache


def test_glb_point_cloud_has_its_camera(tmp_path: Path) -> None:
    import trimesh

    from metrocli.camera.intrinsics import centred
    from metrocli.io.geometry_io import CameraView

    cam = CameraView("p.jpg", centred(640, 480, 500.0, "user"), np.eye(4))
    pc = cloud()
    scene = trimesh.load(write_point_cloud(tmp_path / "c.glb", pc, cameras=(cam,)), process=False)
    verts = np.asarray(next(iter(scene.geometry.values())).vertices)
    np.testing.assert_allclose(verts, pc.points * [1, -1, -1], atol=1e-6)
    np.testing.assert_allclose(scene.camera_transform, np.eye(4))
    assert (verts[:, 2] < 0).all()


def test_mesh_ply_is_float32_and_obj_has_six_decimals(tmp_path: Path) -> None:
    import open3d as o3d

    m = room_mesh()
    path = write_mesh(tmp_path / "m.ply", m, normals=True)
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "binary_little_endian" in header and "double" not in header
    assert "property float x" in header and "property float nx" in header
    o = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_array_equal(np.asarray(o.vertices), m.vertices)  # float32 values exactly
    np.testing.assert_array_equal(np.asarray(o.triangles), m.triangles)
    np.testing.assert_allclose(np.asarray(o.vertex_normals), m.vertex_normals, atol=1e-7)
    obj = write_mesh(tmp_path / "m.obj", m).read_text()
    assert "v -1.000000 1.500000 1.000000" in obj
