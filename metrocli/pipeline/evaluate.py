"""`metro eval` as a library: run the model over an annotated dataset and score it against ground truth.

Protocol (see :mod:`metrocli.evaluation.metrics`): each frame is predicted at its stored resolution with the
annotated intrinsics; depth errors are computed over ground-truth pixels inside ``(min_depth_m, max_depth_m)``
with the prediction clipped to the same range, then averaged over frames (every frame weighs the same).
The default cap is 10 m for indoor and 80 m for outdoor datasets, chosen from the folder name (``nyu``… /
``kitti``…) or else from the ground-truth range (:func:`metrocli.evaluation.dataset.default_max_depth`).
Depth metrics are restricted to the standard crop: Eigen for NYU, Garg for KITTI, none otherwise (``crop``).
Normal metrics use every pixel with a ground-truth normal (where the model predicts normals).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import DatasetError, MetroError, MetroUsageError
from metrocli.evaluation.dataset import (
    DEFAULT_MIN_DEPTH_M,
    Dataset,
    Sample,
    default_crop,
    default_max_depth,
    load_dataset,
    load_depth_gt,
    load_normal_gt,
    load_rgb,
)
from metrocli.evaluation.metrics import (
    DEPTH_METRICS,
    NORMAL_METRICS,
    Crop,
    crop_mask,
    depth_metrics,
    mean_metrics,
    normal_metrics,
)
from metrocli.jsonsafe import json_ready
from metrocli.pipeline.engine import pipelined
from metrocli.pipeline.progress import with_progress
from metrocli.pipeline.provider import DepthProvider
from metrocli.prediction import Prediction

if TYPE_CHECKING:
    from metrocli.camera.photo import Photo

log = logging.getLogger("metrocli.pipeline.evaluate")

#: ``predict(image_uint8 (H,W,3), intrinsics) -> Prediction``: what is evaluated (normally the model).
Predictor = Callable[[np.ndarray, Intrinsics], Prediction]


@dataclass(frozen=True)
class EvalOptions:
    """Protocol of an evaluation. ``max_depth_m=None``: by dataset (10 m indoor, 80 m outdoor);
    ``crop=None``: by dataset (Eigen crop for NYU, Garg crop for KITTI, none otherwise)."""

    min_depth_m: float = DEFAULT_MIN_DEPTH_M
    max_depth_m: float | None = None
    crop: Crop | None = None
    limit: int | None = None
    #: metres per stored unit of the ground-truth PNGs (overrides the dataset's annotations)
    depth_scale: float | None = None


@dataclass(frozen=True)
class SampleResult:
    """Scores of one frame: depth metrics (+ ``valid_pixels``), normal metrics or None, seconds spent."""

    name: str
    depth: dict[str, float]
    normal: dict[str, float] | None
    seconds: float


@dataclass(frozen=True)
class EvalReport:
    """Per-frame and mean scores of a dataset, with the protocol used."""

    dataset: str
    root: Path
    model: str
    weights: str | None
    min_depth_m: float
    max_depth_m: float
    cap_reason: str
    crop: str
    samples: tuple[SampleResult, ...]
    failed: tuple[tuple[str, str], ...] = ()
    mean_depth: dict[str, float] = field(default_factory=dict)
    mean_normal: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (NaN -> None, without a warning)."""
        return json_ready(
            {
                "dataset": self.dataset,
                "root": str(self.root),
                "model": self.model,
                "weights": self.weights,
                "min_depth_m": self.min_depth_m,
                "max_depth_m": self.max_depth_m,
                "cap": self.cap_reason,
                "crop": self.crop,
                "frames": len(self.samples),
                "mean": {"depth": self.mean_depth, "normal": self.mean_normal},
                "samples": [
                    {"name": s.name, "depth": s.depth, "normal": s.normal, "seconds": s.seconds}
                    for s in self.samples
                ],
                "failed": [{"name": n, "error": e} for n, e in self.failed],
            },
            warn=False,  # a metric without data (no normals, no valid pixel) is null by design
        )


def _crop(name: str) -> Crop:
    """``name`` as a :data:`Crop`; MetroUsageError for an unknown one."""
    for crop in get_args(Crop):
        if name == crop:
            return crop
    raise MetroUsageError(f"unknown crop {name!r}; choose none, eigen or garg")


def _choose_cap(dataset: Dataset, options: EvalOptions) -> tuple[float, str]:
    if options.max_depth_m is not None:
        return float(options.max_depth_m), "given (--max-depth)"
    by_name = default_max_depth(dataset.name)
    if "dataset name" in by_name[1]:
        return by_name
    gts = []
    for s in dataset.samples[:20]:
        try:
            gts.append(load_depth_gt(s))
        except MetroError:  # reported with its frame; the cap comes from the readable ones
            continue
    return default_max_depth(dataset.name, gts)


