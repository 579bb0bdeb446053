"""The ray caster: exact depth, correct normals, projection consistent with the rendering, usable texture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metrocli.synth import (
    NO_HIT,
    ROOM_SIZE_M,
    STRUCTURE,
    Render,
    focal_px_for_35mm,
    intrinsics_for_lens,
    look_at,
    render,
    room_scene,
    street_scene,
    visible,
)
from metrocli.synth.scene import Light, SceneBuilder
from metrocli.synth.textures import Material


@pytest.fixture(scope="module")
def room_view() -> Render:
    return render(
        room_scene(), intrinsics_for_lens(320, 240, 26), look_at((1.0, 0.45, 1.55), (2.0, 2.9, 0.65))
    )


def _plane_scene(normal_world: np.ndarray, point_world: np.ndarray):
    """A single 40 x 40 m textured square in the plane through ``point_world`` with ``normal_world``."""
    n = np.asarray(normal_world, float) / np.linalg.norm(normal_world)
    a = np.cross(n, [0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.cross(n, [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    builder = SceneBuilder("plane")
    builder.quad(np.asarray(point_world) - 20 * a - 20 * b, 40 * a, 40 * b, Material("m", "concrete"))
    return builder.build(Light("sun", (0.2, -1.0, 0.5), shadows=False))


def test_depth_of_fronto_parallel_wall_is_exact():
    scene = _plane_scene([0, -1, 0], [0, 3.0, 0])  # the plane y = 3
    k = intrinsics_for_lens(160, 120, 26)
    view = render(scene, k, look_at((0.0, 0.0, 0.0), (0.0, 1.0, 0.0)))
    assert view.depth_m.dtype == np.float32 and view.depth_m.shape == (120, 160)
    np.testing.assert_allclose(view.depth_m, 3.0, atol=1e-5)
    np.testing.assert_allclose(view.normal.reshape(-1, 3), [[0.0, 0.0, -1.0]] * (160 * 120), atol=1e-6)
    assert (view.object_id == STRUCTURE).all()


def test_depth_and_normal_of_tilted_plane_match_analytic_values():
    # Plane through (0, 4, 1) tilted 35 degrees; camera at the origin looking along +y, rolled by 10 degrees.
    tilt = math.radians(35)
    n_world = np.array([0.0, -math.cos(tilt), math.sin(tilt)])
    p0 = np.array([0.0, 4.0, 1.0])
    scene = _plane_scene(n_world, p0)
    k = intrinsics_for_lens(200, 150, 13)
    pose = look_at((0.0, 0.0, 0.5), (0.3, 1.0, 0.4), roll_deg=10.0)
    view = render(scene, k, pose)
    R, eye = pose[:3, :3], pose[:3, 3]
    n_cam = R.T @ n_world  # plane n·X = d in the camera frame
    d = float(n_world @ (p0 - eye))
    v, u = np.mgrid[0:150, 0:200].astype(float)
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)
    z = d / (rays @ n_cam)
    hit = view.depth_m > 0
    assert hit.mean() > 0.3
    np.testing.assert_allclose(view.depth_m[hit], z[hit], rtol=2e-6, atol=2e-6)
    assert np.all((z[~hit] <= 0) | (z[~hit] > 5))  # misses only where the plane is behind or beyond its edge
    facing = n_cam if d < 0 else -n_cam
    np.testing.assert_allclose(view.normal[hit], np.broadcast_to(facing, (int(hit.sum()), 3)), atol=1e-6)


def test_room_depth_matches_room_planes_above_the_furniture():
    # Camera at 2.3 m looking level: the upper image half sees only walls and ceiling (furniture is low).
    pose = look_at((2.0, 0.3, 2.3), (2.0, 5.0, 2.3))
    k = intrinsics_for_lens(160, 120, 26)
    view = render(room_scene(), k, pose)
    W, D, H = ROOM_SIZE_M
    v, u = np.mgrid[0:60, 0:160].astype(float)
    d_cam = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    d_w = d_cam @ pose[:3, :3].T
    eye = pose[:3, 3]
    ts = []
    for axis, lo, hi in ((0, 0.0, W), (1, 0.0, D), (2, 0.0, H)):
        with np.errstate(divide="ignore"):
            for plane in (lo, hi):
                t = (plane - eye[axis]) / d_w[:, axis]
                ts.append(np.where(t > 0, t, np.inf))
    z_true = np.min(ts, axis=0).reshape(60, 160)  # t is the camera z because d_cam has unit z
    np.testing.assert_allclose(view.depth_m[:60], z_true, rtol=1e-5)
    # Ceiling pixels have the ceiling's normal (world -z) seen in the camera frame.
    ceiling = np.isclose(eye[2] + z_true.reshape(-1) * d_w[:, 2], H).reshape(60, 160)
    assert ceiling.sum() > 100
    np.testing.assert_allclose(
        view.normal[:60][ceiling], np.tile(pose[:3, :3].T @ [0, 0, -1.0], (ceiling.sum(), 1)), atol=1e-5
    )


def test_normals_are_unit_and_face_the_camera(room_view: Render):
    n = room_view.normal.reshape(-1, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    k = room_view.intrinsics
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(float)
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    assert np.all(np.sum(n * rays, axis=1) <= 1e-6)


def test_project_agrees_with_render(room_view: Render):
    scene = room_scene()
    # Round trip: every pixel's 3D point projects back onto that pixel at the rendered depth.
    pts = room_view.points_world().reshape(-1, 3)
    uv, z = room_view.project(pts)
    k = room_view.intrinsics
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(float)
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-3)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-3)
    np.testing.assert_allclose(z, room_view.depth_m.ravel(), rtol=1e-5)
    # The table's top corners are visible in this view; pixels just inside the projected top face are table.
    table_idx = [o.name for o in scene.objects].index("table")
    top = scene.object("table").top_corners_world
    assert visible(scene, room_view, top).all()
    uv_top, z_top = room_view.project(top)
    centre = uv_top.mean(axis=0)
    for p, zc in zip(uv_top, z_top, strict=True):
        q = p + 0.1 * (centre - p)
        assert room_view.object_id[round(q[1]), round(q[0])] == table_idx
        # The depth there is close to the corner's depth (the top face is a plane, 10% in from the corner).
        assert abs(room_view.depth_m[round(q[1]), round(q[0])] - zc) < 0.15
    # A world point on the table top (its centre) lands on a pixel with exactly its depth.
    c_top = top.mean(axis=0)
    uv_c, z_c = room_view.project(c_top[None])
    ui, vi = round(uv_c[0, 0]), round(uv_c[0, 1])
    pw = room_view.points_world()[vi, ui]
    assert abs(pw[2] - c_top[2]) < 1e-4  # same height: on the top face
    assert abs(room_view.depth_m[vi, ui] - z_c[0]) < 0.02


def test_hidden_points_are_not_visible(room_view: Render):
    scene = room_scene()
    # The centre of the bottom face of the box standing on the table is hidden by the box itself.
    under = scene.object("box_on_table").corners_world[:4].mean(axis=0)
    assert room_view.in_image(*room_view.project(under[None]))[0]
    behind_camera = room_view.eye - 1.0 * room_view.pose[:3, 2]
    assert not visible(scene, room_view, np.stack([under, behind_camera])).any()


def test_look_at_axes():
    pose = look_at((1.0, 2.0, 1.5), (3.0, 4.0, 0.5))
    R = pose[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1.0)
    fwd = np.array([2.0, 2.0, -1.0]) / 3.0
    np.testing.assert_allclose(R[:, 2], fwd, atol=1e-12)
    assert R[:, 1] @ [0, 0, 1] < 0  # image y (down) points away from world up
    assert abs(R[:, 0][2]) < 1e-12  # no roll: the x axis is horizontal
    np.testing.assert_allclose(pose[:3, 3], [1.0, 2.0, 1.5])
    with pytest.raises(ValueError):
        look_at((0, 0, 0), (0, 0, 1))


def test_intrinsics_for_lens_uses_the_diagonal_rule():
    k = intrinsics_for_lens(1280, 960, 26)
    assert k.fx == pytest.approx(26 * 1600 / math.hypot(36, 24))
    assert k.focal_35mm == pytest.approx(26.0)
    assert (k.cx, k.cy) == (640.0, 480.0)
    assert intrinsics_for_lens(1280, 960, "tele").fx == pytest.approx(focal_px_for_35mm(1280, 960, 77))
    assert intrinsics_for_lens(960, 1280, "ultra-wide").focal_35mm == pytest.approx(13.0)


def test_street_sky_has_no_depth_and_car_is_labelled():
    scene = street_scene()
    view = render(scene, intrinsics_for_lens(160, 120, 26), look_at((-5.0, -6.5, 1.6), (0.5, 0.5, 1.0)))
    sky = view.object_id == NO_HIT
    assert sky[:20].sum() > 50 and not sky[-20:].any()  # sky at the top right, never at the bottom
    assert (view.depth_m[sky] == 0).all() and (view.normal[sky] == 0).all()
    car = [o.name for o in scene.objects].index("car")
    assert (view.object_id == car).sum() > 100
    # Everything hit lies on the true surfaces.
    pts = view.points_world()[~sky]
    assert scene.distance_m(pts).max() < 1e-3


def test_render_is_deterministic_and_supersampling_keeps_depth(room_view: Render):
    again = render(room_scene(), room_view.intrinsics, room_view.pose)
    np.testing.assert_array_equal(again.rgb, room_view.rgb)
    aa = render(room_scene(), room_view.intrinsics, room_view.pose, supersample=2)
    np.testing.assert_array_equal(aa.depth_m, room_view.depth_m)
    assert np.abs(aa.rgb.astype(int) - room_view.rgb).mean() < 20


def test_textures_give_features_that_match_correctly_between_views():
    import cv2

    scene = room_scene()
    k = intrinsics_for_lens(640, 480, 26)
    a = render(scene, k, look_at((1.0, 0.45, 1.55), (2.0, 2.9, 0.65)))
    b = render(scene, k, look_at((1.6, 0.6, 1.5), (2.0, 3.0, 0.7)))
    sift = cv2.SIFT_create(nfeatures=4000)
    ka, da = sift.detectAndCompute(cv2.cvtColor(a.rgb, cv2.COLOR_RGB2GRAY), None)
    kb, db = sift.detectAndCompute(cv2.cvtColor(b.rgb, cv2.COLOR_RGB2GRAY), None)
    assert len(ka) > 1200 and len(kb) > 1200
    pairs = cv2.BFMatcher().knnMatch(da, db, k=2)
    good = [m for m, n in pairs if m.distance < 0.8 * n.distance]
    assert len(good) > 250
    # Check each match with the true geometry: lift the keypoint of view a with its depth, project into b.
    pa = np.array([ka[m.queryIdx].pt for m in good])
    pb = np.array([kb[m.trainIdx].pt for m in good])
    ua, va = np.rint(pa).astype(int).T
    pw = a.points_world()[va, ua]
    uv_b, _ = b.project(pw)
    correct = np.linalg.norm(uv_b - pb, axis=1) < 3.0
    assert correct.sum() > 200 and correct.mean() > 0.7
