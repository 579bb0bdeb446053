"""Where a photo's depth comes from: the one way in to depth for every pipeline.

- :class:`FocalMode`: which focal length a photo is taken with: its EXIF (or default), the user's
  (``--focal-px``/``--fov``), or ``auto`` (self-calibrated from the model's own prediction).
- :class:`DepthProvider`: ``prepare()`` (load / check once: one clear error up front), ``provide(photo)``
  -> :class:`DepthMap`, ``key()`` (the settings that shape the output, for resume records).
- :class:`ModelDepth`: Metric3D from a :class:`~metrocli.model.spec.ModelSpec`, loaded lazily once per
  provider (the application's one model loader); owns threads, precision and the focal mode.
- :class:`SensorDepth`: a depth file, or a folder of them (:data:`~metrocli.pipeline.inputs.DEPTH_PATTERNS`),
  with its own error model (the quantisation of the map).
- :func:`make_provider`: builds one from options and checks the ``--focal auto`` rules (one place).

Nothing here imports torch until a model is loaded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from metrocli.camera.calibration import Calibration
from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MetroUsageError
from metrocli.geometry.measure import MODEL_ERROR, ErrorModel, sensor_error
from metrocli.model.spec import ModelSpec
from metrocli.pipeline.inputs import find_depth_file, list_photos
from metrocli.pipeline.selfcal import FocalCalibration, FocalCheck, focal_check
from metrocli.prediction import Prediction

if TYPE_CHECKING:
    from metrocli.camera.photo import Photo
    from metrocli.model.metric3d import Metric3D
    from metrocli.model.onnx_runtime import OnnxMetric3D

log = logging.getLogger("metrocli.pipeline.provider")

DepthSourceKind = Literal["model", "sensor"]


@dataclass(frozen=True)
class FocalMode:
    """The focal length photos are taken with: EXIF (default), the user's (``focal_px`` or horizontal
    ``fov_deg``), or ``auto`` (self-calibrated from the model's depth and normals; no override then).
    ``calibration``: the user's full intrinsics (``--intrinsics`` / ``--camera``,
    :mod:`metrocli.camera.calibration`), principal point included."""

    focal_px: float | None = None
    fov_deg: float | None = None
    auto: bool = False
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        given = [
            name
            for name, on in (
                ("--focal-px", self.focal_px is not None),
                ("--fov", self.fov_deg is not None),
                ("--focal auto", self.auto),
                (
                    self.calibration.source.split(" ")[0] if self.calibration else "",
                    self.calibration is not None,
                ),
            )
            if on
        ]
        if len(given) == 2:
            raise MetroUsageError(f"give {given[0]} or {given[1]}, not both")
        if len(given) > 2:
            raise MetroUsageError(f"give only one of {', '.join(given)}")

    @property
    def mode(self) -> Literal["exif", "user", "auto"]:
        """``exif``, ``user`` or ``auto``."""
        if self.auto:
            return "auto"
        user = self.focal_px is not None or self.fov_deg is not None or self.calibration is not None
        return "user" if user else "exif"

    def load_photo(self, path: str | os.PathLike[str]) -> Photo:
        """The photo at ``path`` with the user's focal length or intrinsics applied (EXIF otherwise)."""
        from dataclasses import replace

        from metrocli.camera.photo import load_photo

        # --focal auto: the default focal length's warning waits for the self-calibration's outcome
        photo = load_photo(
            path, focal_px=self.focal_px, fov_deg=self.fov_deg, log_default_focal=not self.auto
        )
        if self.calibration is None:
            return photo
        height, width = photo.image.shape[:2]
        return replace(photo, intrinsics=self.calibration.for_image(width, height))

    def key(self) -> dict[str, Any]:
        """Resume record: ``focal_px``, ``fov_deg``, with ``auto`` ``focal: "auto"``, with a calibration
        ``intrinsics`` (fx, fy, cx, cy and the size it is for)."""
        c = self.calibration
        return {
            "focal_px": self.focal_px,
            "fov_deg": self.fov_deg,
            **({"focal": "auto"} if self.auto else {}),
            **({"intrinsics": [c.fx, c.fy, c.cx, c.cy, c.width, c.height]} if c is not None else {}),
        }


