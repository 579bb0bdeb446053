"""Writing point clouds and meshes, the format chosen by the file extension; every write is atomic.

Point clouds (:class:`~metrocli.geometry.pointcloud.PointCloud`)
    ``.ply`` and ``.pcd``: Open3D tensor I/O (``open3d.t.io``), binary: ``x y z`` (float32, metres),
    ``nx ny nz`` (float32), ``red green blue`` (uchar) and the custom ``confidence`` property (float32), as
    present. Open3D, MeshLab, CloudCompare and trimesh read the PLY (:func:`read_ply_vertices` reads it
    back). ``.obj`` / ``.glb``: trimesh (positions and colours).
Meshes (:class:`~metrocli.geometry.mesh.Mesh`)
    ``.ply``: trimesh, binary little-endian: ``x y z`` and ``nx ny nz`` float32, ``red green blue alpha``
    uchar, faces as int32 index lists. ``.obj``: trimesh, text with :data:`OBJ_DIGITS` decimals (micrometres),
    vertex normals and colours. ``.glb``: trimesh, with vertex normals and colours.

Frames, metres everywhere:
    PLY, PCD and OBJ are in the photo's camera frame (OpenCV): x right, y down, z forward.
    GLB is in glTF's axes (y up, the camera looking down -z): the one transform :func:`to_gltf_axes`,
    ``(x, y, z) -> (x, -y, -z)`` (a rotation of 180 degrees about x), applied to positions and normals.
    ``cameras`` (:class:`CameraView`) become glTF perspective camera nodes whose matrices are the photo's
    pose in the same axes (:func:`gltf_camera_matrix`), so a viewer opens the scene from the photo's
    viewpoint; ``frustums`` adds one small pyramid mesh per camera (``--cameras``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import struct
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metrocli.atomic import atomic_path, diagnose_short_write
from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MetroUsageError, ReconstructionError
from metrocli.geometry.mesh import Mesh
from metrocli.geometry.pointcloud import PointCloud

if TYPE_CHECKING:
    import open3d as o3d

log = logging.getLogger(__name__)

POINT_CLOUD_SUFFIXES = (".ply", ".pcd", ".obj", ".glb")
MESH_SUFFIXES = (".ply", ".obj", ".glb")

#: Decimals of OBJ coordinates and normals (metres: 1e-6 m).
OBJ_DIGITS = 6

#: The one transform from the camera frame (OpenCV: x right, y down, z forward) to glTF's axes (y up,
#: the camera looking down -z): ``(x, y, z) -> (x, -y, -z)``, a rotation of 180 degrees about x.
GLTF_FROM_CAMERA = np.diag([1.0, -1.0, -1.0])


def to_gltf_axes(xyz: np.ndarray) -> np.ndarray:
    """(N, 3) positions or normals in the camera frame -> glTF axes (:data:`GLTF_FROM_CAMERA`), float64."""
    return np.asarray(xyz, np.float64) @ GLTF_FROM_CAMERA.T


def gltf_camera_matrix(pose_camera_to_reference: np.ndarray) -> np.ndarray:
    """The 4x4 glTF node matrix of a camera whose pose (camera -> reference, both OpenCV frames) is given:
    ``F @ pose @ F`` with ``F`` = :data:`GLTF_FROM_CAMERA`, since both the scene and glTF's camera convention
    (looking down -z, y up) differ from OpenCV's by the same ``F``. The reference camera is the identity."""
    f = np.eye(4)
    f[:3, :3] = GLTF_FROM_CAMERA
    return f @ np.asarray(pose_camera_to_reference, np.float64) @ f


@dataclass(frozen=True)
class CameraView:
    """A photo's camera to place in a GLB: its name, intrinsics and 4x4 pose (camera -> reference frame,
    OpenCV axes, metres)."""

    name: str
    intrinsics: Intrinsics
    pose_camera_to_reference: np.ndarray


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


