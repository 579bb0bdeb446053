"""Single-photo 3D: photo -> metric depth (model or sensor) -> cleaned point cloud -> mesh with normals.

:func:`reconstruct_photo` is the library function behind ``metro reconstruct PHOTO -o OUT`` for one photo.
Everything is metric and in the photo's camera frame (x right, y down, z forward, metres).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from metrocli.geometry.pointcloud import CleanOptions
from metrocli.pipeline.provider import (
    DepthMap,
    DepthProvider,
    ModelDepth,
    surface_normals,
    validity_confidence,
)
from metrocli.prediction import Prediction

if TYPE_CHECKING:
    from metrocli.camera.photo import Photo

log = logging.getLogger("metrocli.pipeline.single")

MeshMethod = Literal["grid", "poisson"]

#: Largest grid mesh built by default (vertices); larger photos are meshed on every n-th pixel.
DEFAULT_MAX_VERTICES = 3_000_000


@dataclass(frozen=True)
class ReconstructResult:
    """What :func:`reconstruct_photo` wrote.

    Attributes:
        photo: path of the photo.
        output: path of the written file.
        kind: ``"points"`` or ``"mesh"``.
        method: ``"points"``, ``"grid"`` or ``"poisson"``.
        n_points: points of the cleaned cloud.
        n_vertices, n_triangles: of the written mesh (0 for points).
        focal_px, focal_source: the focal length used.
        depth_source: ``"sensor"`` or the model preset.
        stride: pixel stride of the grid mesh (1 = every pixel).
        focal_uncertainty_px: one-sigma uncertainty of a self-calibrated focal length (``focal_auto``);
            None otherwise or after a fallback.
        selfcal: the self-calibration summary (:meth:`~metrocli.pipeline.selfcal.SelfCalibrated.report`)
            with ``focal_auto``, else None (left out of :meth:`to_dict`).
    """

    photo: str
    output: str
    kind: Literal["points", "mesh"]
    method: str
    n_points: int
    n_vertices: int
    n_triangles: int
    focal_px: float
    focal_source: str
    depth_source: str
    stride: int = 1
    focal_uncertainty_px: float | None = None
    selfcal: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``focal_uncertainty_px`` and ``selfcal`` only with ``focal_auto``)."""
        out = dict(self.__dict__)
        out["outputs"] = [str(self.output)]
        if self.selfcal is None:
            del out["selfcal"], out["focal_uncertainty_px"]
        return out


def reconstruct_photo(
    photo_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    provider: DepthProvider,
    *,
    points_only: bool = False,
    mesh_method: MeshMethod = "grid",
    simplify: int | None = None,
    mesh_normals: bool = False,
    clean: CleanOptions = CleanOptions(),
    poisson_depth: int = 9,
    max_vertices: int | None = DEFAULT_MAX_VERTICES,
    prediction: Prediction | None = None,
) -> ReconstructResult:
    """Reconstruct one photo in 3D and write a point cloud or a mesh to ``out_path`` (atomically).

    Args:
        photo_path: the photo (EXIF orientation and focal length are honoured).
        out_path: output file; the extension picks the format: point clouds ``.ply`` (with colour, normal
            and confidence per point) / ``.pcd`` / ``.obj`` / ``.glb``; meshes ``.ply`` / ``.obj`` / ``.glb``.
        provider: where depth and the focal length come from (:mod:`metrocli.pipeline.provider`); with
            ``--focal auto`` the focal length is self-calibrated from the prediction (a flat objective falls
            back to the photo's focal length with a warning).
        points_only: write the cleaned point cloud instead of a mesh.
        mesh_method: ``"grid"`` (pixel-grid triangulation, default) or ``"poisson"`` (screened Poisson,
            trimmed by density); see :mod:`metrocli.geometry.mesh`.
        simplify: target triangle count (quadric decimation), or None.
        mesh_normals: also write the vertex normals (the predicted normals) into the mesh file
            (``--mesh-normals``; see :func:`metrocli.io.geometry_io.write_mesh`).
        clean: flying-pixel removal thresholds (:class:`CleanOptions`).
        poisson_depth: octree depth of the Poisson solver.
        max_vertices: grid meshes of larger photos use every n-th pixel to stay below this; None = all.
        prediction: an already computed model :class:`Prediction` of this photo (skips the forward), made
            with the photo's intrinsics; ``provider`` must then be a :class:`ModelDepth`.
    Returns:
        :class:`ReconstructResult`.
    Raises:
        ImageError, DepthMapError, WeightsError: unreadable inputs; MetroUsageError: unsupported output
        extension or bad option; ReconstructionError: no usable depth in the photo.
    """
    from metrocli.errors import MetroUsageError

    check_options(out_path, points_only=points_only, mesh_method=mesh_method, simplify=simplify)
    photo = provider.focal.load_photo(photo_path)
    if prediction is None:
        depth = provider.provide(photo)
    elif isinstance(provider, ModelDepth):
        depth = provider.from_prediction(prediction, photo)
    else:
        raise MetroUsageError(f"{photo.path}: a model prediction was given but depth comes from sensor maps")
    return reconstruct_depth(
        photo,
        depth,
        out_path,
        points_only=points_only,
        mesh_method=mesh_method,
        simplify=simplify,
        mesh_normals=mesh_normals,
        clean=clean,
        poisson_depth=poisson_depth,
        max_vertices=max_vertices,
    )


