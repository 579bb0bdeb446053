"""The result of one model run, as plain numpy arrays: the torch → numpy boundary of metrocli."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from metrocli.camera.intrinsics import Intrinsics


@dataclass(frozen=True)
class Prediction:
    """Metric depth and normals of one upright photo, at the photo's resolution H x W.

    Attributes:
        depth: (H, W) float32, metres along the camera z axis (0 where invalid).
        normal: (H, W, 3) float32 unit normals in the camera frame (x right, y down, z forward), pointing
            towards the camera; None for depth-only models (Metric3D v1).
        confidence: (H, W) float32 depth confidence (higher is more confident; model-specific scale).
        normal_confidence: (H, W) float32 normal confidence (kappa), or None.
        intrinsics: the intrinsics (pixels of this H x W image) used to de-canonicalise the depth.
        model: preset name of the model, e.g. ``"vit-small"``.
        timings_s: wall-clock seconds per stage (``preprocess``, ``forward``, ``postprocess``).
    """

    depth: np.ndarray
    normal: np.ndarray | None
    confidence: np.ndarray
    normal_confidence: np.ndarray | None
    intrinsics: Intrinsics
    model: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
