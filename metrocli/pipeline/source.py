"""Where a photo's depth comes from: the Metric3D model, or a sensor depth map given with ``--depth``.

Both paths return a :class:`~metrocli.prediction.Prediction` in the photo's displayed orientation and
resolution. Sensor depth gets depth-gradient normals (:func:`metrocli.geometry.normals.normals_from_depth`,
zero where undefined) and confidence 1 where it has depth (0 elsewhere). The model is imported lazily, so
nothing here loads torch unless the model path is taken.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from metrocli.geometry.measure import MODEL_ERROR, ErrorModel, sensor_error
from metrocli.prediction import Prediction

#: ``Prediction.model`` of sensor depth.
SENSOR_MODEL_NAME = "sensor"


@dataclass(frozen=True)
class DepthSource:
    """A prediction plus the error model of where it came from (for measurement uncertainty)."""

    prediction: Prediction
    error: ErrorModel
    from_sensor: bool


def sensor_prediction(depth_m: np.ndarray, intrinsics: Any) -> Prediction:
    """A :class:`Prediction` for a sensor depth map (H, W) metres: depth-gradient normals, confidence 1/0."""
    from metrocli.geometry.normals import normals_from_depth
    from metrocli.geometry.sampling import valid_depth_mask

    t0 = time.perf_counter()
    depth = np.asarray(depth_m, dtype=np.float32)
    normal = np.nan_to_num(normals_from_depth(depth, intrinsics), nan=0.0).astype(np.float32)
    confidence = valid_depth_mask(depth).astype(np.float32)
    return Prediction(
        depth=depth,
        normal=normal,
        confidence=confidence,
        normal_confidence=None,
        intrinsics=intrinsics,
        model=SENSOR_MODEL_NAME,
        timings_s={"postprocess": time.perf_counter() - t0},
    )


def depth_source_for_photo(
    photo: Any,
    *,
    depth_file: str | os.PathLike[str] | None = None,
    depth_scale: float | None = None,
    model_name: str = "vit-small",
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    normals: bool = True,
) -> DepthSource:
    """Like :func:`depth_for_photo`, plus the :class:`ErrorModel` of the source. ``normals=False``: the
    model's normals are not upsampled to the photo (``prediction.normal`` is None; faster at 12 MP)."""
    if depth_file is not None:
        from metrocli.io.sensor_depth import load_sensor_depth

        sensor = load_sensor_depth(depth_file, photo, depth_scale)
        return DepthSource(
            sensor_prediction(sensor.depth_m, photo.intrinsics), sensor_error(sensor.quantum_m), True
        )
    from metrocli.model.factory import load_model

    model = load_model(model_name, weights=weights, device=device, precision=precision)
    prediction = model.predict(photo.image, photo.intrinsics, normals=normals)
    return DepthSource(prediction, MODEL_ERROR, False)


def depth_for_photo(
    photo: Any,
    *,
    depth_file: str | os.PathLike[str] | None = None,
    depth_scale: float | None = None,
    model_name: str = "vit-small",
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> Prediction:
    """Metric depth (and normals, confidence) of a loaded photo.

    Args:
        photo: a :class:`metrocli.camera.photo.Photo` (upright image and intrinsics).
        depth_file: a sensor depth map (``.npy`` metres or 16-bit ``.png`` millimetres) to use instead of the
            model; stored-size maps are oriented like the photo (:mod:`metrocli.io.sensor_depth`).
        depth_scale: metres per unit of ``depth_file``, overriding its format's default.
        model_name, weights, device, precision: passed to :func:`metrocli.model.factory.load_model`.
    Returns:
        :class:`Prediction` at the photo's displayed resolution.
    Raises:
        DepthMapError: unreadable or mis-sized ``depth_file``; WeightsError: model weights unavailable.
    """
    return depth_source_for_photo(
        photo,
        depth_file=depth_file,
        depth_scale=depth_scale,
        model_name=model_name,
        weights=weights,
        device=device,
        precision=precision,
    ).prediction