def check_options(
    out_path: str | os.PathLike[str], *, points_only: bool, mesh_method: MeshMethod, simplify: int | None
) -> None:
    """MetroUsageError for an output extension that cannot hold the result, or a bad mesh option."""
    from metrocli.errors import MetroUsageError
    from metrocli.io.geometry_io import MESH_SUFFIXES, POINT_CLOUD_SUFFIXES

    out_path = Path(out_path)
    allowed = POINT_CLOUD_SUFFIXES if points_only else MESH_SUFFIXES
    if out_path.suffix.lower() not in allowed:
        what = "point cloud" if points_only else "mesh"
        raise MetroUsageError(
            f"{out_path}: cannot write a {what} as {out_path.suffix or 'a file without extension'!r}; "
            f"use one of {', '.join(allowed)}"
        )
    if mesh_method not in ("grid", "poisson"):
        raise MetroUsageError(f"unknown mesh method {mesh_method!r}; use grid or poisson")
    if simplify is not None and simplify <= 0:
        raise MetroUsageError(f"--simplify must be a positive triangle count, got {simplify}")


def reconstruct_depth(
    photo: Photo,
    depth: DepthMap,
    out_path: str | os.PathLike[str],
    *,
    points_only: bool = False,
    mesh_method: MeshMethod = "grid",
    simplify: int | None = None,
    mesh_normals: bool = False,
    clean: CleanOptions = CleanOptions(),
    poisson_depth: int = 9,
    max_vertices: int | None = DEFAULT_MAX_VERTICES,
) -> ReconstructResult:
    """The second half of :func:`reconstruct_photo`: the cloud or mesh of a decoded ``photo`` and its
    ``depth`` (from any provider), written to ``out_path``; same options, same result."""
    import numpy as np

    from metrocli.errors import ReconstructionError
    from metrocli.geometry.pointcloud import point_cloud_from_depth
    from metrocli.io.geometry_io import CameraView, write_mesh, write_point_cloud

    check_options(out_path, points_only=points_only, mesh_method=mesh_method, simplify=simplify)
    out_path = Path(out_path)
    selfcal = depth.selfcal.report() if depth.selfcal is not None else None
    k = depth.intrinsics
    rgb = photo.image
    if rgb.shape[:2] != depth.depth_m.shape:
        raise ReconstructionError(
            f"{photo.path}: depth is {depth.depth_m.shape[1]}x{depth.depth_m.shape[0]} "
            f"but the photo is {rgb.shape[1]}x{rgb.shape[0]}"
        )
    normal = surface_normals(depth)
    confidence = validity_confidence(depth)
    cloud = point_cloud_from_depth(
        depth.depth_m,
        k,
        rgb=rgb,
        normal=normal,
        confidence=confidence,
        options=clean,
        fill_normals=points_only or mesh_method == "poisson",
    )
    if len(cloud) < 3:
        raise ReconstructionError(f"{photo.path}: no valid depth to reconstruct ({len(cloud)} points)")
    points = ReconstructResult(
        photo=str(photo.path),
        output=str(out_path),
        kind="points",
        method="points",
        n_points=len(cloud),
        n_vertices=0,
        n_triangles=0,
        focal_px=float(k.fx),
        focal_source=str(k.focal_source),
        depth_source=depth.label,
        focal_uncertainty_px=selfcal["uncertainty_px"] if selfcal is not None else None,
        selfcal=selfcal,
    )
    camera = (CameraView(photo.path.name, k, np.eye(4)),)  # a GLB opens from the photo's viewpoint
    if points_only:
        write_point_cloud(out_path, cloud, cameras=camera)
        log.info("%s: %d points -> %s", photo.path.name, len(cloud), out_path)
        return points

    from metrocli.geometry.mesh import auto_stride, grid_mesh, poisson_mesh
    from metrocli.geometry.mesh import simplify as simplify_mesh

    stride = 1
    if mesh_method == "grid":
        stride = auto_stride(k.width, k.height, max_vertices)
        mesh = grid_mesh(
            depth.depth_m,
            k,
            rgb=rgb,
            normal=normal,
            confidence=confidence,
            options=clean,
            stride=stride,
        )
    else:
        mesh = poisson_mesh(cloud, depth=poisson_depth)
    if len(mesh.triangles) == 0:
        raise ReconstructionError(f"{photo.path}: no surface could be meshed (depth too sparse)")
    if simplify is not None:
        mesh = simplify_mesh(mesh, simplify)
    write_mesh(out_path, mesh, normals=mesh_normals, cameras=camera)
    log.info(
        "%s: %s mesh, %d vertices, %d triangles -> %s",
        photo.path.name,
        mesh_method,
        len(mesh.vertices),
        len(mesh.triangles),
        out_path,
    )
    return replace(
        points,
        kind="mesh",
        method=mesh_method,
        n_vertices=len(mesh.vertices),
        n_triangles=len(mesh.triangles),
        stride=stride,
    )
