"""Grid and Poisson meshes and line measurement on analytic depth maps (planes and a box made by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MeasurementError, MetroUsageError
from metrocli.geometry.backproject import pixel_rays
from metrocli.geometry.measure import MODEL_ERROR, ErrorModel, measure_lines, sensor_error
from metrocli.geometry.mesh import auto_stride, grid_mesh, poisson_mesh, simplify
from metrocli.geometry.normals import known_normals
from metrocli.geometry.pointcloud import point_cloud_from_depth

K = Intrinsics(260.0, 260.0, 120.0, 90.0, 240, 180, "user")


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def plane_depth(k: Intrinsics, normal, distance_m: float) -> np.ndarray:
    n = unit(normal)
    with np.errstate(divide="ignore"):
        z = -distance_m / (pixel_rays(k).astype(np.float64) @ n)
    z[~(z > 0)] = np.inf
    return z


def box_scene() -> tuple[np.ndarray, list[tuple[np.ndarray, float]]]:
    """A wall 4 m away, a floor 1.2 m below the camera and a box front face 2 m away (x in [-0.5, 0.3])."""
    planes = [(unit((0, 0, -1)), 4.0), (unit((0, -1, 0)), 1.2)]
    z = np.minimum(plane_depth(K, *planes[0]), plane_depth(K, *planes[1]))
    front = plane_depth(K, (0, 0, -1), 2.0)
    rays = pixel_rays(K).astype(np.float64)
    x, y = rays[..., 0] * front, rays[..., 1] * front
    on_box = (x > -0.5) & (x < 0.3) & (y > 0.4) & (y < 1.2)
    z = np.where(on_box & (front < z), front, z)
    return z.astype(np.float32), [*planes, (unit((0, 0, -1)), 2.0)]


def plane_distance(points: np.ndarray, planes) -> np.ndarray:
    """Distance of each point to the nearest of the planes."""
    return np.min([np.abs(points @ n + d) for n, d in planes], axis=0)


def test_grid_mesh_on_box_scene() -> None:
    depth, planes = box_scene()
    rgb = np.full((180, 240, 3), 200, np.uint8)
    mesh = grid_mesh(depth, K, rgb=rgb)
    assert len(mesh.triangles) > 0.9 * 2 * 239 * 179
    assert mesh.vertices.dtype == np.float32 and mesh.triangles.dtype == np.int32
    assert mesh.vertex_colors.shape == mesh.vertices.shape
    # vertices lie on the true surfaces
    assert plane_distance(mesh.vertices.astype(np.float64), planes).max() < 1e-4
    # no triangle bridges the 2 m jump between the box and the wall/floor behind it
    zt = mesh.vertices[mesh.triangles][..., 2]
    assert ((zt.max(axis=1) - zt.min(axis=1)) / zt.min(axis=1)).max() <= 0.05 + 1e-6
    # triangles face the camera, vertex normals are unit and face the camera
    v = mesh.vertices[mesh.triangles].astype(np.float64)
    face = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert (np.sum(face * v[:, 0], axis=1) < 0).all()
    np.testing.assert_allclose(np.linalg.norm(mesh.vertex_normals, axis=1), 1.0, atol=1e-5)
    assert (np.sum(mesh.vertex_normals * mesh.vertices, axis=1) < 0).all()


def test_grid_mesh_uses_given_normals() -> None:
    depth = plane_depth(K, (0.2, -0.5, -0.8), 2.0).astype(np.float32)
    normal = np.zeros((180, 240, 3), np.float32)
    normal[...] = unit((0.0, 0.0, 1.0))  # deliberately "wrong" and facing away: used, but flipped
    mesh = grid_mesh(depth, K, normal=normal)
    np.testing.assert_allclose(mesh.vertex_normals, np.tile([0, 0, -1.0], (len(mesh.vertices), 1)))
    # without normals: depth-gradient normals, exact on a plane
    mesh = grid_mesh(depth, K)
    cos = mesh.vertex_normals @ unit((0.2, -0.5, -0.8))
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 0.1


def test_grid_mesh_stride_and_simplify() -> None:
    depth, planes = box_scene()
    mesh = grid_mesh(depth, K, stride=3)
    assert len(mesh.vertices) <= 80 * 60
    assert plane_distance(mesh.vertices.astype(np.float64), planes).max() < 1e-4
    small = simplify(mesh, 1000)
    assert 0 < len(small.triangles) <= 1000
    assert known_normals(small.vertex_normals).all()
    assert plane_distance(small.vertices.astype(np.float64), planes).max() < 0.01
    assert auto_stride(4000, 3000, 3_000_000) == 2 and auto_stride(100, 100, None) == 1


def test_poisson_mesh_stays_on_the_observed_surface() -> None:
    depth, planes = box_scene()
    depth = np.where(depth < 6.0, depth, 0).astype(np.float32)  # the floor beyond 6 m is not observed
    rgb = np.zeros((180, 240, 3), np.uint8)
    rgb[..., 0] = 255
    cloud = point_cloud_from_depth(depth, K, rgb=rgb)
    mesh = poisson_mesh(cloud, depth=7)
    assert len(mesh.triangles) > 1000
    lo, hi = cloud.points.min(axis=0), cloud.points.max(axis=0)
    margin = 0.1
    assert (mesh.vertices >= lo - margin).all() and (mesh.vertices <= hi + margin).all()
    dist = plane_distance(mesh.vertices.astype(np.float64), planes)
    assert np.median(dist) < 0.01
    assert mesh.vertex_colors is not None and mesh.vertex_colors[:, 0].mean() > 200
    np.testing.assert_allclose(np.linalg.norm(mesh.vertex_normals, axis=1), 1.0, atol=1e-4)


# ------------------------------------------------------------------------------------------- measure
def pixel_of(point, k: Intrinsics = K) -> tuple[float, float]:
    x, y, z = point
    return (k.fx * x / z + k.cx, k.fy * y / z + k.cy)


def test_measure_distances_on_a_tilted_plane() -> None:
    n = unit((0.3, -0.5, -0.8))
    depth = plane_depth(K, n, 2.5).astype(np.float32)
    # two points on the plane, projected to (sub-)pixels
    a = np.array([-0.4, 0.2, 0.0])
    a[2] = (-2.5 - n[0] * a[0] - n[1] * a[1]) / n[2]
    b = np.array([0.5, -0.3, 0.0])
    b[2] = (-2.5 - n[0] * b[0] - n[1] * b[1]) / n[2]
    (m,) = measure_lines(depth, K, [(*pixel_of(a), *pixel_of(b))])
    assert m.distance_m == pytest.approx(np.linalg.norm(a - b), rel=1e-4)
    np.testing.assert_allclose(m.from_m, a, atol=1e-4)
    np.testing.assert_allclose(m.to_m, b, atol=1e-4)
    assert m.uncertainty_m == 0.0  # no error model given
    d = m.to_dict()
    # issue 15 added sigma_m (= uncertainty_m) and its contributors (none without an error model)
    assert set(d) == {
        "from_px",
        "to_px",
        "from_m",
        "to_m",
        "distance_m",
        "uncertainty_m",
        "sigma_m",
        "contributors",
    }
    assert d["sigma_m"] == 0.0 and d["contributors"] == {}


def test_uncertainty_models() -> None:
    depth = np.full((180, 240), 2.0, np.float32)
    line = [(20.0, 90.0, 220.0, 90.0)]
    (m,) = measure_lines(depth, K, line, error=ErrorModel(scale_rel=0.05))
    assert m.uncertainty_m == pytest.approx(0.05 * m.distance_m)  # a shared scale error scales the length
    # sensor quantisation: sigma_z = q / sqrt(12) at each end, propagated along the rays
    (q,) = measure_lines(depth, K, line, error=sensor_error(0.001))
    p1, p2 = np.array(q.from_m), np.array(q.to_m)
    g1 = (p1 - p2) @ (p1 / p1[2]) / q.distance_m
    g2 = (p1 - p2) @ (p2 / p2[2]) / q.distance_m
    assert q.uncertainty_m == pytest.approx(0.001 / np.sqrt(12) * np.hypot(g1, g2))
    # lower model confidence at an end point means a larger uncertainty
    conf = np.ones((180, 240), np.float32)
    (hi,) = measure_lines(depth, K, line, confidence=conf, error=MODEL_ERROR)
    conf[80:100, 210:230] = 0.2
    (lo,) = measure_lines(depth, K, line, confidence=conf, error=MODEL_ERROR)
    assert lo.uncertainty_m > hi.uncertainty_m > 0.05 * hi.distance_m


def test_measure_errors_name_the_point() -> None:
    depth = np.full((180, 240), 2.0, np.float32)
    depth[10:20, 10:20] = 0.0
    depth[30:40, 10:20] = np.nan
    depth[50:60, 10:20] = 300.0  # sky
    with pytest.raises(MetroUsageError, match=r"end point of line 2 \(240, 5\) is outside the 240x180 image"):
        measure_lines(depth, K, [(1, 1, 2, 2), (3, 3, 240, 5)])
    with pytest.raises(MetroUsageError, match="start point of line 1"):
        measure_lines(depth, K, [(-3, 1, 2, 2)])
    for v in (15, 35, 55):
        with pytest.raises(MeasurementError, match=rf"start point of line 1 \(15, {v}\) has no valid depth"):
            measure_lines(depth, K, [(15, v, 100, 100)])


def test_reference_confidence_of_an_upsampled_map_is_taken_on_a_grid(monkeypatch):
    import metrocli.geometry.measure as measure_module

    rng = np.random.default_rng(5)
    small_conf = rng.uniform(0.2, 1.0, (30, 40)).astype(np.float32)
    conf = np.repeat(np.repeat(small_conf, 50, axis=0), 50, axis=1)  # a 1500 x 2000 "upsampled" map
    depth = np.full(conf.shape, 3.0, np.float32)
    depth[:100] = 0.0  # invalid rows are left out of the reference
    K = Intrinsics(1500.0, 1500.0, 1000.0, 750.0, 2000, 1500, "user")
    line = [(300.0, 400.0, 1700.0, 1200.0)]
    (grid,) = measure_lines(depth, K, line, confidence=conf, error=MODEL_ERROR)
    monkeypatch.setattr(measure_module, "REFERENCE_GRID_PIXELS", 10**9)  # every pixel
    (full,) = measure_lines(depth, K, line, confidence=conf, error=MODEL_ERROR)
    assert grid.distance_m == full.distance_m
    assert grid.uncertainty_m == pytest.approx(full.uncertainty_m, rel=0.02)
    monkeypatch.setattr(measure_module, "REFERENCE_GRID_PIXELS", 100)  # a much coarser grid still agrees
    (coarse,) = measure_lines(depth, K, line, confidence=conf, error=MODEL_ERROR)
    assert coarse.uncertainty_m == pytest.approx(full.uncertainty_m, rel=0.1)
