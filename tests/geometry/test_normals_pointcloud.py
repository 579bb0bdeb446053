"""Depth-gradient normals, depth edges and flying-pixel removal on analytic depth maps."""

from __future__ import annotations

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.backproject import pixel_rays
from metrocli.geometry.normals import depth_edges, grazing_mask, known_normals, normals_from_depth
from metrocli.geometry.pointcloud import CleanOptions, clean_mask, point_cloud_from_depth

K = Intrinsics(300.0, 300.0, 100.0, 75.0, 200, 150, "user")


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def plane_depth(k: Intrinsics, normal, distance_m: float) -> np.ndarray:
    n = unit(normal)
    z = -distance_m / (pixel_rays(k).astype(np.float64) @ n)
    z[z <= 0] = 0
    return z.astype(np.float32)


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


def test_normals_of_planes_are_exact_and_face_the_camera() -> None:
    for n_true in (unit((0, 0, -1)), unit((0.3, -0.8, -0.5)), unit((-0.6, 0.1, -0.4))):
        depth = plane_depth(K, n_true, 2.0)
        n = normals_from_depth(depth, K)
        assert n.shape == (150, 200, 3) and n.dtype == np.float32
        ok = known_normals(n)
        assert ok.mean() > 0.99
        assert angle_deg(n[ok], n_true).max() < 0.05
        np.testing.assert_allclose(np.linalg.norm(n[ok], axis=-1), 1.0, atol=1e-5)


def test_normals_one_sided_at_edges_and_nan_without_depth() -> None:
    # a floor (normal -y, i.e. up) with a box front face (normal -z) in front of it
    floor = plane_depth(K, (0, -1, 0), 1.0)
    depth = floor.copy()
    depth[:, :] = np.where(np.isfinite(depth) & (depth > 0), depth, 0)
    depth[60:, 50:120] = np.minimum(depth[60:, 50:120], 1.5)
    depth[:40, :] = 0  # no depth above the horizon band
    n = normals_from_depth(depth, K)
    assert not known_normals(n[:40]).any()
    # pixels right at the edge of the box still get the box's normal from one-sided differences
    box = n[100:140, 50:120]
    assert known_normals(box).all()
    assert angle_deg(box, np.array([0, 0, -1.0])).max() < 0.1
    floor_px = n[120:140, 130:190]
    assert angle_deg(floor_px[known_normals(floor_px)], np.array([0, -1.0, 0])).max() < 0.1
    # an isolated pixel has no neighbour on its surface: no normal
    iso = np.zeros_like(depth)
    iso[70, 70] = 2.0
    assert not known_normals(normals_from_depth(iso, K)).any()


def test_depth_edges_mark_the_far_side_only() -> None:
    depth = np.full((150, 200), 3.0, np.float32)
    depth[:, :100] = 1.0
    edges = depth_edges(depth)
    assert edges[:, 100].all() and not edges[:, 99].any()
    assert edges.sum() == 150
    both = depth_edges(depth, far_side_only=False)
    assert both[:, 99].all() and both[:, 100].all()
    # a plane seen obliquely has no edges
    assert not depth_edges(plane_depth(K, (0.3, -0.8, -0.5), 2.0)).any()


def test_flying_pixels_are_removed() -> None:
    depth = np.full((150, 200), 3.0, np.float32)
    depth[:, :100] = 1.0
    depth[:, 100] = 2.0  # a column of flying pixels smeared between the two surfaces
    cloud = point_cloud_from_depth(depth, K)
    z = cloud.points[:, 2]
    assert not np.any((z > 1.1) & (z < 2.9)), "flying pixels survived"
    # the foreground is complete, the background loses only its rim
    assert np.sum(z < 1.1) == 150 * 100
    assert np.sum(z > 2.9) >= 150 * 97


def test_grazing_and_confidence_thresholds() -> None:
    depth = plane_depth(K, (0, 0, -1), 2.0)
    normal = np.zeros((150, 200, 3), np.float32)
    normal[..., 2] = -1.0
    rays = pixel_rays(K)[:, :20].astype(np.float64)
    edge_on = np.cross(rays, [0.0, 1.0, 0.0])  # perpendicular to each view ray
    normal[:, :20] = edge_on / np.linalg.norm(edge_on, axis=-1, keepdims=True)
    normal[:, 20:40] = 0.0  # unknown: never counts as grazing
    assert grazing_mask(normal, K)[:, :20].all()
    assert not grazing_mask(normal, K)[:, 20:].any()
    conf = np.ones((150, 200), np.float32)
    conf[:, 150:] = 0.01
    keep = clean_mask(depth, K, normal=normal, confidence=conf)
    assert not keep[:, :20].any() and not keep[:, 150:].any() and keep[:, 20:150].all()
    lenient = CleanOptions(max_grazing_deg=None, min_rel_confidence=0.0)
    assert clean_mask(depth, K, normal=normal, confidence=conf, options=lenient).all()
    strict = CleanOptions(min_confidence=2.0)
    assert not clean_mask(depth, K, confidence=conf, options=strict).any()


def test_point_cloud_attributes() -> None:
    depth = plane_depth(K, (0.3, -0.8, -0.5), 2.0)
    rgb = np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    conf = np.full((150, 200), 5.0, np.float32)
    cloud = point_cloud_from_depth(depth, K, rgb=rgb, confidence=conf)
    n = len(cloud)
    assert n > 0.95 * depth.size
    assert cloud.points.shape == (n, 3) and cloud.colors.shape == (n, 3) and cloud.confidence.shape == (n,)
    u, v = cloud.pixels[123]
    np.testing.assert_array_equal(cloud.colors[123], rgb[v, u])
    assert np.allclose(cloud.points[123, 2], depth[v, u])
    assert known_normals(cloud.normals).all()
    assert (np.sum(cloud.normals * cloud.points, axis=1) < 0).all()


def test_sparse_depth_gets_normals_from_neighbours() -> None:
    # LiDAR-like: only every 4th row and 3rd column has depth, so image-space derivatives are undefined
    depth = plane_depth(K, (0, -1, 0), 1.5)
    sparse = np.zeros_like(depth)
    sparse[::4, ::3] = depth[::4, ::3]
    sparse[sparse > 10.0] = 0  # scan lines far away are too far apart for a neighbourhood plane fit
    cloud = point_cloud_from_depth(sparse, K)
    assert len(cloud) > 500
    assert known_normals(cloud.normals).all()
    assert np.median(angle_deg(cloud.normals, np.array([0, -1.0, 0]))) < 2.0
