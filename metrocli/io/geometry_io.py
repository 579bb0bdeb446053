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

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metrocli.atomic import atomic_path, diagnose_short_write
from metrocli.errors import MetroUsageError, ReconstructionError
from metrocli.geometry.mesh import Mesh
from metrocli.geometry.pointcloud import PointCloud

if TYPE_CHECKING:
    import open3d as o3d

log = logging.getLogger(__name__)

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


#: Bytes of the PLY scalar types.
_PLY_TYPE_BYTES = {
    **dict.fromkeys(("char", "uchar", "int8", "uint8"), 1),
    **dict.fromkeys(("short", "ushort", "int16", "uint16"), 2),
    **dict.fromkeys(("int", "uint", "float", "int32", "uint32", "float32"), 4),
    **dict.fromkeys(("double", "float64"), 8),
}


def ply_expected_bytes(path: Path) -> int | None:
    """Size a binary PLY must have by its header (triangles for face lists); None if not binary PLY."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0 or b"format binary" not in head[:end]:
        return None
    total = end + len(b"end_header\n")
    count, row = 0, 0
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:1] == ["element"]:
            total += count * row
            count, row = int(words[2]), 0
        elif words[:2] == ["property", "list"]:
            row += _PLY_TYPE_BYTES[words[2]] + 3 * _PLY_TYPE_BYTES[words[3]]
        elif words[:1] == ["property"]:
            row += _PLY_TYPE_BYTES[words[1]]
    return total + count * row


@contextlib.contextmanager
def _captured_stderr_fd() -> Iterator[list[str]]:
    """Capture what C libraries (Open3D's RPly) print on file descriptor 2; the text is in the yielded list
    afterwards (so a full disk is one message, not thousands of RPly lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    out: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            out.append(sink.read(1 << 16).decode("utf-8", "replace"))


@contextlib.contextmanager
def _open3d_write(tmp: Path, target: Path) -> Iterator[None]:
    """Around an Open3D write to ``tmp``: its stderr chatter is captured (logged at debug), and the file is
    checked against its PLY header; a short file raises WriteError (``no space left on device: target``)."""
    with _captured_stderr_fd() as chatter:
        yield
    if chatter and chatter[0].strip():
        log.debug("Open3D while writing %s: %s", target, chatter[0].strip()[:2000])
    if tmp.suffix.lower() == ".ply" and tmp.exists():
        expected = ply_expected_bytes(tmp)
        if expected is not None and tmp.stat().st_size != expected:
            raise diagnose_short_write(tmp, target, expected)


def check_finite_positions(path: Path, positions: np.ndarray, what: str) -> None:
    """ReconstructionError if some ``positions`` are not finite numbers: such a file (``inf`` coordinates from
    an absurd focal length or depth scale) is never written as a success."""
    finite = np.isfinite(np.asarray(positions)).all(axis=-1)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad:
        raise ReconstructionError(
            f"{path}: {bad} of {finite.size} {what} are not finite numbers (check the focal length and the "
            "depth scale); nothing was written"
        )


def write_point_cloud(path: str | os.PathLike[str], cloud: PointCloud) -> Path:
    """Write ``cloud`` to ``path`` (format by extension, see the module docstring), atomically."""
    path = Path(path)
    suffix = _suffix(path, POINT_CLOUD_SUFFIXES, "point cloud")
    check_finite_positions(path, cloud.points, "points")
    with atomic_path(path) as tmp:
        if suffix in (".ply", ".pcd"):
            import open3d as o3d

            pcd = _tensor_cloud(cloud)
            with _open3d_write(tmp, path):
                ok = o3d.t.io.write_point_cloud(tmp, pcd, write_ascii=False, compressed=False)
            if not ok:
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
    check_finite_positions(path, mesh.vertices, "vertices")
    with atomic_path(path) as tmp:
        if suffix == ".ply":
            import open3d as o3d

            o3d_mesh = mesh.to_open3d()
            with _open3d_write(tmp, path):
                ok = o3d.io.write_triangle_mesh(
                    tmp,
                    o3d_mesh,
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
