"""``--export colmap DIR``: a fused folder scene (its ``scene.json`` and mesh) as a COLMAP text model
(:mod:`metrocli.io.colmap`): every registered photo's intrinsics and pose, and a sparse sample of the mesh
vertices as 3D points."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import ReconstructionError
from metrocli.io.colmap import write_colmap_text
from metrocli.io.geometry_io import CameraView, read_mesh_vertices

#: Most 3D points written to ``points3D.txt`` (every n-th mesh vertex).
COLMAP_MAX_POINTS = 100_000


def export_colmap(
    json_path: str | os.PathLike[str], folder: str | os.PathLike[str], max_points: int = COLMAP_MAX_POINTS
) -> list[Path]:
    """Write the scene of ``json_path`` (``scene.json`` beside its mesh) as ``cameras.txt``, ``images.txt``
    and ``points3D.txt`` into ``folder``; returns the files. ReconstructionError when the scene cannot be
    read."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
        cameras = []
        for rec in data["photos"]:
            k = rec["intrinsics"]
            intrinsics = Intrinsics(
                float(k["fx"]),
                float(k["fy"]),
                float(k["cx"]),
                float(k["cy"]),
                int(k["width"]),
                int(k["height"]),
            )
            pose = np.asarray(rec["pose_camera_to_reference"], np.float64).reshape(4, 4)
            cameras.append(CameraView(str(rec["photo"]), intrinsics, pose))
        vertices, colors = read_mesh_vertices(json_path.parent / data["mesh"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReconstructionError(f"{json_path}: cannot export the scene to COLMAP: {exc}") from exc
    step = max(1, math.ceil(len(vertices) / max_points))
    return write_colmap_text(folder, cameras, vertices[::step], None if colors is None else colors[::step])
