"""Rendered photo sequences for registration tests: textures, camera paths, model-like depth, pose errors.

Scenes
    :func:`textured_room` is :func:`metrocli.synth.room_scene` (same geometry) with every material replaced
    by one texture family: ``"rich"`` (the room as it is: posters, wood, cardboard), ``"checker"`` (20 cm
    checkerboard), ``"tiles"`` (20 cm tiles with grout) or ``"plain"`` (plain paint, almost featureless).

Trajectories (:func:`trajectory_poses`, world frame of :mod:`metrocli.synth`, z up)
    ``"orbit"``: a full circle round the table at 1.5 m, looking at it; ``"walk"``: a walk along the room
    with the gaze swinging left and right; ``"pan"``: one standpoint, the camera turning on the spot (pure
    rotation, a full turn).

Lenses and orientation
    :func:`render_sequence` cycles through ``lenses_mm`` (35 mm-equivalent focal lengths, e.g. 13/26/77)
    and renders the views listed in ``portrait`` upright in portrait format (a phone photo stored with EXIF
    orientation 6 is upright once loaded, so registration sees exactly this).

Model-like depth (:func:`model_like_depth`)
    A monocular model's depth of photo ``k``: the true depth times a per-photo scale in ``1 ± scale_error``
    and a smooth distortion field of amplitude ``distortion`` (a low-order function of the image position).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from metrocli.synth.scene import Scene
from metrocli.synth.textures import Material

Texture = Literal["rich", "checker", "tiles", "plain"]
Trajectory = Literal["orbit", "walk", "pan"]

#: Table centre (x, y, z) of :func:`metrocli.synth.room_scene`, world metres.
TABLE_CENTRE = (2.0, 2.9, 0.6)


@functools.cache
def textured_room(texture: Texture = "rich") -> Scene:
    """The furnished room with every surface in one texture family (see the module docstring); cached."""
    from metrocli.synth.scene import room_scene

    room = room_scene()
    if texture == "rich":
        return room
    rng = np.random.default_rng(7)
    mats = []
    for m in room.materials:
        colour = tuple(float(c) for c in 0.45 + 0.45 * rng.random(3))
        if texture == "checker":
            params = {"colour": colour, "colour2": tuple(0.35 * c for c in colour), "cell_m": 0.2}
        elif texture == "tiles":
            params = {"colour": colour, "tile_m": 0.2}
        else:
            params = {"colour": colour}
        mats.append(Material(f"{m.name}_{texture}", texture, params))
    return replace(room, name=f"room_{texture}", materials=tuple(mats))


def trajectory_poses(kind: Trajectory, n: int) -> list[np.ndarray]:
    """``n`` camera-to-world poses (4x4, OpenCV axes) along a path of the room (module docstring)."""
    from metrocli.synth.camera import look_at

    if n < 2:
        raise ValueError(f"a trajectory needs at least 2 views, got {n}")
    cx, cy, cz = TABLE_CENTRE
    poses = []
    for k in range(n):
        a = k / n
        if kind == "orbit":
            ang = 2 * math.pi * a - math.pi / 2
            eye = np.array([cx + 1.5 * math.cos(ang), cy + 1.35 * math.sin(ang), 1.5])
            poses.append(look_at(eye, (cx, cy, cz)))
        elif kind == "walk":
            b = k / (n - 1)
            eye = np.array([1.0 + 2.0 * b, 0.4 + 3.4 * b, 1.55])
            yaw = math.radians(60.0 + 35.0 * math.sin(2 * math.pi * 1.5 * b))
            poses.append(look_at(eye, eye + np.array([math.cos(yaw), math.sin(yaw), -0.35])))
        elif kind == "pan":
            eye = np.array([2.0, 1.6, 1.5])
            yaw = 2 * math.pi * a + math.pi / 2
            poses.append(look_at(eye, eye + np.array([math.cos(yaw), math.sin(yaw), -0.25])))
        else:
            raise ValueError(f"unknown trajectory {kind!r}")
    return poses


@dataclass(frozen=True)
class Sequence:
    """A rendered photo sequence: ``renders`` (:class:`metrocli.synth.Render`, upright), their names, 35 mm
    focal lengths and which ones are portrait."""

    name: str
    renders: tuple
    names: tuple[str, ...]
    lenses_mm: tuple[float, ...]
    portrait: tuple[bool, ...]


@functools.lru_cache(maxsize=8)
def render_sequence(
    texture: Texture,
    kind: Trajectory,
    n: int,
    *,
    width: int = 480,
    height: int = 360,
    lenses_mm: tuple[float, ...] = (26.0,),
    portrait: tuple[int, ...] = (),
) -> Sequence:
    """Render ``n`` views of :func:`textured_room` along :func:`trajectory_poses` (cached).

    View ``k`` uses ``lenses_mm[k % len(lenses_mm)]``; views listed in ``portrait`` are ``height x width``.
    """
    from metrocli.synth.camera import intrinsics_for_lens
    from metrocli.synth.render import render

    scene = textured_room(texture)
    renders, names, lenses, port = [], [], [], []
    for k, pose in enumerate(trajectory_poses(kind, n)):
        f35 = lenses_mm[k % len(lenses_mm)]
        tall = k in portrait
        w, h = (height, width) if tall else (width, height)
        renders.append(render(scene, intrinsics_for_lens(w, h, f35), pose))
        names.append(f"{kind}_{k:03d}.jpg")
        lenses.append(f35)
        port.append(tall)
    return Sequence(f"{texture}-{kind}-{n}", tuple(renders), tuple(names), tuple(lenses), tuple(port))


def model_like_depth(
    depth_m: np.ndarray, seed: int, *, scale_error: float = 0.08, distortion: float = 0.03
) -> tuple[np.ndarray, float]:
    """``(depth with a monocular model's errors, its scale factor)``: the true ``depth_m`` times a scale
    drawn from ``1 ± scale_error`` and a smooth field ``1 + distortion * f(u, v)`` (|f| <= 1, low order)."""
    rng = np.random.default_rng(seed)
    factor = float(1.0 + rng.uniform(-scale_error, scale_error))
    h, w = depth_m.shape
    v, u = np.mgrid[0:h, 0:w]
    x, y = (u + 0.5) / w * 2 - 1, (v + 0.5) / h * 2 - 1
    c = rng.uniform(-1, 1, 4)
    field = c[0] * x + c[1] * y + c[2] * (x * x + y * y - 0.66) + c[3] * x * y
    field /= max(float(np.abs(field).max()), 1e-9)
    out = depth_m * factor * (1.0 + distortion * field)
    return np.where(depth_m > 0, out, 0.0).astype(np.float32), factor


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (degrees) of the rotation between the rotation parts of two 4x4 (or 3x3) matrices."""
    r = np.asarray(a)[:3, :3].T @ np.asarray(b)[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


@dataclass(frozen=True)
class PoseErrors:
    """Per registered view: rotation error (degrees) and camera-position error (metres, in the true metric
    scale), against the true poses, relative to the reference view; ``surface_m``: per view, the median
    distance between its pixels placed with the estimated pose and scale and their true positions."""

    rotation_deg: dict[int, float]
    translation_m: dict[int, float]
    surface_m: dict[int, float]

    @property
    def max_rotation_deg(self) -> float:
        return max(self.rotation_deg.values(), default=0.0)

    @property
    def surface_median_m(self) -> float:
        return float(np.median(list(self.surface_m.values()))) if self.surface_m else 0.0


def pose_errors(
    true_poses: list[np.ndarray],
    depths_m: list[np.ndarray],
    intrinsics: list,
    reference: int,
    poses: dict[int, np.ndarray],
    scales: dict[int, float],
    *,
    true_depths_m: list[np.ndarray] | None = None,
    fields: dict[int, np.ndarray] | None = None,
    stride: int = 8,
) -> PoseErrors:
    """Errors of estimated camera-to-reference ``poses`` (depth of view ``k`` multiplied by ``scales[k]`` and,
    when given, by the (H, W) factor field ``fields[k]``: its depth correction,
    :meth:`metrocli.geometry.posegraph.MultiviewRegistration.correction`).

    ``depths_m``: the depth maps registration saw; ``true_depths_m``: the exact ones (default the same).
    The estimated reconstruction's overall scale is free (model depth fixes it only up to a factor): it is
    taken as the median ratio of estimated to true camera distances and depths before comparing positions.
    """
    from metrocli.geometry.backproject import backproject_pixels

    true_depths_m = depths_m if true_depths_m is None else true_depths_m
    fields = fields or {}
    depths_m = [d * fields[k] if k in fields else d for k, d in enumerate(depths_m)]
    ref_inv = np.linalg.inv(true_poses[reference])
    truth = {k: ref_inv @ true_poses[k] for k in poses}
    ratios = []
    for k in poses:  # global scale: estimated depth / true depth, over all registered views
        d, t = depths_m[k][::stride, ::stride], true_depths_m[k][::stride, ::stride]
        ok = (d > 0) & (t > 0)
        if ok.any():
            ratios.append(np.median(d[ok] * scales[k] / t[ok]))
    g = float(np.median(ratios)) if ratios else 1.0
    rot, trans, surf = {}, {}, {}
    for k, pose in poses.items():
        rot[k] = rotation_error_deg(pose, truth[k])
        trans[k] = float(np.linalg.norm(pose[:3, 3] / g - truth[k][:3, 3]))
        d, t = depths_m[k], true_depths_m[k]
        v, u = np.mgrid[0 : d.shape[0] : stride, 0 : d.shape[1] : stride]
        ok = (d[v, u] > 0) & (t[v, u] > 0)
        est = backproject_pixels(u[ok], v[ok], d[v, u][ok] * scales[k] / g, intrinsics[k])
        tru = backproject_pixels(u[ok], v[ok], t[v, u][ok], intrinsics[k])
        est = est @ pose[:3, :3].T + pose[:3, 3] / g
        tru = tru @ truth[k][:3, :3].T + truth[k][:3, 3]
        surf[k] = float(np.median(np.linalg.norm(est - tru, axis=1))) if len(est) else 0.0
    return PoseErrors(rot, trans, surf)
