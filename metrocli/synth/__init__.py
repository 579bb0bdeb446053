"""The project's own ray caster (Open3D RaycastingScene): rendered photos with exactly known geometry.

World frame: metres, z up (floor/ground at z = 0). Poses are 4x4 camera-to-world matrices in OpenCV camera
axes (x right, y down, z forward). Open3D is imported only when rendering.

    >>> from metrocli.synth import room_scene, look_at, intrinsics_for_lens, render
    >>> view = render(room_scene(), intrinsics_for_lens(640, 480, 26), look_at((1, 0.4, 1.6), (2, 2.9, 0.7)))

Writing photos (:func:`write_sample`, :func:`to_stored`, ...) lives in :mod:`metrocli.synth.samples`; those
names are also importable from here (loaded on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

from metrocli.synth.camera import (
    IPHONE,
    LENS_F35_MM,
    PIXEL,
    Lens,
    Phone,
    focal_px_for_35mm,
    intrinsics_for_lens,
    look_at,
)
from metrocli.synth.render import NO_HIT, STRUCTURE, Render, render, visible
from metrocli.synth.scene import ROOM_SIZE_M, Light, Scene, SceneObject, room_scene, street_scene
from metrocli.synth.textures import Material

_FROM_SAMPLES = (
    "SampleFiles",
    "depth_path_for",
    "to_display",
    "to_stored",
    "write_sample",
    "write_depth_png",
)


def __getattr__(name: str) -> Any:
    # Lazy so that `python -m metrocli.synth.samples` does not import the module twice.
    if name in _FROM_SAMPLES:
        return getattr(importlib.import_module("metrocli.synth.samples"), name)
    raise AttributeError(f"module 'metrocli.synth' has no attribute {name!r}")


__all__ = [
    "IPHONE",
    "LENS_F35_MM",
    "NO_HIT",
    "PIXEL",
    "ROOM_SIZE_M",
    "STRUCTURE",
    "Lens",
    "Light",
    "Material",
    "Phone",
    "Render",
    "SampleFiles",
    "Scene",
    "SceneObject",
    "depth_path_for",
    "focal_px_for_35mm",
    "intrinsics_for_lens",
    "look_at",
    "render",
    "room_scene",
    "street_scene",
    "to_display",
    "to_stored",
    "visible",
    "write_depth_png",
    "write_sample",
]