@dataclass(frozen=True)
class DepthMap:
    """Metric depth of one upright photo, at the photo's resolution H x W, and where it came from.

    Attributes:
        source: ``"model"`` or ``"sensor"``.
        name: the model preset, or the depth file's name.
        depth_m: (H, W) float32 metres along the camera z axis, 0 where invalid.
        intrinsics: the intrinsics the depth is metric with (self-calibrated with ``--focal auto``).
        error: the depth error model of the source (for measurement uncertainty).
        normal: (H, W, 3) predicted unit normals (camera frame), or None (sensor depth, depth-only models,
            or not asked for); sensor normals are computed by the geometry (:func:`surface_normals`).
        confidence: (H, W) model confidence, or None (sensor depth: valid where depth > 0).
        normal_confidence: (H, W) normal confidence (kappa), or None.
        depth_file: the sensor depth file, or None.
        selfcal: the ``--focal auto`` calibration, or None.
        timings_s: seconds per stage.
    """

    source: DepthSourceKind
    name: str
    depth_m: np.ndarray
    intrinsics: Intrinsics
    error: ErrorModel
    normal: np.ndarray | None = None
    confidence: np.ndarray | None = None
    normal_confidence: np.ndarray | None = None
    depth_file: Path | None = None
    selfcal: FocalCalibration | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``"sensor"`` or the model preset (the ``depth_source`` of results)."""
        return "sensor" if self.source == "sensor" else self.name

    def to_prediction(self) -> Prediction:
        """The model output as a :class:`Prediction` (writers of ``metro depth``); model depth only."""
        if self.confidence is None:
            raise MetroUsageError(f"{self.name}: depth maps without confidence are not model predictions")
        return Prediction(
            depth=self.depth_m,
            normal=self.normal,
            confidence=self.confidence,
            normal_confidence=self.normal_confidence,
            intrinsics=self.intrinsics,
            model=self.name,
            timings_s=dict(self.timings_s),
        )


def surface_normals(depth: DepthMap) -> np.ndarray | None:
    """The normals of a depth map: predicted ones, else (sensor depth) depth-gradient normals, zero where
    undefined; None for model depth without normals."""
    if depth.normal is not None or depth.source == "model":
        return depth.normal
    from metrocli.geometry.normals import normals_from_depth

    return np.nan_to_num(normals_from_depth(depth.depth_m, depth.intrinsics), nan=0.0).astype(np.float32)


def validity_confidence(depth: DepthMap) -> np.ndarray:
    """Per-pixel confidence of a depth map: the model's, or 1 where sensor depth is valid (0 elsewhere)."""
    if depth.confidence is not None:
        return depth.confidence
    from metrocli.geometry.sampling import valid_depth_mask

    return valid_depth_mask(depth.depth_m).astype(np.float32)


class DepthProvider(Protocol):
    """Where depth comes from (see the module docstring)."""

    @property
    def focal(self) -> FocalMode: ...

    def prepare(self) -> None: ...

    def provide(self, photo: Photo, *, normals: bool = True) -> DepthMap: ...

    def key(self) -> dict[str, Any]: ...


def check_focal_auto(focal: FocalMode, *, sensor: bool = False, model: str | None = None) -> None:
    """The ``--focal auto`` rules: not with sensor depth, not with a focal override (:class:`FocalMode`
    itself), and only with a model that predicts normals (ViT). MetroUsageError otherwise."""
    if not focal.auto:
        return
    if sensor:
        raise MetroUsageError(
            "--focal auto needs the model's depth and normals, not sensor depth (--depth/--depth-dir)"
        )
    if model is not None:
        from metrocli.model.presets import get_preset  # pure data, no torch

        if get_preset(model).family != "vit":
            raise MetroUsageError("--focal auto needs a ViT model: it uses the predicted normals")


