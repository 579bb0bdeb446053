"""COLMAP text model of a fused scene (``metro reconstruct FOLDER -o scene.ply --export colmap DIR``), which
COLMAP, pycolmap, nerfstudio and Gaussian-splatting trainers read as a calibrated, posed image set.

``DIR/cameras.txt``
    One ``PINHOLE`` camera per photo: ``CAMERA_ID PINHOLE WIDTH HEIGHT fx fy cx cy`` (pixels of the upright,
    displayed image: a photo stored rotated by EXIF must be given to those tools upright).
``DIR/images.txt``
    ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` and an empty line of 2D points: COLMAP's world-to-camera
    rotation (unit quaternion, w first, ``qw >= 0``) and translation in metres; the world is the fused
    scene's frame (the reference photo's camera frame, OpenCV axes, which COLMAP also uses).
``DIR/points3D.txt``
    ``POINT3D_ID X Y Z R G B ERROR`` with empty tracks: a sparse sample of the fused mesh's vertices (metres,
    colours 0-255, ERROR 0), for initialising splats or NeRFs.

Every file is written atomically; numbers are written with 17 significant digits (round trip exact).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metrocli.atomic import write_text_atomic
from metrocli.io.geometry_io import CameraView


def colmap_pose(pose_camera_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP's ``(qvec, tvec)`` of a 4x4 camera-to-world pose: the world-to-camera rotation as a unit
    quaternion ``(w, x, y, z)`` with ``w >= 0`` and the translation ``-R^T c``."""
    from scipy.spatial.transform import Rotation

    pose = np.asarray(pose_camera_to_world, np.float64)
    r_wc = pose[:3, :3].T
    x, y, z, w = Rotation.from_matrix(r_wc).as_quat()
    q = np.array([w, x, y, z])
    if q[0] < 0:
        q = -q
    return q, -r_wc @ pose[:3, 3]


def _num(x: float) -> str:
    return f"{float(x):.17g}"


def write_colmap_text(
    folder: str | os.PathLike[str],
    cameras: Sequence[CameraView],
    points_xyz: np.ndarray,
    points_rgb: np.ndarray | None = None,
) -> list[Path]:
    """Write ``cameras.txt``, ``images.txt`` and ``points3D.txt`` into ``folder`` (created); returns them.
    Camera and image ids are 1, 2, ... in the order of ``cameras``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cam_lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
    ]
    img_lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for i, cam in enumerate(cameras, start=1):
        k = cam.intrinsics
        params = " ".join(_num(v) for v in (k.fx, k.fy, k.cx, k.cy))
        cam_lines.append(f"{i} PINHOLE {k.width} {k.height} {params}")
        q, t = colmap_pose(cam.pose_camera_to_reference)
        img_lines.append(f"{i} {' '.join(_num(v) for v in (*q, *t))} {i} {cam.name}")
        img_lines.append("")
    xyz = np.asarray(points_xyz, np.float64).reshape(-1, 3)
    rgb = (
        np.full((len(xyz), 3), 128, np.uint8)
        if points_rgb is None
        else np.asarray(points_rgb, np.uint8)[:, :3]
    )
    pt_lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
    ]
    pt_lines += [
        f"{i} {_num(p[0])} {_num(p[1])} {_num(p[2])} {c[0]} {c[1]} {c[2]} 0"
        for i, (p, c) in enumerate(zip(xyz, rgb, strict=True), start=1)
    ]
    return [
        write_text_atomic(folder / name, "\n".join(lines) + "\n")
        for name, lines in (("cameras.txt", cam_lines), ("images.txt", img_lines), ("points3D.txt", pt_lines))
    ]
