"""`metro depth` as a library: photos -> Metric3D -> depth/normal/confidence maps, previews and JSON sidecars.

Usage::

    runner = DepthRunner(DepthOptions(model="vit-small"), out_dir)
    runner.prepare()                          # one-line WeightsError now, not once per photo
    for photo, stem in plan_stems(paths):
        result = runner.run(photo, stem)

The model is imported and loaded lazily (torch is only imported when a photo needs it). Outputs of a photo are
written atomically and its JSON sidecar last, so a re-run skips photos whose outputs are complete (same photo,
model, weights and focal override) unless ``force``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metrocli.io.maps import output_paths, safe_stem

log = logging.getLogger("metrocli.pipeline.depth")

Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class DepthOptions:
    """What `metro depth` runs: model preset, weights file (None = cached official), device, precision,
    focal override (pixels or horizontal FOV in degrees) and whether to recompute complete outputs."""

    model: str = "vit-small"
    weights: Path | None = None
    device: Device = "auto"
    precision: Precision = "fp32"
    focal_px: float | None = None
    fov_deg: float | None = None
    focal_auto: bool = False
    force: bool = False


@dataclass(frozen=True)
class DepthResult:
    """Outcome of one photo: written (or, when resumed, already present) output files keyed by kind."""

    photo: Path
    stem: str
    files: dict[str, Path]
    skipped: bool = False
    intrinsics: dict[str, Any] = field(default_factory=dict)
    depth_median_m: float | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (one line of `metro depth --json`)."""
        return {
            "photo": str(self.photo),
            "skipped": self.skipped,
            "files": {k: str(v) for k, v in self.files.items()},
            "intrinsics": self.intrinsics,
            "depth_median_m": self.depth_median_m,
            "warnings": list(self.warnings),
        }


def plan_stems(photos: list[Path]) -> list[tuple[Path, str]]:
    """Pair each photo with a unique, safe output stem (``a/x.jpg`` and ``b/x.jpg`` -> ``x``, ``x-2``)."""
    used: set[str] = set()
    plan = []
    for photo in photos:
        base = safe_stem(photo.name)
        stem, k = base, 2
        while stem.lower() in used:
            stem, k = f"{base}-{k}", k + 1
        used.add(stem.lower())
        plan.append((photo, stem))
    return plan


class DepthRunner:
    """Runs the model over photos one at a time, loading it once (lazily) for the whole batch."""

    def __init__(self, options: DepthOptions, out_dir: str | Path) -> None:
        self.options = options
        self.out_dir = Path(out_dir)
        self._model = None
        self._weights_path: Path | None = None
        self.device: str | None = None
        self.precision: str | None = None
        self._warned_no_normals = False

    # -- resume -------------------------------------------------------------------------------------------
    def existing(self, photo: Path, stem: str) -> DepthResult | None:
        """The complete outputs of a previous run for this photo with the same model and weights, or None."""
        if self.options.force:
            return None
        paths = output_paths(self.out_dir, stem)
        try:
            meta = json.loads(paths["json"].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("model") != self.options.model:
            return None
        wanted_weights = str(self.options.weights) if self.options.weights else None
        if meta.get("weights_arg") != wanted_weights or meta.get("photo") != str(photo):
            return None
        if meta.get("focal_override") != self._focal_override():
            return None
        names = meta.get("files")
        if not isinstance(names, dict):
            return None
        files = {k: self.out_dir / str(v) for k, v in names.items()}
        if not all(p.is_file() and p.parent == self.out_dir for p in files.values()):
            return None
        return DepthResult(
            photo=photo,
            stem=stem,
            files=files,
            skipped=True,
            intrinsics=meta.get("intrinsics") or {},
            depth_median_m=(meta.get("depth") or {}).get("median_m"),
        )

    def _focal_override(self) -> dict[str, float | bool | None]:
        override: dict[str, float | bool | None] = {
            "focal_px": self.options.focal_px,
            "fov_deg": self.options.fov_deg,
        }
        if self.options.focal_auto:
            override["auto"] = True
        return override

    # -- model --------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Resolve the weights and load the model now (one clear error instead of one per photo)."""
        self.model()

    def model(self):
        """The loaded Metric3D model (loaded on first call)."""
        if self._model is None:
            from metrocli.model.weights import resolve_weights

            self._weights_path = resolve_weights(self.options.model, self.options.weights)
            from metrocli.model.factory import load_model, resolve_device

            self.device = str(resolve_device(self.options.device))
            start = time.perf_counter()
            self._model = load_model(
                self.options.model,
                weights=self._weights_path,
                device=self.device,
                precision=self.options.precision,
            )
            self.precision = str(getattr(self._model, "precision", self.options.precision))
            log.info(
                "loaded %s from %s on %s (%s) in %.1f s",
                self.options.model,
                self._weights_path,
                self.device,
                self.precision,
                time.perf_counter() - start,
            )
        return self._model

    # -- one photo ----------------------------------------------------------------------------------------
    def run(self, photo_path: str | Path, stem: str | None = None) -> DepthResult:
        """Predict and write all outputs of one photo; returns what was written (or found complete)."""
        from metrocli.camera.photo import load_photo
        from metrocli.io.maps import depth_stats, write_depth_outputs

        photo_path = Path(photo_path)
        stem = stem or safe_stem(photo_path.name)
        done = self.existing(photo_path, stem)
        if done is not None:
            return done
        t0 = time.perf_counter()
        photo = load_photo(photo_path, focal_px=self.options.focal_px, fov_deg=self.options.fov_deg)
        t_load = time.perf_counter() - t0
        model = self.model()
        prediction = model.predict(photo.image, photo.intrinsics)
        selfcal = None
        if self.options.focal_auto:
            from metrocli.pipeline.selfcal import self_calibrated_prediction

            calibrated = self_calibrated_prediction(prediction, photo.intrinsics)
            prediction, selfcal = calibrated.prediction, calibrated.to_dict()
        if prediction.normal is None and not self._warned_no_normals:
            log.warning("%s predicts depth only: no .normal.npy files are written", self.options.model)
            self._warned_no_normals = True
        t1 = time.perf_counter()
        extra = {
            "photo": str(photo_path),
            "weights": str(self._weights_path),
            "weights_arg": str(self.options.weights) if self.options.weights else None,
            "focal_override": self._focal_override(),
            "device": self.device,
            "precision": self.precision,
            "orientation": photo.orientation,
            "stored_size": list(photo.stored_size),
            "camera": {"make": photo.make, "model": photo.model},
            "warnings": list(photo.warnings),
            "timings_s": {"load_photo": t_load, **prediction.timings_s},
        }
        if selfcal is not None:
            extra["selfcal"] = selfcal
        files = write_depth_outputs(self.out_dir, stem, prediction, extra=extra)
        log.debug("wrote %s outputs in %.2f s", stem, time.perf_counter() - t1)
        return DepthResult(
            photo=photo_path,
            stem=stem,
            files=files,
            intrinsics=prediction.intrinsics.to_dict(),
            depth_median_m=depth_stats(prediction.depth)["median_m"],
            warnings=tuple(photo.warnings),
        )