def check_backend(spec: ModelSpec) -> None:
    """The ``--backend onnxruntime`` rules: ``weights`` is the ``.onnx`` file (required), the precision is
    fp32 (or auto), and the device is not MPS. MetroUsageError otherwise."""
    if spec.backend == "torch":
        return
    if spec.weights is None:
        raise MetroUsageError("--backend onnxruntime needs --weights FILE.onnx (see `metro export onnx`)")
    if spec.precision not in ("fp32", "auto"):
        raise MetroUsageError(f"--backend onnxruntime runs fp32 only, not --precision {spec.precision}")
    if spec.device == "mps":
        raise MetroUsageError("--backend onnxruntime runs on auto, cpu or cuda, not --device mps")


class ModelDepth:
    """Metric3D depth: loads the model of ``spec`` once, lazily, and applies the focal mode."""

    def __init__(self, spec: ModelSpec = ModelSpec(), focal: FocalMode = FocalMode()) -> None:
        check_focal_auto(focal, model=spec.name)
        check_backend(spec)
        self.spec = spec
        self._focal = focal
        self._model: Metric3D | OnnxMetric3D | None = None
        self.weights_path: Path | None = None
        self.device: str | None = None
        self._warned_no_normals = False

    @property
    def focal(self) -> FocalMode:
        return self._focal

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (nothing, torch included, is until a photo needs it)."""
        return self._model is not None

    @property
    def precision(self) -> str:
        """The precision the model runs at (resolved once loaded)."""
        return str(getattr(self._model, "precision", self.spec.precision))

    def prepare(self) -> None:
        """Resolve the weights and load the model now (one clear error instead of one per photo)."""
        self.model()

    def model(self) -> Metric3D | OnnxMetric3D:
        """The loaded model (loaded on first call; ``spec.threads`` is applied first)."""
        if self._model is None and self.spec.backend == "onnxruntime":
            self._model = self._load_onnx()
        if self._model is None:
            from metrocli.model.factory import load_model, resolve_device
            from metrocli.model.runtime import set_threads
            from metrocli.model.weights import resolve_weights

            if self.spec.threads is not None:
                set_threads(self.spec.threads)
            self.weights_path = resolve_weights(self.spec.name, self.spec.weights)
            self.device = str(resolve_device(self.spec.device))
            start = time.perf_counter()
            self._model = load_model(
                self.spec.name, weights=self.weights_path, device=self.device, precision=self.spec.precision
            )
            log.info(
                "loaded %s from %s on %s (%s) in %.1f s",
                self.spec.name,
                self.weights_path,
                self.device,
                self.precision,
                time.perf_counter() - start,
            )
        return self._model

    def _load_onnx(self) -> OnnxMetric3D:
        """The ``.onnx`` file of ``spec.weights`` in onnxruntime; its preset must be ``spec.name``."""
        from metrocli.errors import WeightsError
        from metrocli.model.onnx_runtime import OnnxMetric3D

        assert self.spec.weights is not None  # check_backend
        start = time.perf_counter()
        device = self.spec.device
        assert device != "mps"  # check_backend
        model = OnnxMetric3D(self.spec.weights, device=device, threads=self.spec.threads)
        if model.preset.name != self.spec.name:
            raise WeightsError(
                f"{self.spec.weights} is an export of {model.preset.name}, not --model {self.spec.name}"
            )
        self.weights_path = Path(self.spec.weights)
        self.device = "cuda" if "CUDAExecutionProvider" in model.providers else "cpu"
        log.info(
            "loaded %s from %s in onnxruntime (%s) in %.1f s",
            self.spec.name,
            self.weights_path,
            ", ".join(model.providers),
            time.perf_counter() - start,
        )
        return model

    def provide(self, photo: Photo, *, normals: bool = True) -> DepthMap:
        """One forward at the photo's intrinsics; with ``--focal auto`` self-calibrated from it (normals
        are then always computed). ``normals=False`` skips upsampling the normals (faster at 12 MP)."""
        from metrocli.pipeline.principal import predict_centred

        prediction = predict_centred(
            self.model(), photo.image, photo.intrinsics, normals=normals or self.focal.auto
        )
        if normals and prediction.normal is None and not self._warned_no_normals:
            log.warning("%s predicts depth only: no normals", self.spec.name)
            self._warned_no_normals = True
        return self.from_prediction(prediction, photo)

    def provide_many(self, photos: Sequence[Photo], *, normals: bool = True) -> list[DepthMap]:
        """:meth:`provide` of several photos in one forward of the model (a batch: see
        :meth:`metrocli.model.metric3d.Metric3D.predict_batch`); the same maps as one at a time."""
        from metrocli.pipeline.principal import predict_centred_many

        predictions = predict_centred_many(
            self.model(),
            [photo.image for photo in photos],
            [photo.intrinsics for photo in photos],
            normals=normals or self.focal.auto,
        )
        if normals and predictions and predictions[0].normal is None and not self._warned_no_normals:
            log.warning("%s predicts depth only: no normals", self.spec.name)
            self._warned_no_normals = True
        return [self.from_prediction(p, photo) for p, photo in zip(predictions, photos, strict=True)]

    def from_prediction(self, prediction: Prediction, photo: Photo) -> DepthMap:
        """A :class:`DepthMap` of a model prediction of ``photo`` made at its intrinsics (e.g. from
        ``metro depth``), with the focal mode applied (``auto``: self-calibrated, no second forward)."""
        selfcal = None
        if self.focal.auto:
            from metrocli.pipeline.selfcal import self_calibrated_prediction

            calibrated = self_calibrated_prediction(prediction, photo.intrinsics, label=Path(photo.path).name)
            prediction, selfcal = calibrated.prediction, calibrated.calibration
        return DepthMap(
            source="model",
            name=prediction.model or self.spec.name,
            depth_m=prediction.depth,
            intrinsics=prediction.intrinsics,
            error=MODEL_ERROR,
            normal=prediction.normal,
            confidence=prediction.confidence,
            normal_confidence=prediction.normal_confidence,
            selfcal=selfcal,
            timings_s=dict(prediction.timings_s),
        )

    def key(self) -> dict[str, Any]:
        """Model, weights argument, precision, backend (when not torch) and focal mode."""
        return {
            "model": self.spec.name,
            "weights": str(self.spec.weights) if self.spec.weights else None,
            "precision": self.spec.precision,
            **({"backend": self.spec.backend} if self.spec.backend != "torch" else {}),
            **self.focal.key(),
        }


class SensorDepth:
    """Sensor depth maps (:mod:`metrocli.io.sensor_depth`): ``path`` is the map of a single photo, or a
    folder where each photo's map is found by :func:`~metrocli.pipeline.inputs.find_depth_file`.
    ``depth_scale``: metres per stored unit, overriding the format's default."""

    def __init__(
        self, path: str | os.PathLike[str], depth_scale: float | None = None, focal: FocalMode = FocalMode()
    ) -> None:
        check_focal_auto(focal, sensor=True)
        self.path = Path(path)
        self.depth_scale = depth_scale
        self._focal = focal

    @property
    def focal(self) -> FocalMode:
        return self._focal

    @property
    def is_folder(self) -> bool:
        """True when ``path`` is a folder of maps (``--depth-dir``)."""
        return self.path.is_dir()

    def prepare(self) -> None:
        """Nothing to load; a missing folder is a usage error now."""
        if not self.path.exists():
            raise MetroUsageError(f"{self.path}: no such depth map or folder")

    def depth_file(self, photo_path: Path) -> Path:
        """The depth map of the photo at ``photo_path``."""
        return find_depth_file(photo_path, self.path) if self.is_folder else self.path

    def provide(self, photo: Photo, *, normals: bool = True) -> DepthMap:
        """The sensor map oriented like ``photo`` (no normals: see :func:`surface_normals`)."""
        from metrocli.io.sensor_depth import load_sensor_depth

        t0 = time.perf_counter()
        depth_file = self.depth_file(Path(photo.path))
        sensor = load_sensor_depth(depth_file, photo, self.depth_scale)
        warn_implausible_depth(depth_file, sensor.depth_m)
        return DepthMap(
            source="sensor",
            name=depth_file.name,
            depth_m=np.asarray(sensor.depth_m, dtype=np.float32),
            intrinsics=photo.intrinsics,
            error=sensor_error(sensor.quantum_m),
            depth_file=depth_file,
            timings_s={"load_depth": time.perf_counter() - t0},
        )

    def key(self) -> dict[str, Any]:
        """The depth file or folder, its scale and the focal override."""
        where = "depth_dir" if self.is_folder else "depth_file"
        return {where: str(self.path), "depth_scale": self.depth_scale, **self.focal.key()}


