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
        np.testing.assert_allclose(np.sort(loaded.vertices[:, 2]), np.sort(pc.points[:, 2]), atol=1e-5)


def test_meshes_keep_normals_and_colours(tmp_path: Path) -> None:
    import open3d as o3d
    import trimesh

    m = mesh()
    o = o3d.io.read_triangle_mesh(str(write_mesh(tmp_path / "m.ply", m)))
    assert len(o.triangles) == 2 and o.has_vertex_normals() and o.has_vertex_colors()
    np.testing.assert_allclose(np.asarray(o.vertex_normals), m.vertex_normals)
    np.testing.assert_allclose(np.asarray(o.vertex_colors) * 255, m.vertex_colors, atol=0.5)
    for ext in ("obj", "glb"):
        tm = trimesh.load(write_mesh(tmp_path / f"m.{ext}", m), force="mesh", process=False)
        assert len(tm.faces) == 2
        np.testing.assert_allclose(np.asarray(tm.vertex_normals), m.vertex_normals, atol=1e-5)
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
