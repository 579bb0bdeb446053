"""Backprojection and edge-aware sub-pixel depth sampling on analytic depth maps."""

from __future__ import annotations

import numpy as np
import pytest

from metrocli.camera.intrinsics import Intrinsics, centred
from metrocli.geometry.backproject import backproject, backproject_pixels, pixel_rays, project
from metrocli.geometry.sampling import inside_image, same_surface, sample_depth, valid_depth_mask

K = Intrinsics(500.0, 480.0, 161.3, 118.7, 320, 240, "user")


def plane_depth(k: Intrinsics, normal, distance_m: float) -> np.ndarray:
    """Depth (H, W) float32 of the plane ``n · X = -distance`` (n facing the camera)."""
    n = np.asarray(normal, np.float64)
    n /= np.linalg.norm(n)
    z = -distance_m / (pixel_rays(k).astype(np.float64) @ n)
    z[z <= 0] = 0
    return z.astype(np.float32)


def test_backproject_formula() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 5.0, (K.height, K.width)).astype(np.float32)
    pts = backproject(depth, K)
    assert pts.shape == (240, 320, 3) and pts.dtype == np.float32
    v, u = 17, 203
    z = depth[v, u]
    np.testing.assert_allclose(
        pts[v, u], [(u - K.cx) * z / K.fx, (v - K.cy) * z / K.fy, z], rtol=1e-6, atol=1e-6
    )
    # x right, y down: a pixel right of and below the principal point has X > 0, Y > 0
    assert pts[200, 300, 0] > 0 and pts[200, 300, 1] > 0


def test_backproject_marks_invalid_depth_nan() -> None:
    depth = np.full((K.height, K.width), 2.0, np.float32)
    depth[0, 0] = 0
    depth[0, 1] = np.nan
    depth[0, 2] = np.inf
    depth[0, 3] = 300.0  # Metric3D's sky clamp
    pts = backproject(depth, K)
    assert np.isnan(pts[0, :4]).all()
    assert np.isfinite(pts[0, 4:]).all()
    assert valid_depth_mask(depth).sum() == depth.size - 4


def test_backproject_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match="320x240"):
        backproject(np.ones((10, 10), np.float32), K)


def test_project_inverts_backproject_pixels() -> None:
    u = np.array([0.0, 12.25, 319.0])
    v = np.array([3.5, 200.0, 239.0])
    z = np.array([0.7, 2.0, 9.0])
    p = backproject_pixels(u, v, z, K)
    np.testing.assert_allclose(project(p, K), np.stack([u, v], axis=1), atol=1e-9)


def test_inside_image_extent() -> None:
    assert inside_image(0, 0, 320, 240)
    assert inside_image(319.5, 239.5, 320, 240)
    assert inside_image(-0.5, -0.5, 320, 240)
    assert not inside_image(320, 10, 320, 240)
    assert not inside_image(10, -1, 320, 240)
    assert not inside_image(np.nan, 10, 320, 240)


def test_subpixel_sampling_exact_on_planes() -> None:
    depth = plane_depth(K, (0.2, -0.6, -0.7), 2.0)
    rng = np.random.default_rng(1)
    u = rng.uniform(0, K.width - 1, 200)
    v = rng.uniform(0, K.height - 1, 200)
    z = sample_depth(depth, u, v)
    n = np.array([0.2, -0.6, -0.7]) / np.linalg.norm([0.2, -0.6, -0.7])
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=1)
    truth = -2.0 / (rays @ n)
    # inverse-depth bilinear interpolation is exact on planes (up to float32 storage of the map)
    np.testing.assert_allclose(z, truth, rtol=2e-6)


def test_subpixel_sampling_never_mixes_surfaces() -> None:
    depth = np.full((K.height, K.width), 4.0, np.float32)
    depth[:, :100] = 1.0  # a foreground object left of column 100
    # between column 99 (front) and 100 (back): snaps to the front surface, never a blend
    z = sample_depth(depth, np.array([99.2, 99.5, 99.9]), np.array([50.0, 50.5, 50.0]))
    np.testing.assert_allclose(z, [1.0, 1.0, 1.0], rtol=1e-12)
    # well inside each surface the value is exact
    assert sample_depth(depth, 50.3, 60.7) == pytest.approx(1.0)
    assert sample_depth(depth, 150.3, 60.7) == pytest.approx(4.0)
    # same-surface threshold: 5 % relative
    assert same_surface(1.0, 1.04) and not same_surface(1.0, 1.06)


def test_subpixel_sampling_skips_invalid_neighbours() -> None:
    depth = np.full((K.height, K.width), 2.0, np.float32)
    depth[10, 11] = 0.0
    assert sample_depth(depth, 10.5, 10.0) == pytest.approx(2.0)
    depth[10:12, 10:12] = 0.0
    assert np.isnan(sample_depth(depth, 10.5, 10.5))


def test_centred_intrinsics_rays() -> None:
    k = centred(4, 2, 2.0, "user")
    rays = pixel_rays(k)
    np.testing.assert_allclose(rays[1, 2], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(rays[0, 0], [-1.0, -0.5, 1.0])


def test_subpixel_sampling_extrapolates_the_plane_next_to_an_edge() -> None:
    # a tilted plane in front of a far wall: next to the silhouette only some neighbours are on the plane,
    # and the plane is extrapolated exactly instead of taking the nearest sample's value
    plane = plane_depth(K, (0.2, -0.6, -0.7), 2.0)
    depth = plane.copy()
    depth[:, 200:] = 20.0
    u = np.array([199.5, 199.9, 199.2])
    v = np.array([80.3, 120.7, 150.5])
    n = np.array([0.2, -0.6, -0.7]) / np.linalg.norm([0.2, -0.6, -0.7])
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=1)
    np.testing.assert_allclose(sample_depth(depth, u, v), -2.0 / (rays @ n), rtol=1e-5)
