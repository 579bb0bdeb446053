"""Real NYUv2 (Kinect) and KITTI (LiDAR) frames with their sensor depth give sane metric point clouds:
the NYU floor is found as a plane below the camera, and the KITTI road is horizontal in the camera frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.normals import known_normals
from metrocli.geometry.pointcloud import point_cloud_from_depth
from metrocli.io.sensor_depth import load_sensor_depth

UP = np.array([0.0, -1.0, 0.0])  # camera frame: y points down


def frames(shared_dir: Path, name: str) -> list[dict]:
    root = shared_dir / "datasets" / "metric3d-demo"
    ann = root / name / "test_annotations.json"
    if not ann.is_file():
        pytest.skip(f"{ann} is not present")
    files = json.loads(ann.read_text())["files"]
    for f in files:
        f["rgb"] = root / f["rgb"]
        f["depth"] = root / f["depth"]
    return files


def cloud_of(frame: dict):
    from metrocli.camera.photo import load_photo

    fx, fy, cx, cy = frame["cam_in"]
    photo = load_photo(frame["rgb"], focal_px=fx)
    sensor = load_sensor_depth(frame["depth"], photo, depth_scale=1.0 / frame["depth_scale"])
    h, w = sensor.depth_m.shape
    k = Intrinsics(fx, fy, cx, cy, w, h, "user")
    cloud = point_cloud_from_depth(sensor.depth_m, k, rgb=photo.image)
    return sensor, cloud


def planes(cloud, threshold_m: float, count: int = 3) -> list[tuple[np.ndarray, float, float]]:
    """The ``count`` largest RANSAC planes: (unit normal facing up, offset d of n·x + d = 0, inlier share)."""
    import open3d as o3d

    o3d.utility.random.seed(0)
    full = cloud.to_open3d()
    rest = full.voxel_down_sample(threshold_m)
    total = len(rest.points)
    out = []
    for _ in range(count):
        model, inliers = rest.segment_plane(threshold_m, 3, 500)
        n, d = np.array(model[:3]), float(model[3])
        if n @ UP < 0:
            n, d = -n, -d
        out.append((n, d, len(inliers) / total))
        rest = rest.select_by_index(inliers, invert=True)
    return out


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


@pytest.mark.slow
def test_nyu_floor_is_a_plane_below_the_camera(shared_dir: Path) -> None:
    for frame in frames(shared_dir, "nyu_demo"):
        sensor, cloud = cloud_of(frame)
        assert sensor.quantum_m == pytest.approx(0.001)
        valid = int((sensor.depth_m > 0).sum())
        assert len(cloud) > 0.9 * valid  # flying-pixel removal only trims edges
        assert known_normals(cloud.normals).all()
        assert 0.3 < np.median(cloud.points[:, 2]) < 8.0  # indoor scale, metres
        found = [
            (n, d, share)
            for n, d, share in planes(cloud, 0.02)
            if angle_deg(n, UP) < 25 and share > 0.1 and 1.0 < d < 2.0
        ]
        # the floor: facing up (within the camera's pitch), 1-2 m below the camera, >10 % of the points
        assert found, f"no floor plane in {frame['depth'].name}"


@pytest.mark.slow
def test_kitti_road_is_horizontal(shared_dir: Path) -> None:
    for frame in frames(shared_dir, "kitti_demo"):
        sensor, cloud = cloud_of(frame)
        assert sensor.quantum_m == pytest.approx(1 / 256)
        assert len(cloud) > 50_000
        assert np.percentile(cloud.points[:, 2], 95) > 20.0  # outdoor scale
        (n, d, share), *_ = planes(cloud, 0.1)
        # the dominant plane is the road: horizontal within 15 degrees, about 1.65 m below the camera
        assert angle_deg(n, UP) < 15.0
        assert share > 0.3
        assert 1.3 < d < 2.0
        # its points' normals (from LiDAR neighbourhoods) mostly point up too
        road = np.abs(cloud.points @ n + d) < 0.05
        ang = np.degrees(np.arccos(np.clip(cloud.normals[road] @ UP, -1, 1)))
        assert np.median(ang) < 15.0
