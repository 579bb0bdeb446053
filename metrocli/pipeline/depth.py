"""`metro depth` as a library: photos -> depth provider -> depth/normal/confidence maps, previews, sidecars.

Usage::

    runner = DepthRunner(ModelDepth(ModelSpec("vit-small")), out_dir)
    runner.prepare()                          # one-line WeightsError now, not once per photo
    for photo, stem in plan_stems(expand_inputs(paths)):
        result = runner.run(photo, stem)

The model is loaded lazily by the provider (torch is only imported when a photo needs it). Outputs of a photo
are written atomically and its JSON sidecar last, so a re-run skips photos whose outputs are complete (same
photo and same provider settings: model, weights, precision, focal mode) unless ``force``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metrocli.io.maps import output_paths, safe_stem
from metrocli.pipeline.provider import DepthProvider, ModelDepth

log = logging.getLogger("metrocli.pipeline.depth")


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


class DepthRunner:
    """Runs a depth provider over photos one at a time (the model is loaded once, lazily, by the provider).

    ``force``: recompute photos whose outputs are complete. ``depth_range_m``: fixed (near, far) metres of
    the previews' depth colours (default: each photo's own range).
    """

    def __init__(
        self,
        provider: DepthProvider,
        out_dir: str | Path,
        *,
        force: bool = False,
        depth_range_m: tuple[float, float] | None = None,
    ) -> None:
        self.provider = provider
        self.out_dir = Path(out_dir)
        self.force = force
        self.depth_range_m = depth_range_m

    # -- resume -------------------------------------------------------------------------------------------
    def existing(self, photo: Path, stem: str) -> DepthResult | None:
        """The complete outputs of a previous run for this photo with the same provider settings, or None."""
        if self.force:
            return None
        paths = output_paths(self.out_dir, stem)
        try:
            meta = json.loads(paths["json"].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("photo") != str(photo):
            return None
        if meta.get("provider") != self.provider.key():
            return None
        if meta.get("preview_depth_range_m") != (list(self.depth_range_m) if self.depth_range_m else None):
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

    def prepare(self) -> None:
        """Load the model now (one clear error instead of one per photo)."""
        self.provider.prepare()

    # -- one photo ----------------------------------------------------------------------------------------
    def run(self, photo_path: str | Path, stem: str | None = None) -> DepthResult:
        """Compute and write all outputs of one photo; returns what was written (or found complete)."""
        from metrocli.io.maps import depth_stats, write_depth_outputs

        photo_path = Path(photo_path)
        stem = stem or safe_stem(photo_path.name)
        done = self.existing(photo_path, stem)
        if done is not None:
            return done
        t0 = time.perf_counter()
        photo = self.provider.focal.load_photo(photo_path)
        t_load = time.perf_counter() - t0
        depth = self.provider.provide(photo)
        prediction = depth.to_prediction()
        t1 = time.perf_counter()
        model = self.provider if isinstance(self.provider, ModelDepth) else None
        extra: dict[str, Any] = {
            "photo": str(photo_path),
            "provider": self.provider.key(),
            "weights": str(model.weights_path) if model else None,
            "device": model.device if model else None,
            "precision": model.precision if model else None,
            "orientation": photo.orientation,
            "stored_size": list(photo.stored_size),
            "camera": {"make": photo.make, "model": photo.model},
            "warnings": list(photo.warnings),
            "timings_s": {"load_photo": t_load, **prediction.timings_s},
            "preview_depth_range_m": list(self.depth_range_m) if self.depth_range_m else None,
        }
        if depth.selfcal is not None:
            extra["selfcal"] = depth.selfcal.to_dict()
        files = write_depth_outputs(
            self.out_dir, stem, prediction, extra=extra, depth_range_m=self.depth_range_m
        )
        log.debug("wrote %s outputs in %.2f s", stem, time.perf_counter() - t1)
        return DepthResult(
            photo=photo_path,
            stem=stem,
            files=files,
            intrinsics=prediction.intrinsics.to_dict(),
            depth_median_m=depth_stats(prediction.depth)["median_m"],
            warnings=tuple(photo.warnings),
        )
