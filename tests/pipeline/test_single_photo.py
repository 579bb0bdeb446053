"""Photo -> depth -> measurement / point cloud / mesh, end to end on rendered phone photos (exact depth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import metrocli.synth as synth
import metrocli.synth.samples as samples
from metrocli.errors import MeasurementError, MetroUsageError
from metrocli.geometry.normals import depth_edges, known_normals
from metrocli.io.geometry_io import read_ply_vertices
from metrocli.model.spec import ModelSpec
from metrocli.pipeline.measure import measure_photo
from metrocli.pipeline.provider import ModelDepth, SensorDepth, surface_normals
from metrocli.pipeline.single import reconstruct_photo

#: lens (35 mm equivalent), eye, target, EXIF orientation of the stored JPEG
SHOTS = {
    "ultra-wide": (13.0, (3.6, 0.35, 1.75), (1.8, 3.4, 0.7), 1),
    "main-rotated": (26.0, (1.0, 0.45, 1.55), (2.0, 2.9, 0.65), 6),
    "tele": (77.0, (2.4, 0.5, 1.5), (1.85, 3.1, 0.85), 1),
}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """name -> (scene, render, photo path, depth png path), written like a phone (EXIF, stored depth)."""
    out = tmp_path_factory.mktemp("shots")
    scene = synth.room_scene()
    result = {}
    for name, (f35, eye, target, orientation) in SHOTS.items():
        view = synth.render(scene, synth.intrinsics_for_lens(360, 270, f35), synth.look_at(eye, target))
        files = samples.write_sample(view, out / f"{name}.jpg", orientation=orientation)
        result[name] = (scene, view, files.photo, files.depth)
    return result


@pytest.mark.parametrize("name", sorted(SHOTS))
def test_measure_photo_with_sensor_depth(shots: dict, name: str, tmp_path: Path) -> None:
    scene, view, photo, depth = shots[name]
    lines = samples.table_measurements(scene, view, inset_m=0.03)
    # plus random pairs of visible surface points away from depth edges
    pts = scene.sample_surface(3000, seed=1)
    uv, _ = view.project(pts)
    vis = synth.visible(scene, view, pts, tol_m=1e-4)
    k = view.intrinsics
    ui, vi = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    vis &= (ui >= 2) & (ui < k.width - 2) & (vi >= 2) & (vi < k.height - 2)
    near_edge = np.zeros_like(vis)
    edges = depth_edges(view.depth_m, far_side_only=False)
    near_edge[vis] = [
        edges[v - 2 : v + 3, u - 2 : u + 3].any() for u, v in zip(ui[vis], vi[vis], strict=True)
    ]
    idx = np.flatnonzero(vis & ~near_edge)[:40]
    pairs = [(*uv[a], *uv[b]) for a, b in zip(idx[::2], idx[1::2], strict=True)]
    truth = [line["true_m"] for line in lines] + [
        float(np.linalg.norm(pts[a] - pts[b])) for a, b in zip(idx[::2], idx[1::2], strict=True)
    ]
    all_lines = [(*line["from_px"], *line["to_px"]) for line in lines] + pairs
    result = measure_photo(photo, all_lines, SensorDepth(depth), annotate=tmp_path / "a.png")
    assert result.focal_source.startswith("exif")
    assert result.focal_px == pytest.approx(k.fx, rel=1e-6)
    measured = np.array([m.distance_m for m in result.measurements])
    rel = np.abs(measured - truth) / np.array(truth)
    assert rel.max() < 0.005, f"worst {rel.max():.3%}"
    # 1 mm PNG quantisation, the EXIF focal length's 0.5 % and half-pixel picking (issue 15: propagated, so
    # the uncertainty covers the real error) on a 360 x 270 photo: millimetres to a few centimetres
    sigma = np.array([m.uncertainty_m for m in result.measurements])
    assert (sigma > 0).all() and (sigma < 0.05).all()
    assert (np.abs(measured - truth) <= 2 * sigma).all()
    assert result.annotated and Path(result.annotated).is_file()
    d = result.to_dict()
    assert set(d) >= {
        "image",
        "focal_px",
        "focal_source",
        "focal_sigma_px",
        "depth_source",
        "warnings",
        "measurements",
    }


def test_measure_errors(shots: dict) -> None:
    _, _, photo, depth = shots["tele"]
    # outside points fail before any depth is computed (no weights exist here, so the model would fail)
    with pytest.raises(MetroUsageError, match=r"end point of line 1 \(400, 10\) is outside the 360x270"):
        measure_photo(
            photo, [(10, 10, 400, 10)], ModelDepth(ModelSpec(weights=Path("/nonexistent/weights.pth")))
        )
    # the rendered room has a ceiling everywhere; make a hole of no depth
    sky = np.zeros((270, 360), np.float32)
    sky[:, 180:] = 2.0
    npy = Path(depth).with_suffix(".npy")
    np.save(npy, sky)
    with pytest.raises(MeasurementError, match=r"start point of line 1 \(20, 20\) has no valid depth"):
        measure_photo(photo, [(20, 20, 300, 20)], SensorDepth(npy))


def test_sensor_depth_map(shots: dict) -> None:
    """Sensor depth is a DepthMap of source "sensor": no model normals or confidence; its normals, where a
    mesh needs them, are the geometry's depth-gradient normals."""
    from metrocli.camera.photo import load_photo

    _, view, photo_path, depth = shots["main-rotated"]
    photo = load_photo(photo_path)
    dm = SensorDepth(depth).provide(photo)
    assert dm.source == "sensor" and dm.label == "sensor" and dm.depth_file == depth
    assert dm.normal is None and dm.confidence is None and dm.intrinsics == photo.intrinsics
    assert dm.error.quantum_m == pytest.approx(0.001)
    normal = surface_normals(dm)
    assert normal is not None
    assert dm.depth_m.shape == (270, 360) and normal.shape == (270, 360, 3)
    np.testing.assert_allclose(dm.depth_m, view.depth_m, atol=0.0005 + 1e-6)
    assert np.isfinite(normal).all()  # zero where undefined, never NaN
    ok = known_normals(normal)
    assert ok.mean() > 0.9
    cos = np.sum(normal[ok] * view.normal[ok], axis=1)
    assert np.median(np.degrees(np.arccos(np.clip(cos, -1, 1)))) < 3.0