@dataclass(frozen=True)
class LoadedFrame:
    """A frame read from disk (stage 1 of :func:`evaluate_dataset`'s pipeline): the image, its annotated
    intrinsics, the ground truth, and the seconds spent so far."""

    sample: Sample
    rgb: np.ndarray
    intrinsics: Intrinsics
    gt: np.ndarray
    gt_normal: np.ndarray | None
    seconds: float


@dataclass(frozen=True)
class PredictedFrame:
    """A frame and the model's prediction of it (stage 2)."""

    frame: LoadedFrame
    prediction: Prediction
    seconds: float


def load_frame(sample: Sample) -> LoadedFrame:
    """Read one frame and its ground truth; DatasetError when they do not match."""
    start = time.perf_counter()
    rgb = load_rgb(sample)
    gt = load_depth_gt(sample)
    h, w = rgb.shape[:2]
    if gt.shape != (h, w):
        raise DatasetError(
            f"depth map {sample.depth} is {gt.shape[1]}x{gt.shape[0]}, image {sample.rgb} {w}x{h}"
        )
    gt_normal = load_normal_gt(sample)
    fx, fy, cx, cy = sample.cam_in
    intrinsics = Intrinsics(fx, fy, cx, cy, w, h, "user")
    return LoadedFrame(sample, rgb, intrinsics, gt, gt_normal, time.perf_counter() - start)


def score_frame(
    predicted: PredictedFrame, *, min_depth_m: float, max_depth_m: float, crop: Crop = "none"
) -> SampleResult:
    """Score a frame's prediction against its ground truth (stage 3)."""
    start = time.perf_counter()
    frame, prediction = predicted.frame, predicted.prediction
    region = crop_mask(frame.gt.shape, crop)
    depth = depth_metrics(
        prediction.depth, frame.gt, min_depth_m=min_depth_m, max_depth_m=max_depth_m, mask=region
    )
    if depth["valid_pixels"] == 0:  # nothing to score: a failed frame with its reason, never a silent NaN
        raise DatasetError(
            f"{frame.sample.depth}: no ground-truth pixel between {min_depth_m:g} and {max_depth_m:g} m"
            f"{'' if crop == 'none' else f' inside the {crop} crop'} (check --depth-scale)"
        )
    normal = None
    if frame.gt_normal is not None and prediction.normal is not None:
        if frame.gt_normal.shape[:2] != frame.gt.shape:
            h, w = frame.gt.shape
            sample = frame.sample
            raise DatasetError(f"normal map {sample.normal} does not match image {sample.rgb} ({w}x{h})")
        normal = normal_metrics(prediction.normal, frame.gt_normal)
    seconds = frame.seconds + predicted.seconds + time.perf_counter() - start
    return SampleResult(frame.sample.name, depth, normal, seconds)


def _predicted(frame: LoadedFrame, predict: Predictor) -> PredictedFrame:
    start = time.perf_counter()
    return PredictedFrame(frame, predict(frame.rgb, frame.intrinsics), time.perf_counter() - start)


def evaluate_sample(
    sample: Sample, predict: Predictor, *, min_depth_m: float, max_depth_m: float, crop: Crop = "none"
) -> SampleResult:
    """Predict one frame and score it against its ground truth."""
    return score_frame(
        _predicted(load_frame(sample), predict), min_depth_m=min_depth_m, max_depth_m=max_depth_m, crop=crop
    )


def _frame_photo(image: np.ndarray, intrinsics: Intrinsics) -> Photo:
    from metrocli.camera.photo import Photo

    h, w = image.shape[:2]
    return Photo(Path("frame"), image, intrinsics, orientation=1, stored_size=(w, h), make=None, model=None)


def provider_predictor(provider: DepthProvider) -> Predictor:
    """``predict`` of a depth provider (prepared now, so missing weights are one clear error up front)."""
    provider.prepare()

    def predict(image: np.ndarray, intrinsics: Intrinsics) -> Prediction:
        return provider.provide(_frame_photo(image, intrinsics)).to_prediction()

    return predict


def _provider_batch(provider: DepthProvider) -> Callable[[list[LoadedFrame]], list[PredictedFrame]]:
    """The predictions of several frames in one forward of ``provider``'s model."""
    from metrocli.pipeline.provider import provide_many

    def predict_batch(frames: list[LoadedFrame]) -> list[PredictedFrame]:
        start = time.perf_counter()
        depths = provide_many(provider, [_frame_photo(f.rgb, f.intrinsics) for f in frames])
        share = (time.perf_counter() - start) / max(1, len(frames))
        return [PredictedFrame(f, d.to_prediction(), share) for f, d in zip(frames, depths, strict=True)]

    return predict_batch


