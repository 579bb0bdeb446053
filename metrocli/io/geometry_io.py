"""Writing point clouds and meshes, the format chosen by the file extension; every write is atomic.

Point clouds (:class:`~metrocli.geometry.pointcloud.PointCloud`)
    ``.ply`` and ``.pcd``: Open3D tensor I/O (``open3d.t.io``), binary: ``x y z`` (float32, metres),
    ``nx ny nz`` (float32), ``red green blue`` (uchar) and the custom ``confidence`` property (float32), as
    present. Open3D, MeshLab, CloudCompare and trimesh read the PLY (:func:`read_ply_vertices` reads it
    back). ``.obj`` / ``.glb``: trimesh (positions and colours).
Meshes (:class:`~metrocli.geometry.mesh.Mesh`)
    ``.ply``: Open3D (binary, vertex normals and colours). ``.obj`` / ``.glb``: trimesh, with vertex normals
    and colours.

Coordinates are the photo's camera frame, metres: x right, y down, z forward (OpenCV).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metrocli.atomic import atomic_path
from metrocli.errors import MetroUsageError, ReconstructionError
from metrocli.geometry.mesh import Mesh
from metrocli.geometry.pointcloud import PointCloud

if TYPE_CHECKING:
    import open3d as o3d

POINT_CLOUD_SUFFIXES = (".ply", ".pcd", ".obj", ".glb")
MESH_SUFFIXES = (".ply", ".obj", ".glb")


def _suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise MetroUsageError(
            f"{path}: cannot write a {what} as {suffix or 'a file without extension'!r}; "
            f"use one of {', '.join(allowed)}"
        )
    return suffix


def _tensor_cloud(cloud: PointCloud) -> o3d.t.geometry.PointCloud:
    """``cloud`` as an Open3D tensor point cloud: float32 positions and normals (NaN normals become 0), uint8
    colours and an (N, 1) float32 ``confidence`` attribute (NaN becomes 0), as present."""
    import open3d as o3d

    n = len(cloud)
    if n == 0:
        raise ReconstructionError("the point cloud is empty: nothing to write")
    tensor = o3d.core.Tensor.from_numpy
    pcd = o3d.t.geometry.PointCloud(tensor(np.ascontiguousarray(cloud.points, np.float32)))
    if cloud.normals is not None:
        pcd.point.normals = tensor(np.ascontiguousarray(np.nan_to_num(np.asarray(cloud.normals, np.float32))))
    if cloud.colors is not None:
        pcd.point.colors = tensor(np.ascontiguousarray(cloud.colors, np.uint8))
    if cloud.confidence is not None:
        conf = np.nan_to_num(np.asarray(cloud.confidence, np.float32)).reshape(n, 1)
        pcd.point.confidence = tensor(np.ascontiguousarray(conf))
    return pcd


#: Open3D tensor attributes -> the PLY vertex properties that hold them.
_PLY_PROPERTIES = {
    "positions": ("x", "y", "z"),
    "normals": ("nx", "ny", "nz"),
    "colors": ("red", "green", "blue"),
}


def read_ply_vertices(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Vertex properties of a point-cloud PLY (as written by :func:`write_point_cloud`) by PLY name:
    ``x y z``, ``nx ny nz``, ``red green blue`` and custom ones such as ``confidence``, in that order, with
    their stored dtypes (``open3d.t.io``)."""
    import open3d as o3d

    pcd = o3d.t.io.read_point_cloud(Path(path))
    if pcd.is_empty():
        raise ValueError(f"{path}: no vertices could be read")
    out: dict[str, np.ndarray] = {}
    for attr, names in _PLY_PROPERTIES.items():
        if attr in pcd.point:
            values = pcd.point[attr].numpy()
            out.update({name: values[:, k].copy() for k, name in enumerate(names)})
    for attr in sorted(set(pcd.point) - set(_PLY_PROPERTIES)):
        out[attr] = pcd.point[attr].numpy().reshape(len(pcd.point.positions), -1).squeeze(axis=1).copy()
    return out


def write_point_cloud(path: str | os.PathLike[str], cloud: PointCloud) -> Path:
    """Write ``cloud`` to ``path`` (format by extension, see the module docstring), atomically."""
    path = Path(path)
    suffix = _suffix(path, POINT_CLOUD_SUFFIXES, "point cloud")
    with atomic_path(path) as tmp:
        if suffix in (".ply", ".pcd"):
            import open3d as o3d

            pcd = _tensor_cloud(cloud)
            if not o3d.t.io.write_point_cloud(tmp, pcd, write_ascii=False, compressed=False):
                raise OSError(f"Open3D could not write {path}")
        else:
            import trimesh

            colors = None
            if cloud.colors is not None:
                colors = np.concatenate(
                    [cloud.colors, np.full((len(cloud), 1), 255, np.uint8)], axis=1
                ).astype(np.uint8)
            trimesh.PointCloud(np.asarray(cloud.points, np.float64), colors=colors).export(str(tmp))
    return path


def write_mesh(path: str | os.PathLike[str], mesh: Mesh) -> Path:
    """Write ``mesh`` with vertex normals and colours to ``path`` (.ply / .obj / .glb), atomically."""
    path = Path(path)
    suffix = _suffix(path, MESH_SUFFIXES, "mesh")
    with atomic_path(path) as tmp:
        if suffix == ".ply":
            import open3d as o3d

            ok = o3d.io.write_triangle_mesh(
                tmp,
                mesh.to_open3d(),
                write_ascii=False,
                compressed=False,
                write_vertex_normals=True,
                write_vertex_colors=mesh.vertex_colors is not None,
                write_triangle_uvs=False,
            )
            if not ok:
                raise OSError(f"Open3D could not write {path}")
        else:
            import trimesh

            colors = None
            if mesh.vertex_colors is not None:
                colors = np.concatenate(
                    [mesh.vertex_colors, np.full((len(mesh.vertices), 1), 255, np.uint8)], axis=1
                )
            tm = trimesh.Trimesh(
                vertices=np.asarray(mesh.vertices, np.float64),
                faces=np.asarray(mesh.triangles, np.int64),
                vertex_normals=np.asarray(mesh.vertex_normals, np.float64),
                vertex_colors=colors,
                process=False,
            )
            if suffix == ".obj":
                tm.export(str(tmp), include_normals=True, include_color=True)
            else:
                tm.export(str(tmp))
    return path
