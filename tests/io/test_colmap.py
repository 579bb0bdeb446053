"""COLMAP text model: pycolmap reads back the intrinsics and poses (world-to-camera) exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metrocli.camera.intrinsics import Intrinsics
from metrocli.io.colmap import colmap_pose, write_colmap_text
from metrocli.io.geometry_io import CameraView


def _cameras() -> list[CameraView]:
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(7)
    out = [CameraView("a.jpg", Intrinsics(500.0, 501.5, 330.25, 236.5, 640, 480), np.eye(4))]
    for k in range(3):
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()  # angles up to ~180 degrees
        pose[:3, 3] = rng.normal(size=3)
        out.append(CameraView(f"v{k}.jpg", Intrinsics(520.0 + k, 520.0 + k, 240.0, 320.0, 480, 640), pose))
    return out


def test_colmap_pose_is_world_to_camera() -> None:
    from scipy.spatial.transform import Rotation

    for cam in _cameras():
        q, t = colmap_pose(cam.pose_camera_to_reference)
        assert q[0] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        r = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()
        world_to_camera = np.linalg.inv(cam.pose_camera_to_reference)
        np.testing.assert_allclose(r, world_to_camera[:3, :3], atol=1e-12)
        np.testing.assert_allclose(t, world_to_camera[:3, 3], atol=1e-12)


def test_pycolmap_reads_the_model_back(tmp_path: Path) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    cams = _cameras()
    pts = np.random.default_rng(1).uniform(-1, 1, (50, 3))
    rgb = np.random.default_rng(2).integers(0, 256, (50, 3), dtype=np.uint8)
    files = write_colmap_text(tmp_path / "sparse", cams, pts, rgb)
    assert [f.name for f in files] == ["cameras.txt", "images.txt", "points3D.txt"]
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse"))
    assert len(rec.images) == 4 and len(rec.cameras) == 4 and len(rec.points3D) == 50
    by_name = {im.name: im for im in rec.images.values()}
    for cam in cams:
        image = by_name[cam.name]
        world_to_camera = np.linalg.inv(cam.pose_camera_to_reference)[:3]
        np.testing.assert_allclose(image.cam_from_world().matrix(), world_to_camera, atol=1e-9)
        camera = rec.cameras[image.camera_id]
        assert camera.model.name == "PINHOLE" and (camera.width, camera.height) == (
            cam.intrinsics.width,
            cam.intrinsics.height,
        )
        np.testing.assert_allclose(camera.params, cam.intrinsics.as_tuple())
    xyz = np.array([p.xyz for p in sorted(rec.points3D.values(), key=lambda p: tuple(p.xyz))])
    np.testing.assert_allclose(xyz, pts[np.lexsort(pts.T[::-1])], atol=1e-12)
