"""Acceptance on photos rendered with known geometry (metrocli.synth): a furnished room seen through several
lenses with exact depth. Distances between surface points within 0.5 %; meshes within 5 mm of the true
surfaces with unit vertex normals within 5° of the true normals on planes."""

from __future__ import annotations

import numpy as np
import pytest

import metrocli.synth as synth
from metrocli.geometry.measure import measure_lines
from metrocli.geometry.mesh import grid_mesh
from metrocli.geometry.normals import depth_edges, known_normals, normals_from_depth
from metrocli.geometry.pointcloud import point_cloud_from_depth

#: (35 mm-equivalent focal length, eye, target): ultra-wide, main and tele views of the room.
VIEWS = {
    "ultra-wide": (13.0, (3.6, 0.35, 1.75), (1.8, 3.4, 0.7)),
    "main": (26.0, (1.0, 0.45, 1.55), (2.0, 2.9, 0.65)),
    "tele": (77.0, (2.4, 0.5, 1.5), (1.85, 3.1, 0.85)),
}


@pytest.fixture(scope="module", params=sorted(VIEWS))
def rendered(request):
    f35, eye, target = VIEWS[request.param]
    scene = synth.room_scene()
    k = synth.intrinsics_for_lens(400, 300, f35)
    view = synth.render(scene, k, synth.look_at(eye, target))
    return scene, view


def _interior(view, radius: int = 2) -> np.ndarray:
    """(H, W) bool: pixels whose (2r+1)^2 neighbourhood is one surface with one normal (planar interior)."""
    depth = view.depth_m
    ok = (depth > 0) & ~depth_edges(depth, far_side_only=False)
    n = view.normal
    h, w = depth.shape
    out = ok.copy()
    for dv in range(-radius, radius + 1):
        for du in range(-radius, radius + 1):
            sv = slice(max(0, dv), h + min(0, dv))
            tv = slice(max(0, -dv), h + min(0, -dv))
            su = slice(max(0, du), w + min(0, du))
            tu = slice(max(0, -du), w + min(0, -du))
            same = np.zeros((h, w), bool)
            same[tv, tu] = ok[sv, su] & (np.sum(n[sv, su] * n[tv, tu], axis=-1) > 0.9999)
            out &= same
    return out


def test_distances_between_surface_points(rendered) -> None:
    scene, view = rendered
    k = view.intrinsics
    pts = scene.sample_surface(4000, seed=3)
    vis = synth.visible(scene, view, pts, tol_m=1e-4)
    uv, _ = view.project(pts)
    interior = _interior(view)
    ui, vi = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    ok = vis & (ui >= 0) & (ui < k.width) & (vi >= 0) & (vi < k.height)
    ok[ok] &= interior[vi[ok], ui[ok]]
    idx = np.flatnonzero(ok)
    assert len(idx) > 60
    rng = np.random.default_rng(0)
    a, b = rng.choice(idx, 150), rng.choice(idx, 150)
    keep = np.linalg.norm(pts[a] - pts[b], axis=1) > 0.2
    a, b = a[keep], b[keep]
    lines = [(*uv[i], *uv[j]) for i, j in zip(a, b, strict=True)]
    measured = np.array([m.distance_m for m in measure_lines(view.depth_m, k, lines)])
    truth = np.linalg.norm(pts[a] - pts[b], axis=1)
    rel = np.abs(measured - truth) / truth
    assert rel.max() < 0.005, f"worst relative error {rel.max():.4%}"


def test_table_top_lengths(rendered) -> None:
    scene, view = rendered
    from metrocli.synth.samples import table_measurements

    # end points 3 cm inside the table top (>= 2 px at this resolution), away from its edges
    lines = table_measurements(scene, view, inset_m=0.03)
    if not lines:
        pytest.skip("the table top is not fully visible in this view")
    ms = measure_lines(view.depth_m, view.intrinsics, [(*m["from_px"], *m["to_px"]) for m in lines])
    for m, line in zip(ms, lines, strict=True):
        # the pixel coordinates are rounded to 0.01 px, which moves the points by well under 0.1 %
        assert m.distance_m == pytest.approx(line["true_m"], rel=0.005), line["name"]


def test_grid_mesh_matches_true_surfaces(rendered) -> None:
    scene, view = rendered
    k = view.intrinsics
    # sensor-style: normals from the depth gradient, not the renderer's
    mesh = grid_mesh(view.depth_m, k, rgb=view.rgb)
    assert len(mesh.triangles) > 0.8 * 2 * k.width * k.height
    world = view.camera_to_world(mesh.vertices)
    dist = scene.distance_m(world)
    assert dist.max() < 0.005, f"vertex {dist.max() * 1000:.2f} mm off the true surface"
    norms = np.linalg.norm(mesh.vertex_normals, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    # vertex normals vs. true normals on planar interiors
    uv = np.rint(synth.Render.project(view, world)[0]).astype(int)
    interior = _interior(view)
    on_plane = interior[uv[:, 1], uv[:, 0]]
    assert on_plane.sum() > 0.3 * len(uv)
    true_n = view.normal[uv[on_plane, 1], uv[on_plane, 0]]
    cos = np.sum(mesh.vertex_normals[on_plane] * true_n, axis=1)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    assert angle.max() < 5.0, f"worst normal {angle.max():.2f} deg"


def test_depth_normals_and_cloud_on_render(rendered) -> None:
    _, view = rendered
    k = view.intrinsics
    n = normals_from_depth(view.depth_m, k)
    interior = _interior(view)
    cos = np.sum(n[interior] * view.normal[interior], axis=-1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 1.0
    cloud = point_cloud_from_depth(view.depth_m, k, rgb=view.rgb, normal=view.normal)
    assert known_normals(cloud.normals).all()
    assert len(cloud) > 0.9 * (view.depth_m > 0).sum()
