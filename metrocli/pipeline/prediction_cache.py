"""Per-photo model predictions kept between runs of ``metro reconstruct FOLDER``.

Each raw prediction (depth, normals, confidences; before any self-calibration) is stored as
``<cache>/<resume key>.npz`` (:func:`metrocli.pipeline.fingerprint.resume_key`: photo content, model,
weights, precision, focal mode). Changing one photo of a folder therefore recomputes that photo only; the
cache keeps the entries of the last run's photos and drops the others (:func:`prune`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from metrocli.atomic import write_atomic
from metrocli.camera.photo import Photo
from metrocli.pipeline.fingerprint import resume_key
from metrocli.pipeline.provider import DepthMap, ModelDepth
from metrocli.prediction import Prediction

log = logging.getLogger("metrocli.pipeline.prediction_cache")


def cache_dir_for(out_path: str | os.PathLike[str]) -> Path:
    """``scene.ply`` -> ``.metro-cache/scene`` beside it (hidden: never listed as photos)."""
    out_path = Path(out_path)
    return out_path.parent / ".metro-cache" / out_path.stem


def _load(path: Path, photo: Photo, model: str) -> Prediction | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    if "depth" not in arrays or arrays["depth"].shape != photo.image.shape[:2]:
        return None
    return Prediction(
        depth=arrays["depth"],
        normal=arrays.get("normal"),
        confidence=arrays.get("confidence", np.ones_like(arrays["depth"])),
        normal_confidence=arrays.get("normal_confidence"),
        intrinsics=photo.intrinsics,
        model=model,
    )


def _save(path: Path, prediction: Prediction) -> None:
    arrays = {"depth": prediction.depth, "confidence": prediction.confidence}
    if prediction.normal is not None:
        arrays["normal"] = prediction.normal
    if prediction.normal_confidence is not None:
        arrays["normal_confidence"] = prediction.normal_confidence

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    try:
        write_atomic(path, write)
    except OSError as exc:  # a cache that cannot be written costs time, never the result
        log.warning("cannot cache the prediction in %s: %s", path.parent, exc)


def cached_model_depth(
    provider: ModelDepth, photo: Photo, cache_dir: Path, *, refresh: bool = False
) -> tuple[DepthMap, str]:
    """The model depth of ``photo`` from the cache, or from one forward (then cached; always with
    ``refresh``); returns it and its key."""
    key = resume_key(photo.path, provider)
    path = cache_dir / f"{key}.npz"
    prediction = None if refresh or not path.is_file() else _load(path, photo, provider.spec.name)
    if prediction is None:
        prediction = provider.model().predict(photo.image, photo.intrinsics, normals=True)
        _save(path, prediction)
    else:
        log.info("%s: prediction from the cache", Path(photo.path).name)
    return provider.from_prediction(prediction, photo), key


def prune(cache_dir: Path, keep: Iterable[str]) -> None:
    """Remove the cached predictions whose keys are not in ``keep``."""
    names = {f"{k}.npz" for k in keep}
    with contextlib.suppress(OSError):
        for entry in os.scandir(cache_dir):
            if entry.name.endswith(".npz") and entry.name not in names:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