#: Median depths (metres) outside this range suggest a wrong ``--depth-scale``.
PLAUSIBLE_MEDIAN_M = (0.3, 300.0)


def warn_implausible_depth(depth_file: Path, depth_m: np.ndarray) -> float | None:
    """Log a warning when the median valid depth of a sensor map is outside :data:`PLAUSIBLE_MEDIAN_M`
    (a KITTI map read as millimetres, a map in centimetres, ...); returns the median (None if no depth)."""
    valid = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    if valid.size == 0:
        return None
    median = float(np.median(valid))
    low, high = PLAUSIBLE_MEDIAN_M
    if not low <= median <= high:
        log.warning(
            "%s: median depth %.3g m is implausible; check --depth-scale (metres per stored unit: "
            "PNG default 0.001 = millimetres, as NYU; KITTI 0.00390625 = 1/256 m)",
            depth_file,
            median,
        )
    return median


def provide_many(provider: DepthProvider, photos: Sequence[Photo], *, normals: bool = True) -> list[DepthMap]:
    """The depth of each of ``photos``: one batched forward for :class:`ModelDepth`
    (:meth:`ModelDepth.provide_many`), one ``provide`` at a time for any other provider."""
    if isinstance(provider, ModelDepth):
        return provider.provide_many(photos, normals=normals)
    if normals:
        return [provider.provide(photo) for photo in photos]
    return [provider.provide(photo, normals=False) for photo in photos]