def _check_gt_scale(samples: Sequence[Sample]) -> None:
    """Warn once, before any model run, when the first readable ground truth has an implausible median
    (a wrong depth scale: see ``--depth-scale``)."""
    from metrocli.pipeline.provider import warn_implausible_depth

    for sample in samples[:3]:
        try:
            gt = load_depth_gt(sample)
        except MetroError:
            continue
        warn_implausible_depth(sample.depth, gt)
        return


def evaluate_dataset(
    folder: str | Path,
    options: EvalOptions,
    provider: DepthProvider | None = None,
    *,
    predict: Predictor | None = None,
    progress: bool = True,
    batch_size: int = 1,
) -> EvalReport:
    """Evaluate ``provider`` (normally :class:`~metrocli.pipeline.provider.ModelDepth`), or ``predict``, on
    the dataset in ``folder``; one of the two must be given.

    The frames go through the pipelined engine (:func:`~metrocli.pipeline.engine.pipelined`): read ahead of
    the model in a worker thread, scored behind it, in order; with a provider, up to ``batch_size`` frames
    go through the model in one forward.

    A frame that cannot be read is recorded in ``failed`` and the others go on; DatasetError when the folder
    or its annotations are unusable, or when no frame could be evaluated.
    """
    if not (
        options.min_depth_m >= 0
        and (options.max_depth_m is None or options.min_depth_m < options.max_depth_m)
    ):
        raise MetroUsageError(
            f"need 0 <= --min-depth < --max-depth, got {options.min_depth_m} and {options.max_depth_m}"
        )
    dataset = load_dataset(folder)
    samples = dataset.samples[: options.limit] if options.limit else dataset.samples
    if options.depth_scale is not None:
        import dataclasses

        samples = tuple(dataclasses.replace(s, depth_scale=1.0 / options.depth_scale) for s in samples)
    _check_gt_scale(samples)
    max_depth_m, reason = _choose_cap(dataset, options)
    crop = _crop(options.crop or default_crop(dataset.name))
    if options.min_depth_m >= max_depth_m:
        raise MetroUsageError(
            f"--min-depth {options.min_depth_m} must be below the depth cap {max_depth_m} m"
        )
    key: dict[str, Any] = provider.key() if provider is not None else {}
    batch: Callable[[list[LoadedFrame]], list[PredictedFrame]] | None = None
    if predict is None:
        if provider is None:
            raise MetroUsageError("evaluate_dataset needs a depth provider or a predict function")
        predict = provider_predictor(provider)
        batch = _provider_batch(provider)
    the_predict: Predictor = predict
    results: list[SampleResult] = []
    failed: list[tuple[str, str]] = []

    def score(predicted: PredictedFrame) -> SampleResult:
        return score_frame(predicted, min_depth_m=options.min_depth_m, max_depth_m=max_depth_m, crop=crop)

    outcomes = pipelined(
        samples,
        load_frame,
        lambda frame: _predicted(frame, the_predict),
        score,
        batch_size=batch_size,
        compute_batch=batch,
    )
    with closing(outcomes):
        for sample in with_progress(samples, description="eval", name=lambda s: s.name, enabled=progress):
            outcome = next(outcomes)  # in input order: this sample's
            exc = outcome.error
            if exc is None:
                results.append(outcome.result())
            elif isinstance(exc, MetroError):
                log.error("%s", exc)
                failed.append((sample.name, str(exc)))
            elif isinstance(exc, MemoryError):
                raise exc
            else:  # one bad frame never stops the evaluation
                message = f"{sample.name}: unexpected {type(exc).__name__}: {exc}"
                log.error("%s", message)
                failed.append((sample.name, message))
    if not results:
        raise DatasetError(f"no frame of {dataset.root} could be evaluated")
    with_normals = [r.normal for r in results if r.normal is not None]
    return EvalReport(
        dataset=dataset.name,
        root=dataset.root,
        model=str(key.get("model", "custom")),
        weights=key.get("weights"),
        min_depth_m=options.min_depth_m,
        max_depth_m=max_depth_m,
        cap_reason=reason,
        crop=crop,
        samples=tuple(results),
        failed=tuple(failed),
        mean_depth=mean_metrics((r.depth for r in results), DEPTH_METRICS),
        mean_normal=mean_metrics(with_normals, NORMAL_METRICS) if with_normals else None,
    )
