"""Ray-cast rendering of a :class:`~metrocli.synth.scene.Scene`: colour, exact depth, normals, object ids.

Pixel convention: the ray of pixel ``[v, u]`` (row v, column u, integers) goes through image point
``(u, v)``, i.e. direction ``((u - cx)/fx, (v - cy)/fy, 1)`` in the camera frame; this matches backprojection
``X = (u - cx)·z/fx`` at integer pixel indices, and :meth:`Render.project` returns coordinates in the same
convention. Depth is exact (one ray per pixel, no anti-aliasing); only the colour may be supersampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.synth.scene import Scene

#: ``object_id`` value of pixels whose ray hits nothing (sky).
NO_HIT = -2
#: ``object_id`` value of pixels on unlabelled structure (walls, floor, road, ...).
STRUCTURE = -1

_CHUNK = 1 << 19


def _mul(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``a @ m`` for (N, 3) x (3, 3) (einsum: much faster than numpy's matmul for tall thin arrays)."""
    return np.einsum("ij,jk->ik", a, m)


@dataclass(frozen=True)
class Render:
    """A rendered upright (displayed) view.

    ``rgb`` (H, W, 3) uint8; ``depth_m`` (H, W) float32 metres along the camera z axis, 0 where nothing is
    hit; ``normal`` (H, W, 3) float32 unit surface normals in the camera frame (x right, y down, z forward),
    facing the camera (``n · ray < 0``), zeros where nothing is hit; ``object_id`` (H, W) int32 index into
    ``scene.objects`` (-1 structure, -2 nothing hit); ``intrinsics`` of this image; ``pose`` (4, 4) float64
    camera-to-world.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    normal: np.ndarray
    object_id: np.ndarray
    intrinsics: Intrinsics
    pose: np.ndarray

    @property
    def eye(self) -> np.ndarray:
        """(3,) camera centre in world coordinates (m)."""
        return self.pose[:3, 3].copy()

    def world_to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """(N, 3) float64 camera-frame coordinates (m) of world points (N, 3)."""
        p = np.asarray(points_world, np.float64).reshape(-1, 3)
        R, t = self.pose[:3, :3], self.pose[:3, 3]
        return _mul(p - t, R)

    def camera_to_world(self, points_cam: np.ndarray) -> np.ndarray:
        """(N, 3) float64 world coordinates (m) of camera-frame points (N, 3)."""
        p = np.asarray(points_cam, np.float64).reshape(-1, 3)
        return _mul(p, self.pose[:3, :3].T) + self.pose[:3, 3]

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (N, 3) to pixels: ``(uv (N, 2) float64 px, depth (N,) float64 m)``.

        ``uv`` is in the displayed image, in the ray convention of this module (pixel ``[v, u]`` centre is
        ``(u, v)``); ``depth`` is the camera z (≤ 0 for points behind the camera, whose ``uv`` is
        meaningless).
        """
        pc = self.world_to_camera(points_world)
        k = self.intrinsics
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = k.fx * pc[:, 0] / z + k.cx
            v = k.fy * pc[:, 1] / z + k.cy
        return np.stack([u, v], axis=1), z

    def in_image(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(N,) bool: in front of the camera and inside the pixel grid ``[0, W-1] x [0, H-1]``."""
        k = self.intrinsics
        u, v = uv[:, 0], uv[:, 1]
        return (depth > 0) & (u >= 0) & (u <= k.width - 1) & (v >= 0) & (v <= k.height - 1)

    def points_camera(self) -> np.ndarray:
        """(H, W, 3) float32 camera-frame point of every pixel (m), zeros where nothing is hit."""
        k = self.intrinsics
        v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
        z = self.depth_m.astype(np.float64)
        return np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=-1).astype(np.float32)

    def points_world(self) -> np.ndarray:
        """(H, W, 3) float32 world point of every pixel (m); NaN where nothing is hit."""
        pc = self.points_camera().reshape(-1, 3)
        pw = self.camera_to_world(pc).astype(np.float32)
        pw[self.depth_m.reshape(-1) <= 0] = np.nan
        return pw.reshape((*self.depth_m.shape, 3))


def _camera_rays(k: Intrinsics, offsets: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(H*W, 3) float64 camera-frame ray directions with unit z component, row-major pixels."""
    d = np.empty((k.height, k.width, 3))
    d[..., 0] = ((np.arange(k.width) + offsets[0] - k.cx) / k.fx)[None, :]
    d[..., 1] = ((np.arange(k.height) + offsets[1] - k.cy) / k.fy)[:, None]
    d[..., 2] = 1.0
    return d.reshape(-1, 3)


def _cast(rs, eye: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
    import open3d as o3d

    rays = np.empty((len(dirs), 6), np.float32)
    rays[:, :3] = eye
    rays[:, 3:] = dirs
    out = rs.cast_rays(o3d.core.Tensor.from_numpy(rays))
    return {
        "t": out["t_hit"].numpy(),
        "prim": out["primitive_ids"].numpy(),
        "n": out["primitive_normals"].numpy(),
    }


def _shade(scene: Scene, rs, eye: np.ndarray, dirs: np.ndarray, hit: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 3) float32 linear colour in [0, 1] of rays ``dirs`` from ``eye`` with cast results ``hit``."""
    import open3d as o3d

    n_rays = len(dirs)
    t = hit["t"]
    ok = np.isfinite(t)
    light = scene.light
    out = np.empty((n_rays, 3), np.float32)
    # Sky: a vertical gradient by ray elevation.
    dn = dirs[~ok] / np.linalg.norm(dirs[~ok], axis=1, keepdims=True)
    bg = np.asarray(light.background_rgb, np.float32) / 255.0
    out[~ok] = bg * (0.85 + 0.25 * np.clip(dn[:, 2:3], 0, 1)).astype(np.float32)
    if not ok.any():
        return out
    idx = np.flatnonzero(ok)
    prim = hit["prim"][idx].astype(np.int64)
    p = eye + t[idx, None].astype(np.float64) * dirs[idx]
    n = hit["n"][idx].astype(np.float64)
    facing = np.einsum("ij,ij->i", n, dirs[idx]) > 0
    n[facing] *= -1.0
    rel = p - scene.tri_origin[prim]
    st = np.stack(
        [
            np.einsum("ij,ij->i", rel, scene.tri_axis_s[prim]),
            np.einsum("ij,ij->i", rel, scene.tri_axis_t[prim]),
        ],
        axis=1,
    )
    seed = scene.tri_seed[prim]
    mat = scene.tri_material[prim]
    albedo = np.empty((len(idx), 3), np.float32)
    order = np.argsort(mat, kind="stable")
    bounds = np.searchsorted(mat[order], np.arange(len(scene.materials) + 1))
    for mi, material in enumerate(scene.materials):
        sel = order[bounds[mi] : bounds[mi + 1]]
        if len(sel):
            albedo[sel] = material.albedo(st[sel], seed[sel])
    if light.kind == "point":
        to_l = np.asarray(light.position_m, np.float64) - p
        dist = np.linalg.norm(to_l, axis=1)
        ldir = to_l / dist[:, None]
        cos = np.clip(np.einsum("ij,ij->i", n, ldir), 0.0, 1.0)
        diffuse = light.intensity * cos * 1.6 / (1.0 + 0.25 * dist * dist)
        shadow_dirs, tfar = to_l, 0.999
    else:
        ldir = np.asarray(light.position_m, np.float64)
        ldir = ldir / np.linalg.norm(ldir)
        cos = np.clip(n @ ldir, 0.0, 1.0)
        diffuse = light.intensity * cos
        shadow_dirs, tfar = np.broadcast_to(ldir, p.shape), float("inf")
    if light.shadows:
        lit = cos > 0
        if lit.any():
            rays = np.empty((int(lit.sum()), 6), np.float32)
            rays[:, :3] = p[lit] + 1e-3 * n[lit]
            rays[:, 3:] = shadow_dirs[lit]
            occluded = rs.test_occlusions(o3d.core.Tensor.from_numpy(rays), tnear=0.0, tfar=tfar).numpy()
            dl = diffuse[lit]
            dl[occluded] *= 0.15
            diffuse[lit] = dl
    out[idx] = albedo * (light.ambient + diffuse)[:, None].astype(np.float32)
    return out


def render(scene: Scene, intrinsics: Intrinsics, pose: np.ndarray, *, supersample: int = 1) -> Render:
    """Render ``scene`` seen with ``intrinsics`` (displayed image) from 4x4 camera-to-world ``pose``.

    Depth, normals and object ids come from one ray per pixel through its centre (exact, no blending); with
    ``supersample = s > 1`` the colour averages ``s x s`` rays per pixel (anti-aliasing, ``s²`` times the
    shading cost). A 640 x 480 render takes a fraction of a second.
    """
    k = intrinsics
    pose = np.asarray(pose, np.float64)
    if pose.shape != (4, 4):
        raise ValueError(f"pose must be a 4x4 camera-to-world matrix, got shape {pose.shape}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    rs = scene.raycasting_scene()
    eye = pose[:3, 3]
    R = pose[:3, :3]
    h, w = k.height, k.width
    d_cam = _camera_rays(k)
    dirs = _mul(d_cam, R.T)
    t = np.empty(h * w, np.float32)
    prim = np.empty(h * w, np.int64)
    nrm = np.empty((h * w, 3), np.float32)
    colour = np.zeros((h * w, 3), np.float32)
    for a in range(0, h * w, _CHUNK):
        sl = slice(a, min(a + _CHUNK, h * w))
        hit = _cast(rs, eye, dirs[sl])
        t[sl], prim[sl], nrm[sl] = hit["t"], hit["prim"], hit["n"]
        if supersample == 1:
            colour[sl] = _shade(scene, rs, eye, dirs[sl], hit)
    if supersample > 1:
        s = supersample
        for i in range(s):
            for j in range(s):
                sub = _mul(_camera_rays(k, ((j + 0.5) / s - 0.5, (i + 0.5) / s - 0.5)), R.T)
                for a in range(0, h * w, _CHUNK):
                    sl = slice(a, min(a + _CHUNK, h * w))
                    colour[sl] += _shade(scene, rs, eye, sub[sl], _cast(rs, eye, sub[sl]))
        colour /= s * s
    ok = np.isfinite(t)
    depth = np.where(ok, t, 0.0).astype(np.float32)
    n_cam = _mul(nrm.astype(np.float64), R)
    flip = np.einsum("ij,ij->i", n_cam, d_cam) > 0
    n_cam[flip] *= -1.0
    n_cam /= np.maximum(np.sqrt(np.einsum("ij,ij->i", n_cam, n_cam)), 1e-12)[:, None]
    n_cam[~ok] = 0.0
    obj = np.full(h * w, NO_HIT, np.int32)
    obj[ok] = scene.tri_object[prim[ok]]
    rgb = np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8)
    return Render(
        rgb=rgb.reshape(h, w, 3),
        depth_m=depth.reshape(h, w),
        normal=n_cam.astype(np.float32).reshape(h, w, 3),
        object_id=obj.reshape(h, w),
        intrinsics=k,
        pose=pose.copy(),
    )


def visible(scene: Scene, view: Render, points_world: np.ndarray, tol_m: float = 0.01) -> np.ndarray:
    """(N,) bool: each world point is inside ``view``'s image and not hidden by the scene (within ``tol_m``).

    A point exactly on a surface (e.g. an object corner) counts as visible when the first hit along the ray
    from the camera lies no more than ``tol_m`` before it.
    """
    import open3d as o3d

    pts = np.asarray(points_world, np.float64).reshape(-1, 3)
    uv, depth = view.project(pts)
    inside = view.in_image(uv, depth)
    eye = view.eye
    d = pts - eye
    dist = np.linalg.norm(d, axis=1)
    rays = np.concatenate([np.broadcast_to(eye, d.shape), d], axis=1).astype(np.float32)
    t = (
        scene.raycasting_scene()
        .cast_rays(o3d.core.Tensor.from_numpy(rays))["t_hit"]
        .numpy()
        .astype(np.float64)
    )
    return inside & (t * dist >= dist - tol_m)