def photos_of(
    folder: str | os.PathLike[str],
    provider: DepthProvider,
    *,
    recursive: bool = False,
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:
    """:func:`~metrocli.pipeline.inputs.list_photos` of ``folder``, knowing where ``provider`` reads depth
    maps (the depth maps of the photos in a ``--depth-dir`` that is the same folder are not photos)."""
    sensor_dir = provider.path if isinstance(provider, SensorDepth) and provider.is_folder else None
    return list_photos(folder, sensor_dir, recursive=recursive, exclude=exclude)


def make_provider(
    spec: ModelSpec = ModelSpec(),
    focal: FocalMode = FocalMode(),
    *,
    sensor: str | os.PathLike[str] | None = None,
    depth_scale: float | None = None,
) -> ModelDepth | SensorDepth:
    """:class:`SensorDepth` of ``sensor`` (a depth file or folder) when given, else :class:`ModelDepth`.
    MetroUsageError for a ``--focal auto`` rule broken or a ``depth_scale`` without ``sensor``."""
    if sensor is not None:
        return SensorDepth(sensor, depth_scale, focal)
    if depth_scale is not None:
        raise MetroUsageError("--depth-scale is for sensor depth maps (--depth)")
    return ModelDepth(spec, focal)


def check_photo_focal(photo: Photo, provider: DepthProvider) -> FocalCheck:
    """``metro info --check-focal``: the photo's focal length (EXIF, user or default) against the one
    self-calibrated by ``provider`` (a :class:`ModelDepth` with ``FocalMode(auto=True)``; one forward)."""
    depth = provider.provide(photo)
    if depth.selfcal is None:
        raise MetroUsageError("checking the focal length needs model depth with --focal auto")
    return focal_check(depth.selfcal.photo_intrinsics, depth.selfcal.selfcal)
