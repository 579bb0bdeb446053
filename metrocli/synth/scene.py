"""Scenes of textured triangle meshes with labelled objects of exactly known size.

World frame: metres, right-handed, **z up**; the floor / ground is the plane ``z = 0``. The room spans
``x ∈ [0, 4]``, ``y ∈ [0, 5]``, ``z ∈ [0, 2.6]``. The street runs along ``x``; the kerb line is ``y = 0``
(road at ``y < 0``, pavement at ``y > 0``), the building façade is the plane ``y = 6``.

Every triangle carries a material (procedural texture), a surface frame (origin + two unit axes in world
coordinates; the texture is a function of the hit point's coordinates along these axes in metres), a surface
seed and the index of the labelled object it belongs to (-1 for walls, floor, ...).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from metrocli.synth.textures import Material

if TYPE_CHECKING:
    import open3d as o3d


@dataclass(frozen=True)
class SceneObject:
    """A labelled box-shaped object (or the bounding box of one) with its true size.

    ``size_m`` = (length along the object's own x axis, width along its y axis, height) in metres.
    ``corners_world`` (8, 3) float64 metres: bottom face first, then the top face, each counter-clockwise
    seen from above starting at the object's (-x, -y) corner:
    ``[(-,-,b), (+,-,b), (+,+,b), (-,+,b), (-,-,t), ...]``.
    """

    name: str
    size_m: tuple[float, float, float]
    corners_world: np.ndarray
    yaw_deg: float = 0.0

    @property
    def top_corners_world(self) -> np.ndarray:
        """(4, 3) the four top corners, in the order of ``corners_world[4:]``."""
        return self.corners_world[4:]


@dataclass(frozen=True)
class Light:
    """Lighting: a point light (room) or a directional sun (street), an ambient term and optional shadows.

    ``position_m`` is a world point for ``kind == "point"``; for ``"sun"`` it is the direction *towards* the
    sun. ``background_rgb`` is the colour of rays that hit nothing (sky), 0-255.
    """

    kind: str = "point"
    position_m: tuple[float, float, float] = (2.0, 2.5, 2.45)
    intensity: float = 1.0
    ambient: float = 0.35
    shadows: bool = True
    background_rgb: tuple[int, int, int] = (170, 200, 235)


@dataclass(frozen=True)
class Scene:
    """Triangle meshes with per-triangle material and surface frames, plus labelled objects.

    Arrays (read-only): ``vertices`` (V, 3) float32 m; ``triangles`` (T, 3) int32; ``tri_material`` (T,) int32
    index into ``materials``; ``tri_origin``, ``tri_axis_s``, ``tri_axis_t`` (T, 3) float64 surface frames;
    ``tri_seed`` (T,) int64; ``tri_object`` (T,) int32 index into ``objects`` or -1.
    """

    name: str
    vertices: np.ndarray
    triangles: np.ndarray
    tri_material: np.ndarray
    tri_origin: np.ndarray
    tri_axis_s: np.ndarray
    tri_axis_t: np.ndarray
    tri_seed: np.ndarray
    tri_object: np.ndarray
    materials: tuple[Material, ...]
    objects: tuple[SceneObject, ...]
    light: Light = field(default_factory=Light)

    def object(self, name: str) -> SceneObject:
        """The labelled object called ``name`` (KeyError listing the names otherwise)."""
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(
            f"no object {name!r} in scene {self.name!r}; objects: {[o.name for o in self.objects]}"
        )

    def raycasting_scene(self) -> o3d.t.geometry.RaycastingScene:
        """A fresh ``open3d.t.geometry.RaycastingScene`` holding all triangles (geometry id 0)."""
        import open3d as o3d

        rs = o3d.t.geometry.RaycastingScene()
        rs.add_triangles(
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(self.vertices, np.float32)),
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(self.triangles, np.uint32)),
        )
        return rs

    def distance_m(self, points_world: np.ndarray) -> np.ndarray:
        """(N,) float32 unsigned distance (m) from each world point (N, 3) to the nearest true surface."""
        import open3d as o3d

        pts = np.ascontiguousarray(np.asarray(points_world, np.float32).reshape(-1, 3))
        return self.raycasting_scene().compute_distance(o3d.core.Tensor.from_numpy(pts)).numpy()

    def sample_surface(self, n: int, seed: int = 0) -> np.ndarray:
        """(n, 3) float64 points uniformly (by area) on all triangles, world frame."""
        rng = np.random.default_rng(seed)
        v = self.vertices.astype(np.float64)[self.triangles]
        area = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
        idx = rng.choice(len(area), size=n, p=area / area.sum())
        r1, r2 = rng.random(n), rng.random(n)
        flip = r1 + r2 > 1
        r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
        tri = v[idx]
        return tri[:, 0] + r1[:, None] * (tri[:, 1] - tri[:, 0]) + r2[:, None] * (tri[:, 2] - tri[:, 0])


#: Longest edge (m) of the tiles big quads are split into.
MAX_EDGE_M = 1.0


class SceneBuilder:
    """Accumulates textured quads and boxes, then freezes them into a :class:`Scene`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._verts: list[np.ndarray] = []
        self._tris: list[np.ndarray] = []
        self._mat: list[int] = []
        self._origin: list[np.ndarray] = []
        self._axis_s: list[np.ndarray] = []
        self._axis_t: list[np.ndarray] = []
        self._seed: list[int] = []
        self._obj: list[int] = []
        self.materials: list[Material] = []
        self.objects: list[SceneObject] = []
        self._nverts = 0
        self._nsurf = 0

    def material(self, mat: Material) -> int:
        """Register ``mat`` (once per name); returns its index."""
        for i, m in enumerate(self.materials):
            if m.name == mat.name:
                return i
        self.materials.append(mat)
        return len(self.materials) - 1

    def quad(
        self,
        origin: ArrayLike,
        edge_s: ArrayLike,
        edge_t: ArrayLike,
        material: Material,
        *,
        obj: int = -1,
        tex_origin: ArrayLike | None = None,
    ) -> None:
        """Add the parallelogram ``origin + a·edge_s + b·edge_t`` (a, b ∈ [0, 1]) as triangles.

        Texture coordinates are metres along ``edge_s`` / ``edge_t`` from ``tex_origin`` (default ``origin``).
        """
        o = np.asarray(origin, np.float64)
        es, et = np.asarray(edge_s, np.float64), np.asarray(edge_t, np.float64)
        # Large quads are split into tiles of at most MAX_EDGE_M (Open3D's closest-point queries, used by
        # Scene.distance_m, go wrong on very long thin triangles); the texture frame stays continuous.
        na = max(1, math.ceil(np.linalg.norm(es) / MAX_EDGE_M))
        nb = max(1, math.ceil(np.linalg.norm(et) / MAX_EDGE_M))
        ga, gb = np.meshgrid(np.arange(na + 1) / na, np.arange(nb + 1) / nb, indexing="ij")
        verts = o + ga.reshape(-1, 1) * es + gb.reshape(-1, 1) * et
        idx = np.arange((na + 1) * (nb + 1)).reshape(na + 1, nb + 1) + self._nverts
        a0, a1, a2, a3 = (
            idx[:-1, :-1].ravel(),
            idx[1:, :-1].ravel(),
            idx[1:, 1:].ravel(),
            idx[:-1, 1:].ravel(),
        )
        tris = np.concatenate([np.stack([a0, a1, a2], 1), np.stack([a0, a2, a3], 1)])
        self._verts.append(verts)
        self._tris.append(tris)
        self._nverts += len(verts)
        mi = self.material(material)
        axis_s = es / np.linalg.norm(es)
        axis_t = et - axis_s * float(et @ axis_s)
        axis_t /= np.linalg.norm(axis_t)
        to = o if tex_origin is None else np.asarray(tex_origin, np.float64)
        self._nsurf += 1
        for _ in range(len(tris)):
            self._mat.append(mi)
            self._origin.append(to)
            self._axis_s.append(axis_s)
            self._axis_t.append(axis_t)
            self._seed.append(self._nsurf * 7 + 1000 * mi)
            self._obj.append(obj)

    def box(
        self,
        name: str | None,
        centre_xy: tuple[float, float],
        z0: float,
        size_m: tuple[float, float, float],
        material: Material,
        *,
        yaw_deg: float = 0.0,
        top_material: Material | None = None,
        obj: int | None = None,
        bottom: bool = True,
    ) -> int:
        """Add a closed box standing on ``z = z0``; with ``name`` it is also a labelled object.

        Returns the object index (or ``obj`` / -1 when unnamed). Side faces use ``material`` with ``t`` up;
        the top face uses ``top_material`` (default ``material``).
        """
        length, width, height = size_m
        c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        ax = np.array([c, s, 0.0])
        ay = np.array([-s, c, 0.0])
        az = np.array([0.0, 0.0, 1.0])
        centre = np.array([centre_xy[0], centre_xy[1], z0])
        p = [
            centre + sx * 0.5 * length * ax + sy * 0.5 * width * ay
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
        corners = np.array(p + [q + height * az for q in p])
        if name is not None:
            self.objects.append(
                SceneObject(name, (float(length), float(width), float(height)), corners, yaw_deg)
            )
            oi = len(self.objects) - 1
        else:
            oi = -1 if obj is None else obj
        up = height * az
        for i in range(4):
            a, b = corners[i], corners[(i + 1) % 4]
            self.quad(a, b - a, up, material, obj=oi)
        top = top_material or material
        self.quad(corners[4], corners[5] - corners[4], corners[7] - corners[4], top, obj=oi)
        if bottom:
            self.quad(corners[0], corners[1] - corners[0], corners[3] - corners[0], material, obj=oi)
        return oi

    def build(self, light: Light) -> Scene:
        def ro(a: np.ndarray) -> np.ndarray:
            a = np.ascontiguousarray(a)
            a.setflags(write=False)
            return a

        return Scene(
            name=self.name,
            vertices=ro(np.concatenate(self._verts).astype(np.float32)),
            triangles=ro(np.concatenate(self._tris).astype(np.int32)),
            tri_material=ro(np.array(self._mat, np.int32)),
            tri_origin=ro(np.array(self._origin, np.float64)),
            tri_axis_s=ro(np.array(self._axis_s, np.float64)),
            tri_axis_t=ro(np.array(self._axis_t, np.float64)),
            tri_seed=ro(np.array(self._seed, np.int64)),
            tri_object=ro(np.array(self._obj, np.int32)),
            materials=tuple(self.materials),
            objects=tuple(self.objects),
            light=light,
        )


#: Room dimensions (x, y, z) in metres.
ROOM_SIZE_M = (4.0, 5.0, 2.6)


@functools.cache
def room_scene() -> Scene:
    """A furnished room, 4 x 5 x 2.6 m (x, y, z), lit by a ceiling lamp.

    Labelled objects (true sizes, metres, length x width x height):
    ``table`` 1.20 x 0.80 x 0.75 (top 4 cm thick on four legs; its box is the bounding box),
    ``cabinet`` 0.90 x 0.45 x 1.80 against the far wall (y = 5), ``box_large`` 0.50 x 0.40 x 0.30 and
    ``box_small`` 0.30 x 0.20 x 0.15 on the floor, ``box_on_table`` 0.24 x 0.18 x 0.12 on the table top.
    The result is cached: the same object on every call.
    """
    W, D, H = ROOM_SIZE_M
    b = SceneBuilder("room")
    wall = Material("wall", "plaster_wall", {"colour": (0.82, 0.77, 0.68)})
    wall2 = Material("wall_blue", "plaster_wall", {"colour": (0.62, 0.70, 0.78), "poster_prob": 0.8})
    floor = Material("floor", "wood", {"plank_m": 0.16, "plank_len_m": 1.4})
    ceil = Material("ceiling", "ceiling")
    table_wood = Material(
        "table_wood", "wood", {"plank_m": 0.2, "light": (0.80, 0.62, 0.40), "dark": (0.52, 0.34, 0.18)}
    )
    legs = Material("table_legs", "painted", {"colour": (0.15, 0.15, 0.16), "panel_m": 10.0})
    cab = Material("cabinet", "painted", {"colour": (0.22, 0.45, 0.52), "panel_m": 0.45})
    card = Material("cardboard", "cardboard")
    card2 = Material("cardboard_light", "cardboard", {"colour": (0.78, 0.64, 0.45), "tape_s_m": 0.1})
    # Floor (texture s along x, t along y) and ceiling.
    b.quad((0, 0, 0), (W, 0, 0), (0, D, 0), floor)
    b.quad((0, 0, H), (W, 0, 0), (0, D, 0), ceil)
    # Walls, texture s horizontal, t up from the floor.
    b.quad((0, 0, 0), (W, 0, 0), (0, 0, H), wall2)  # y = 0 (behind the usual cameras)
    b.quad((W, D, 0), (-W, 0, 0), (0, 0, H), wall)  # y = D (far wall)
    b.quad((0, D, 0), (0, -D, 0), (0, 0, H), wall2)  # x = 0
    b.quad((W, 0, 0), (0, D, 0), (0, 0, H), wall)  # x = W
    # Table: 1.2 x 0.8 x 0.75, top 4 cm thick, legs 6 x 6 cm inset 5 cm.
    tc, tsize, tyaw = (2.0, 2.9), (1.2, 0.8, 0.75), 8.0
    t_idx = len(b.objects)
    b.objects.append(SceneObject("table", tsize, _box_corners(tc, 0.0, tsize, tyaw), tyaw))
    b.box(None, tc, 0.71, (1.2, 0.8, 0.04), table_wood, yaw_deg=tyaw, obj=t_idx)
    c, s = math.cos(math.radians(tyaw)), math.sin(math.radians(tyaw))
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        lx, ly = sx * (0.6 - 0.08), sy * (0.4 - 0.08)
        b.box(
            None,
            (tc[0] + c * lx - s * ly, tc[1] + s * lx + c * ly),
            0.0,
            (0.06, 0.06, 0.71),
            legs,
            yaw_deg=tyaw,
            obj=t_idx,
        )
    b.box("cabinet", (0.85, D - 0.23), 0.0, (0.9, 0.45, 1.8), cab)
    b.box("box_large", (3.1, 1.9), 0.0, (0.5, 0.4, 0.3), card, yaw_deg=-20.0, bottom=False)
    b.box("box_small", (3.3, 3.6), 0.0, (0.3, 0.2, 0.15), card2, yaw_deg=35.0, bottom=False)
    b.box("box_on_table", (1.75, 2.95), 0.75, (0.24, 0.18, 0.12), card2, yaw_deg=-15.0, bottom=False)
    return b.build(Light("point", (2.2, 2.2, 2.45), intensity=1.0, ambient=0.38, shadows=True))


def _box_corners(
    centre_xy: tuple[float, float], z0: float, size_m: tuple[float, float, float], yaw_deg: float
) -> np.ndarray:
    length, width, height = size_m
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    ax, ay = np.array([c, s, 0.0]), np.array([-s, c, 0.0])
    centre = np.array([centre_xy[0], centre_xy[1], z0])
    p = [
        centre + sx * 0.5 * length * ax + sy * 0.5 * width * ay
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    return np.array(p + [q + np.array([0.0, 0.0, height]) for q in p])


@functools.cache
def street_scene() -> Scene:
    """An outdoor street: asphalt road (y < 0), a 15 cm kerb, a pavement, a car and a brick façade at y = 6.

    Labelled objects (metres): ``car`` 4.50 x 1.80 x 1.50 parked on the road, ``kerb`` 80 x 0.30 x
    0.15 (the kerb stone along the road: 0.15 m step), ``bollard`` 0.20 x 0.20 x 0.90 on the pavement.
    Lit by a sun with shadows; rays that miss hit the sky (depth 0). The result is cached.
    """
    b = SceneBuilder("street")
    road = Material("asphalt", "asphalt", {"lane_t_m": 8.5})  # lane marking at y = -3.5
    kerb = Material("kerb", "concrete", {"colour": (0.62, 0.62, 0.60), "joint_m": 1.0})
    pave = Material("pavement", "concrete", {"colour": (0.72, 0.70, 0.66), "joint_m": 0.6, "slab_m": 0.6})
    facade = Material("facade", "brick")
    car_side = Material("car_side", "car_paint", {"length_m": 4.5, "wheels_s_m": (0.85, 3.65)})
    car_end = Material("car_end", "car_paint", {"side": False, "end": True, "width_m": 1.8})
    car_top = Material("car_top", "car_paint", {"side": False, "colour": (0.55, 0.08, 0.08)})
    bollard = Material("bollard", "painted", {"colour": (0.15, 0.15, 0.15), "panel_m": 0.3})
    x0, x1 = -40.0, 40.0
    # Road surface z = 0 from y = -12 to the kerb face at y = 0 (texture s along x, t along y).
    b.quad((x0, -12.0, 0.0), (x1 - x0, 0, 0), (0, 12.0, 0), road)
    # Kerb: vertical face at y = 0 (0.15 m), top 0.3 m wide at z = 0.15; pavement at z = 0.15 up to y = 6.
    kerb_idx = len(b.objects)
    b.quad((x0, 0.0, 0.0), (x1 - x0, 0, 0), (0, 0, 0.15), kerb, obj=kerb_idx)
    b.quad((x0, 0.0, 0.15), (x1 - x0, 0, 0), (0, 0.3, 0), kerb, obj=kerb_idx)
    b.objects.append(
        SceneObject("kerb", (x1 - x0, 0.3, 0.15), _box_corners((0.0, 0.15), 0.0, (x1 - x0, 0.3, 0.15), 0.0))
    )
    b.quad((x0, 0.3, 0.15), (x1 - x0, 0, 0), (0, 5.7, 0), pave)
    # Façade at y = 6 facing the street (texture s along x, t up from the pavement).
    b.quad((x0, 6.0, 0.15), (x1 - x0, 0, 0), (0, 0, 12.0), facade)
    # Car: 4.5 x 1.8 x 1.5 on the road, 0.4 m from the kerb.
    car_c = (1.0, -1.3)
    ci = len(b.objects)
    corners = _box_corners(car_c, 0.0, (4.5, 1.8, 1.5), 0.0)
    b.objects.append(SceneObject("car", (4.5, 1.8, 1.5), corners, 0.0))
    # Sides (s along the car, t up), ends and roof with their own materials.
    b.quad(corners[0], corners[1] - corners[0], corners[4] - corners[0], car_side, obj=ci)
    b.quad(corners[2], corners[3] - corners[2], corners[6] - corners[2], car_side, obj=ci)
    b.quad(corners[1], corners[2] - corners[1], corners[5] - corners[1], car_end, obj=ci)
    b.quad(corners[3], corners[0] - corners[3], corners[7] - corners[3], car_end, obj=ci)
    b.quad(corners[4], corners[5] - corners[4], corners[7] - corners[4], car_top, obj=ci)
    b.box("bollard", (-1.5, 0.7), 0.15, (0.2, 0.2, 0.9), bollard, bottom=False)
    return b.build(Light("sun", (-0.35, -0.5, 0.8), intensity=1.1, ambient=0.45, shadows=True))
