"""metrocli — single-image metrology and photogrammetry with Metric3D.

Public API (imported lazily so that ``metro --help`` stays fast and torch-free)::

    from metrocli import load_model, Prediction, MetroError
    model = load_model("vit-small")                # official weights from the cache or the hub
    pred = model.predict(image_rgb_uint8, (fx, fy, cx, cy))

    from metrocli import ModelSpec, ModelDepth, SensorDepth, FocalMode, DepthMap
    provider = ModelDepth(ModelSpec("vit-small"), FocalMode())  # what every command and pipeline uses
    depth = provider.provide(provider.focal.load_photo("photo.jpg"))  # DepthMap

    from metrocli import self_calibrate            # the focal length from one prediction (issue 15)
    result = self_calibrate(pred)                  # focal_px, focal_sigma_px, trusted, reason, warning
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: name -> module, or (module, attribute) when the attribute has another name there.
_LAZY: dict[str, str | tuple[str, str]] = {
    "self_calibrate": ("metrocli.geometry.selfcal.calibrate", "calibrate_prediction"),
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
    from metrocli.geometry.selfcal.calibrate import calibrate_prediction as self_calibrate
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
    "self_calibrate",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        target = _LAZY[name]
        module, attr = target if isinstance(target, tuple) else (target, name)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'metrocli' has no attribute {name!r}")
