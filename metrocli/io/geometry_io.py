"""Writing point clouds and meshes, the format chosen by the file extension; every write is atomic.

Point clouds (:class:`~metrocli.geometry.pointcloud.PointCloud`)
    ``.ply``: binary little-endian PLY written with numpy: ``x y z`` (float32, metres), ``nx ny nz``
    (float32), ``red green blue`` (uchar) and ``confidence`` (float32), as present. Open3D's legacy writer
    cannot store extra vertex properties, so this writer does it itself; Open3D, MeshLab, CloudCompare and
    trimesh read it (:func:`read_ply_vertices` reads it back). ``.pcd``: Open3D tensor I/O with the same
    attributes. ``.obj`` / ``.glb``: trimesh (positions and colours).
Meshes (:class:`~metrocli.geometry.mesh.Mesh`)
    ``.ply``: Open3D (binary, vertex normals and colours). ``.obj`` / ``.glb``: trimesh, with vertex normals
    and colours.

Coordinates are the photo's camera frame, metres: x right, y down, z forward (OpenCV).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from metrocli.atomic import atomic_path
from metrocli.errors import MetroUsageError
from metrocli.geometry.mesh import Mesh
from metrocli.geometry.pointcloud import PointCloud

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


def _ply_dtype(cloud: PointCloud) -> np.dtype:
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if cloud.normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if cloud.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if cloud.confidence is not None:
        fields += [("confidence", "<f4")]
    return np.dtype(fields)


_PLY_TYPES = {"<f4": "float", "u1": "uchar", "|u1": "uchar"}


def point_cloud_ply_bytes(cloud: PointCloud) -> bytes:
    """The binary little-endian PLY file of ``cloud`` (see the module docstring); NaN normals become 0."""
    dtype = _ply_dtype(cloud)
    data = np.empty(len(cloud), dtype=dtype)
    pts = np.asarray(cloud.points, dtype=np.float32)
    data["x"], data["y"], data["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if cloud.normals is not None:
        n = np.nan_to_num(np.asarray(cloud.normals, dtype=np.float32))
        data["nx"], data["ny"], data["nz"] = n[:, 0], n[:, 1], n[:, 2]
    if cloud.colors is not None:
        c = np.asarray(cloud.colors, dtype=np.uint8)
        data["red"], data["green"], data["blue"] = c[:, 0], c[:, 1], c[:, 2]
    if cloud.confidence is not None:
        data["confidence"] = np.nan_to_num(np.asarray(cloud.confidence, dtype=np.float32))
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment metrocli point cloud: metres, camera frame x right, y down, z forward",
        f"element vertex {len(cloud)}",
    ]
    for name in dtype.names:
        header.append(f"property {_PLY_TYPES[dtype[name].str]} {name}")
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii") + data.tobytes()


def read_ply_vertices(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Vertex properties of a binary little-endian PLY (as written by :func:`write_point_cloud`) by name."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: not a binary little-endian PLY")
    types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4", "short": "<i2"}
    fields, count, in_vertex = [], 0, False
    for line in lines:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            count, in_vertex = int(parts[2]), True
        elif parts and parts[0] == "element":
            in_vertex = False
        elif in_vertex and parts[0] == "property":
            fields.append((parts[2], types[parts[1]]))
    data = np.frombuffer(raw, dtype=np.dtype(fields), count=count, offset=end)
    return {name: data[name].copy() for name in data.dtype.names}


def write_point_cloud(path: str | os.PathLike[str], cloud: PointCloud) -> Path:
    """Write ``cloud`` to ``path`` (format by extension, see the module docstring), atomically."""
    path = Path(path)
    suffix = _suffix(path, POINT_CLOUD_SUFFIXES, "point cloud")
    with atomic_path(path) as tmp:
        if suffix == ".ply":
            tmp.write_bytes(point_cloud_ply_bytes(cloud))
        elif suffix == ".pcd":
            import open3d as o3d

            pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(np.asarray(cloud.points, np.float32)))
            if cloud.normals is not None:
                pcd.point.normals = o3d.core.Tensor(np.nan_to_num(np.asarray(cloud.normals, np.float32)))
            if cloud.colors is not None:
                pcd.point.colors = o3d.core.Tensor(np.asarray(cloud.colors, np.float32) / 255.0)
            if cloud.confidence is not None:
                pcd.point.confidence = o3d.core.Tensor(
                    np.nan_to_num(np.asarray(cloud.confidence, np.float32)).reshape(-1, 1)
                )
            if not o3d.t.io.write_point_cloud(str(tmp), pcd, write_ascii=False, compressed=False):
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
                str(tmp),
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
