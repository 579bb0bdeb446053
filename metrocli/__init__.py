"""metrocli — single-image metrology and photogrammetry with Metric3D.

Public API (imported lazily so that ``metro --help`` stays fast and torch-free)::

    from metrocli import load_model, Prediction, MetroError
    model = load_model("vit-small")                # official weights from the cache or the hub
    pred = model.predict(image_rgb_uint8, (fx, fy, cx, cy))

    from metrocli import ModelSpec, ModelDepth, SensorDepth, FocalMode, DepthMap
    provider = ModelDepth(ModelSpec("vit-small"), FocalMode())  # what every command and pipeline uses
    depth = provider.provide(provider.focal.load_photo("photo.jpg"))  # DepthMap
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "metrocli.model.factory",
    "Prediction": "metrocli.prediction",
    "Intrinsics": "metrocli.camera.intrinsics",
    "MetroError": "metrocli.errors",
    "ModelSpec": "metrocli.model.spec",
    "ModelDepth": "metrocli.pipeline.provider",
    "SensorDepth": "metrocli.pipeline.provider",
    "FocalMode": "metrocli.pipeline.provider",
    "DepthMap": "metrocli.pipeline.provider",
}

if TYPE_CHECKING:  # pragma: no cover
    from metrocli.camera.intrinsics import Intrinsics
    from metrocli.errors import MetroError
    from metrocli.model.factory import load_model
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.provider import DepthMap, FocalMode, ModelDepth, SensorDepth
    from metrocli.prediction import Prediction

__all__ = [
    "DepthMap",
    "FocalMode",
    "Intrinsics",
    "MetroError",
    "ModelDepth",
    "ModelSpec",
    "Prediction",
    "SensorDepth",
    "__version__",
    "load_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metrocli' has no attribute {name!r}")