def _camera_to_world(view, pts: np.ndarray) -> np.ndarray:
    return view.camera_to_world(np.asarray(pts, np.float64))


def test_reconstruct_grid_mesh_matches_the_room(shots: dict, tmp_path: Path) -> None:
    import open3d as o3d

    scene, view, photo, depth = shots["main-rotated"]
    result = reconstruct_photo(photo, tmp_path / "room.ply", SensorDepth(depth), mesh_normals=True)
    assert result.kind == "mesh" and result.method == "grid" and result.depth_source == "sensor"
    mesh = o3d.io.read_triangle_mesh(str(tmp_path / "room.ply"))
    assert len(mesh.triangles) == result.n_triangles > 100_000
    assert mesh.has_vertex_normals() and mesh.has_vertex_colors()
    v = np.asarray(mesh.vertices)
    n = np.asarray(mesh.vertex_normals)
    # within 5 mm of the true surfaces (1 mm depth quantisation is the only error)
    dist = scene.distance_m(_camera_to_world(view, v))
    assert dist.max() < 0.005, f"{dist.max() * 1000:.1f} mm"
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-4)
    # normals on planes agree with the true normals within 5 degrees (median), and mostly within 5
    uv = np.rint(view.project(_camera_to_world(view, v))[0]).astype(int)
    edges = depth_edges(view.depth_m, far_side_only=False)
    interior = ~edges & (view.depth_m > 0)
    for du in (-2, -1, 1, 2):
        interior &= np.roll(~edges, du, axis=1) & np.roll(~edges, du, axis=0)
    flat = interior[uv[:, 1], uv[:, 0]]
    true_n = view.normal[uv[flat, 1], uv[flat, 0]]
    ang = np.degrees(np.arccos(np.clip(np.sum(n[flat] * true_n, axis=1), -1, 1)))
    assert np.median(ang) < 5.0 and np.mean(ang < 5.0) > 0.8


def test_reconstruct_points_poisson_simplify_formats(shots: dict, tmp_path: Path) -> None:
    import open3d as o3d
    import trimesh

    scene, view, photo, depth = shots["tele"]
    pts = reconstruct_photo(photo, tmp_path / "cloud.ply", SensorDepth(depth), points_only=True)
    props = read_ply_vertices(tmp_path / "cloud.ply")
    assert pts.kind == "points" and len(props["x"]) == pts.n_points
    assert {"nx", "red", "confidence"} <= set(props)
    xyz = np.stack([props["x"], props["y"], props["z"]], axis=1)
    assert scene.distance_m(_camera_to_world(view, xyz)).max() < 0.005

    simple = reconstruct_photo(photo, tmp_path / "small.glb", SensorDepth(depth), simplify=5000)
    assert simple.n_triangles <= 5000
    tm = trimesh.load(tmp_path / "small.glb", force="mesh")
    assert 0 < len(tm.faces) <= 5000
    # the GLB is in glTF axes (x, -y, -z): y up, in front of the photo's glTF camera (its -z)
    glb = trimesh.load(tmp_path / "small.glb", process=False)
    np.testing.assert_allclose(glb.camera_transform, np.eye(4))
    gl_verts = np.asarray(glb.geometry["scene"].vertices)
    assert (gl_verts[:, 2] < 0).all()
    assert scene.distance_m(_camera_to_world(view, gl_verts * [1, -1, -1])).max() < 0.005
    up_in_camera = np.asarray(view.pose)[:3, :3].T @ [0.0, 0.0, 1.0]  # the room's up (world +z)
    assert (up_in_camera * [1, -1, -1])[1] > np.cos(np.radians(30))

    poisson = reconstruct_photo(
        photo,
        tmp_path / "poisson.ply",
        SensorDepth(depth),
        mesh_method="poisson",
        poisson_depth=7,
        mesh_normals=True,
    )
    mesh = o3d.io.read_triangle_mesh(str(tmp_path / "poisson.ply"))
    assert poisson.method == "poisson" and len(mesh.triangles) > 1000 and mesh.has_vertex_normals()
    v = np.asarray(mesh.vertices)
    # trimmed: it stays near what the photo saw
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    assert (v > lo - 0.15).all() and (v < hi + 0.15).all()
    assert np.median(scene.distance_m(_camera_to_world(view, v))) < 0.01

    with pytest.raises(MetroUsageError, match="mesh"):
        reconstruct_photo(photo, tmp_path / "x.pcd", SensorDepth(depth))