def read_mesh_vertices(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices (N, 3) float64 in the camera frame (OpenCV axes, metres; a GLB is turned back from glTF axes,
    its camera frustums left out) and their RGB colours (N, 3) uint8 or None, of a mesh written by
    :func:`write_mesh`."""
    import trimesh

    path = Path(path)
    loaded: Any = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.geometry.get("scene") or next(iter(loaded.geometry.values()))
    vertices = np.asarray(loaded.vertices, np.float64)
    if path.suffix.lower() == ".glb":
        vertices = to_gltf_axes(vertices)  # the transform is its own inverse
    colors = None
    if getattr(loaded.visual, "kind", None) == "vertex":
        colors = np.asarray(loaded.visual.vertex_colors, np.uint8)[:, :3]
    return vertices, colors


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


def write_point_cloud(
    path: str | os.PathLike[str],
    cloud: PointCloud,
    *,
    cameras: Sequence[CameraView] = (),
    frustums: bool = False,
) -> Path:
    """Write ``cloud`` to ``path`` (format by extension, see the module docstring), atomically. ``cameras``
    and ``frustums`` go into a GLB only."""
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
            if suffix == ".glb":
                points = to_gltf_axes(cloud.points)
                _write_glb(tmp, trimesh.PointCloud(points, colors=colors), points, cameras, frustums)
            else:
                trimesh.PointCloud(np.asarray(cloud.points, np.float64), colors=colors).export(str(tmp))
    return path


def write_mesh(
    path: str | os.PathLike[str],
    mesh: Mesh,
    *,
    normals: bool = False,
    cameras: Sequence[CameraView] = (),
    frustums: bool = False,
) -> Path:
    """Write ``mesh`` with its vertex colours to ``path`` (.ply / .obj / .glb; float32 binary PLY),
    atomically.

    ``normals`` also writes the vertex normals (a photo's grid mesh: the network's predicted normals,
    turned toward the camera; a fused scene: the TSDF surface's). Off by default: viewers shade a mesh from
    its faces (glTF requires it when normals are absent), and normals add 12 bytes a vertex (a 1.2 MP grid
    mesh PLY: 51.6 MB without, 66.3 MB with; float64 with normals was 94.6 MB). The predicted normals stay
    in ``.normal.npy`` and in point clouds. ``cameras`` and ``frustums`` go into a GLB only (see the module
    docstring)."""
    import trimesh

    path = Path(path)
    suffix = _suffix(path, MESH_SUFFIXES, "mesh")
    check_finite_positions(path, mesh.vertices, "vertices")
    with atomic_path(path) as tmp:
        colors = None
        if mesh.vertex_colors is not None:
            colors = np.concatenate(
                [mesh.vertex_colors, np.full((len(mesh.vertices), 1), 255, np.uint8)], axis=1
            )
        vertices = np.asarray(mesh.vertices, np.float64)
        vertex_normals = np.asarray(mesh.vertex_normals, np.float64) if normals else None
        if suffix == ".glb":
            vertices = to_gltf_axes(vertices)
            vertex_normals = None if vertex_normals is None else to_gltf_axes(vertex_normals)
        tm = trimesh.Trimesh(
            vertices=vertices,
            faces=np.asarray(mesh.triangles, np.int64),
            vertex_normals=vertex_normals,
            vertex_colors=colors,
            process=False,
        )
        if suffix == ".ply":
            tm.export(str(tmp), file_type="ply", encoding="binary", vertex_normal=normals)
        elif suffix == ".obj":
            tm.export(str(tmp), include_normals=normals, include_color=True, digits=OBJ_DIGITS)
        else:
            _write_glb(tmp, tm, vertices, cameras, frustums)
    return path


def _frustum(camera: CameraView, depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (glTF axes) and triangles of a pyramid from the camera centre to the image corners at
    ``depth_m``, both windings so that it shows from either side."""
    k = camera.intrinsics
    corners = np.array([[0, 0], [k.width, 0], [k.width, k.height], [0, k.height]], np.float64)
    rays = np.column_stack([(corners[:, 0] - k.cx) / k.fx, (corners[:, 1] - k.cy) / k.fy, np.ones(4)])
    local = np.vstack([np.zeros(3), rays * depth_m])
    pose = np.asarray(camera.pose_camera_to_reference, np.float64)
    world = local @ pose[:3, :3].T + pose[:3, 3]
    sides = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1]])
    return to_gltf_axes(world), np.vstack([sides, sides[:, ::-1]])


def _glb_scene(geometry: Any, cameras: Sequence[CameraView], frustums: bool, extent_m: float) -> Any:
    """A trimesh scene of ``geometry`` (already in glTF axes) and, with ``frustums``, one pyramid per camera
    (a tenth of the scene's extent deep)."""
    import trimesh

    scene = trimesh.Scene()
    scene.add_geometry(geometry, geom_name="scene")
    if frustums:
        depth_m = max(0.05, 0.1 * extent_m)
        for cam in cameras:
            verts, faces = _frustum(cam, depth_m)
            colors = np.tile(np.array([255, 140, 0, 255], np.uint8), (len(verts), 1))
            tm = trimesh.Trimesh(verts, faces, vertex_colors=colors, process=False)
            scene.add_geometry(tm, geom_name=f"frustum {cam.name}")
    return scene


def _add_gltf_cameras(glb: bytes, cameras: Sequence[CameraView]) -> bytes:
    """``glb`` with one perspective camera node per camera (matrix :func:`gltf_camera_matrix`) added to its
    scene (trimesh writes at most one camera)."""
    magic, version, _ = struct.unpack_from("<4sII", glb, 0)
    json_len, json_type = struct.unpack_from("<I4s", glb, 12)
    if magic != b"glTF" or version != 2 or json_type != b"JSON":
        raise OSError("trimesh wrote an unexpected GLB layout")
    doc = json.loads(glb[20 : 20 + json_len])
    rest = glb[20 + json_len :]
    doc.setdefault("cameras", [])
    doc.setdefault("nodes", [])
    scene = doc["scenes"][doc.get("scene", 0)]
    scene.setdefault("nodes", [])
    for cam in cameras:
        k = cam.intrinsics
        doc["cameras"].append(
            {
                "name": cam.name,
                "type": "perspective",
                "perspective": {
                    "yfov": 2.0 * math.atan(k.height / (2.0 * k.fy)),
                    "aspectRatio": k.width / k.height,
                    "znear": 0.01,
                },
            }
        )
        matrix = gltf_camera_matrix(cam.pose_camera_to_reference)
        doc["nodes"].append(
            {"name": cam.name, "camera": len(doc["cameras"]) - 1, "matrix": matrix.T.ravel().tolist()}
        )
        scene["nodes"].append(len(doc["nodes"]) - 1)
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<I4s", len(text), b"JSON") + text + rest
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def _write_glb(
    tmp: Path, geometry: Any, points: np.ndarray, cameras: Sequence[CameraView], frustums: bool
) -> None:
    """Write ``geometry`` (glTF axes) with the cameras as a GLB to ``tmp``."""
    extent = float(np.ptp(points, axis=0).max()) if len(points) else 1.0
    glb = _glb_scene(geometry, cameras, frustums, extent).export(file_type="glb")
    tmp.write_bytes(_add_gltf_cameras(glb, cameras) if cameras else glb)
