"""Rendered multi-view photo sets of the synthetic room with exact depth, and scene accuracy metrics.

Used by the multi-view tests and ``benchmarks/bench_reconstruct.py``: six views of
:func:`metrocli.synth.room_scene` with different lenses (13 to 52 mm equivalent), one stored rotated
(EXIF orientation 6), written as phone JPEGs with 16-bit millimetre depth PNGs (``<stem>.depth.png``).

Metrics (:func:`scene_metrics`), in the world frame of the scene:
    accuracy: distance from each mesh vertex to the true surfaces (median, 90th percentile);
    completeness: share of the true surface seen by the views (their depth maps backprojected) that lies
    within a tolerance of the mesh.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from metrocli.synth.render import Render
    from metrocli.synth.scene import Scene


@dataclass(frozen=True)
class MultiviewView:
    """One camera of the set: name, eye and target (world metres), 35 mm-equivalent focal, phone lens name
    (for EXIF), EXIF orientation of the stored JPEG."""

    name: str
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    f35_mm: float
    lens: str = "main"
    orientation: int = 1


#: Six views of the room, all seeing the table; different focal lengths; ``mv_04`` is stored rotated.
ROOM_VIEWS: tuple[MultiviewView, ...] = (
    MultiviewView("mv_01", (1.0, 0.4, 1.6), (2.0, 2.9, 0.7), 26.0, "main"),
    MultiviewView("mv_02", (2.0, 0.3, 1.5), (2.0, 3.0, 0.8), 13.0, "ultra-wide"),
    MultiviewView("mv_03", (3.0, 0.5, 1.6), (2.0, 3.0, 0.7), 26.0, "main"),
    MultiviewView("mv_04", (3.5, 1.5, 1.4), (1.5, 3.5, 0.8), 35.0, "main", orientation=6),
    MultiviewView("mv_05", (0.5, 1.5, 1.5), (2.5, 3.5, 0.7), 24.0, "main"),
    MultiviewView("mv_06", (2.5, 0.8, 1.7), (1.0, 4.5, 1.0), 52.0, "tele"),
)


@functools.lru_cache(maxsize=4)
def render_views(
    width: int = 640, height: int = 480, views: tuple[MultiviewView, ...] = ROOM_VIEWS
) -> tuple[Render, ...]:
    """Render the views (upright). Landscape ``width x height``; views stored rotated (orientation 5-8)
    are portrait (``height x width`` displayed), as a phone held upright. Returns a tuple of
    ``metrocli.synth.Render`` (cached: the same renders for the same arguments).
    """
    from metrocli.synth import intrinsics_for_lens, look_at, render, room_scene

    scene = room_scene()
    out = []
    for v in views:
        w, h = (height, width) if v.orientation >= 5 else (width, height)
        out.append(render(scene, intrinsics_for_lens(w, h, v.f35_mm), look_at(v.eye, v.target)))
    return tuple(out)


def write_views(
    folder: str | os.PathLike[str],
    renders: Sequence[Render],
    *,
    views: tuple[MultiviewView, ...] = ROOM_VIEWS,
    depth_factors: np.ndarray | None = None,
) -> list[Path]:
    """Write each render as ``<name>.jpg`` (phone EXIF, orientation) + ``<name>.depth.png`` into ``folder``.

    ``depth_factors`` multiplies each view's depth map (model-like per-image scale error). Returns the photo
    paths.
    """
    from metrocli.synth.samples import write_sample

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (v, r) in enumerate(zip(views, renders, strict=True)):
        if depth_factors is not None:
            r = replace(r, depth_m=(r.depth_m * np.float32(depth_factors[k])).astype(np.float32))
        files = write_sample(r, folder / f"{v.name}.jpg", lens=v.lens, orientation=v.orientation)
        paths.append(files.photo)
    return paths


@dataclass(frozen=True)
class SceneMetrics:
    """Accuracy (metres: median and 90th percentile of vertex-to-truth distances) and completeness (share
    of the visible true surface within ``tolerance_m`` of the mesh)."""

    accuracy_median_m: float
    accuracy_p90_m: float
    completeness: float
    tolerance_m: float


def scene_metrics(
    vertices_world: np.ndarray,
    triangles: np.ndarray,
    scene: Scene,
    renders: Sequence[Render],
    *,
    tolerance_m: float = 0.05,
    stride: int = 7,
) -> SceneMetrics:
    """Metrics of a mesh given in the scene's world frame (vertices (N, 3) metres, triangles (M, 3)).

    The visible true surface is sampled from every ``stride``-th pixel of each render's exact depth.
    """
    import open3d as o3d

    verts = np.ascontiguousarray(np.asarray(vertices_world, np.float32))
    acc = scene.distance_m(verts)
    rs = o3d.t.geometry.RaycastingScene()
    rs.add_triangles(
        o3d.core.Tensor.from_numpy(verts),
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(np.asarray(triangles, np.uint32))),
    )
    samples = np.concatenate([r.points_world()[::stride, ::stride].reshape(-1, 3) for r in renders])
    samples = samples[np.isfinite(samples).all(axis=1)].astype(np.float32)
    dist = rs.compute_distance(o3d.core.Tensor.from_numpy(np.ascontiguousarray(samples))).numpy()
    return SceneMetrics(
        float(np.median(acc)),
        float(np.percentile(acc, 90)),
        float(np.mean(dist <= tolerance_m)),
        tolerance_m,
    )


def to_world(points_ref: np.ndarray, reference_pose: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """World coordinates of points given in a reference camera frame whose metric units are ``scale`` times
    the true ones (e.g. the first photo's depth factor): ``pose @ (p / scale)``."""
    p = np.asarray(points_ref, np.float64) / scale
    return p @ reference_pose[:3, :3].T + reference_pose[:3, 3]
