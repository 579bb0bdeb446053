"""TSDF fusion of rendered views with their true poses: accuracy, normals, colours, voxel default, errors."""

from __future__ import annotations

import numpy as np
import pytest

from metrocli.camera.intrinsics import centred
from metrocli.errors import ReconstructionError
from metrocli.geometry.fusion import FusionFrame, default_voxel_m, fuse_tsdf
from metrocli.geometry.mesh import Mesh
from metrocli.io.geometry_io import write_mesh


@pytest.fixture(scope="module")
def renders():
    from metrocli.synth.multiview import render_views

    return render_views(320, 240)[:3]


def _frames(renders) -> list[FusionFrame]:
    ref_inv = np.linalg.inv(renders[0].pose)
    return [FusionFrame(r.rgb, r.depth_m, r.intrinsics, ref_inv @ r.pose) for r in renders]


def test_fused_mesh_lies_on_the_true_surfaces(renders) -> None:
    from metrocli.synth import room_scene
    from metrocli.synth.multiview import scene_metrics, to_world

    mesh = fuse_tsdf(_frames(renders), voxel_m=0.02)
    verts = np.asarray(mesh.vertices)
    m = scene_metrics(to_world(verts, renders[0].pose), np.asarray(mesh.triangles), room_scene(), renders)
    assert m.accuracy_median_m < 0.01  # half a voxel: the TSDF zero crossing is interpolated
    assert m.accuracy_p90_m < 0.025
    assert m.completeness > 0.97
    normals = np.asarray(mesh.vertex_normals)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    colours = np.asarray(mesh.vertex_colors)
    assert colours.shape == verts.shape and 0.05 < colours.mean() < 0.95
    # in the first camera's frame: the room is in front of it
    assert np.median(verts[:, 2]) > 1.0


def test_mesh_normals_face_the_observing_camera(renders) -> None:
    mesh = fuse_tsdf(_frames(renders)[:1], voxel_m=0.02)
    verts = np.asarray(mesh.vertices)
    normals = np.asarray(mesh.vertex_normals)
    towards_camera = -verts / np.linalg.norm(verts, axis=1, keepdims=True)
    assert np.mean(np.sum(normals * towards_camera, axis=1) > 0) > 0.95


def test_default_voxel_follows_scene_extent(renders) -> None:
    frames = _frames(renders)
    voxel = default_voxel_m(frames)
    assert 0.005 < voxel < 0.03
    far = [FusionFrame(f.rgb, f.depth_m * 10, f.intrinsics, f.pose) for f in frames]
    assert default_voxel_m(far) == pytest.approx(0.05)  # clamped
    near = [FusionFrame(f.rgb, f.depth_m * 0.01, f.intrinsics, f.pose) for f in frames]
    assert default_voxel_m(near) == pytest.approx(0.004)


def test_fusion_errors() -> None:
    intr = centred(32, 24, 30.0, "user")
    empty = FusionFrame(np.zeros((24, 32, 3), np.uint8), np.zeros((24, 32), np.float32), intr, np.eye(4))
    with pytest.raises(ReconstructionError):
        fuse_tsdf([])
    with pytest.raises(ReconstructionError, match="valid depth"):
        fuse_tsdf([empty])
    bad = FusionFrame(np.zeros((10, 10, 3), np.uint8), np.ones((24, 32), np.float32), intr, np.eye(4))
    with pytest.raises(ReconstructionError, match="sizes differ"):
        fuse_tsdf([bad], voxel_m=0.05)


def test_write_mesh_atomic_ply(renders, tmp_path) -> None:
    import open3d as o3d

    mesh = fuse_tsdf(_frames(renders)[:1], voxel_m=0.04)
    out = write_mesh(tmp_path / "m.ply", Mesh.from_open3d(mesh), normals=True)
    back = o3d.io.read_triangle_mesh(str(out))
    assert len(back.triangles) == len(mesh.triangles)
    assert back.has_vertex_normals() and back.has_vertex_colors()
    assert [p.name for p in tmp_path.iterdir()] == ["m.ply"]  # no temporary left behind
