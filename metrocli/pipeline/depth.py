"""`metro depth` as a library: photos -> depth provider -> depth/normal/confidence maps, previews, sidecars.

Usage::

    runner = DepthRunner(ModelDepth(ModelSpec("vit-small")), out_dir)
    runner.prepare()                          # one-line WeightsError now, not once per photo
    for photo, stem in plan_stems(expand_inputs(paths)):
        result = runner.run(photo, stem)
    # or pipelined: photos decoded ahead of the model, outputs written behind it, results in input order
    for outcome in runner.run_many(plan_stems(expand_inputs(paths)), batch_size=4):
        result = outcome.result()                # raises that photo's error

The model is loaded lazily by the provider (torch is only imported when a photo needs it). Outputs of a photo
are written atomically and its JSON sidecar last, so a re-run skips photos whose outputs are complete (same
photo content and same provider settings: model, weights, precision, focal mode, and the same output options;
see :mod:`metrocli.pipeline.fingerprint`) unless ``force``. An output folder takes one run at a time
(:func:`metrocli.pipeline.lock.output_lock`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metrocli.errors import MetroError, OutputError
from metrocli.io.maps import OutputOptions, output_paths, safe_stem
from metrocli.pipeline.engine import Outcome, pipelined
from metrocli.pipeline.fingerprint import file_sha256, resume_key
from metrocli.pipeline.provider import DepthMap, DepthProvider, ModelDepth, provide_many

if TYPE_CHECKING:
    from metrocli.camera.photo import Photo

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
            "outputs": [str(v) for v in self.files.values()],
            "focal_px": self.intrinsics.get("fx"),
            "focal_source": self.intrinsics.get("focal_source"),
            "intrinsics": self.intrinsics,
            "depth_median_m": self.depth_median_m,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class LoadedPhoto:
    """Stage 1 of a photo: decoded (``load_s`` seconds)."""

    path: Path
    stem: str
    photo: Photo
    load_s: float


@dataclass(frozen=True)
class PhotoDepth:
    """Stage 2 of a photo: its depth (the model has run)."""

    loaded: LoadedPhoto
    depth: DepthMap


class DepthRunner:
    """Runs a depth provider over photos (the model is loaded once, lazily, by the provider): one at a time
    (:meth:`run`) or pipelined (:meth:`run_many`). Each photo goes through :meth:`load` (resume check and
    decoding), :meth:`compute` (the model) and :meth:`write`; a photo found complete passes through as its
    :class:`DepthResult`.

    ``force``: recompute photos whose outputs are complete. ``options``: what is written (a different choice
    is a different output: not resumed). ``depth_range_m``: fixed (near, far) metres of the previews' depth
    colours (default: each photo's own range).
    """

    def __init__(
        self,
        provider: DepthProvider,
        out_dir: str | Path,
        *,
        force: bool = False,
        depth_range_m: tuple[float, float] | None = None,
        options: OutputOptions = OutputOptions(),
    ) -> None:
        self.provider = provider
        self.out_dir = Path(out_dir)
        self.force = force
        self.depth_range_m = depth_range_m
        self.options = options
        #: whether the model's normals are needed (as maps or in the previews): upsampling them to 12 MP is
        #: the most expensive part of the post-processing, skipped for ``--outputs depth,png16``
        self.normals = bool({"normal", "preview"} & set(options.outputs))

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
        try:
            key = resume_key(photo, self.provider)
        except OSError:  # no such photo: the run reports it
            return None
        if not isinstance(meta, dict) or meta.get("resume_key") != key:
            return None
        if meta.get("preview_depth_range_m") != (list(self.depth_range_m) if self.depth_range_m else None):
            return None
        if meta.get("outputs", OutputOptions().key()) != self.options.key():
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

    def check_targets(self, plan: list[tuple[Path, str]]) -> None:
        """Refuse, before any work, to write over an input or over a file this command did not write.

        An output path may be replaced only when it is new or when the metro sidecar ``<stem>.json`` beside it
        lists it (a previous run's output); an input photo, a sensor depth map or any other file of the
        user (``room.depth.png`` beside ``room.jpg`` with ``-o`` the photos' folder) is never replaced.

        Raises:
            OutputError: (exit 2) naming the file.
        """
        from metrocli.pipeline.outputs import check_not_input

        inputs = [photo for photo, _ in plan]
        for photo, stem in plan:
            ours = self._owned(stem)
            targets = self._targets(stem).values()
            check_not_input(targets, inputs)
            for path in targets:
                if (path.exists() or path.is_symlink()) and path.name not in ours:
                    raise OutputError(
                        f"{path} exists and was not written by metro depth (for {photo}); "
                        "refusing to replace it: choose another output folder with -o"
                    )

    def _targets(self, stem: str) -> dict[str, Path]:
        """The files this run writes for ``stem`` (by its output options), keyed like :func:`output_paths`."""
        from metrocli.io.maps import PATH_OF_KIND

        kinds = {PATH_OF_KIND.get(kind, kind) for kind in self.options.outputs} | {"json"}
        every = output_paths(self.out_dir, stem, self.options.format)
        return {kind: path for kind, path in every.items() if kind in kinds}

    def _owned(self, stem: str) -> set[str]:
        """Names of the files of ``stem`` metro depth wrote here (its sidecar's ``owned`` and ``files``)."""
        try:
            meta = json.loads(output_paths(self.out_dir, stem)["json"].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        if not (isinstance(meta, dict) and "provider" in meta and isinstance(meta.get("files"), dict)):
            return set()
        owned = meta.get("owned")
        return {str(v) for v in meta["files"].values()} | (
            {str(v) for v in owned} if isinstance(owned, list) else set()
        )

    def prepare(self) -> None:
        """Load the model now (one clear error instead of one per photo)."""
        self.provider.prepare()

    # -- one photo, in three stages ------------------------------------------------------------------------
    def load(self, photo_path: str | Path, stem: str | None = None) -> DepthResult | LoadedPhoto:
        """The outputs found complete, or the decoded photo."""
        photo_path = Path(photo_path)
        stem = stem or safe_stem(photo_path.name)
        done = self.existing(photo_path, stem)
        if done is not None:
            return done
        t0 = time.perf_counter()
        photo = self.provider.focal.load_photo(photo_path)
        return LoadedPhoto(photo_path, stem, photo, time.perf_counter() - t0)

    def compute(self, loaded: DepthResult | LoadedPhoto) -> DepthResult | PhotoDepth:
        """The depth of a decoded photo (the model runs here)."""
        if isinstance(loaded, DepthResult):
            return loaded
        if not self.normals:
            return PhotoDepth(loaded, self.provider.provide(loaded.photo, normals=False))
        return PhotoDepth(loaded, self.provider.provide(loaded.photo))

    def compute_batch(self, loaded: list[DepthResult | LoadedPhoto]) -> list[DepthResult | PhotoDepth]:
        """:meth:`compute` of several decoded photos in one forward of the model
        (:func:`~metrocli.pipeline.provider.provide_many`)."""
        photos = [item for item in loaded if isinstance(item, LoadedPhoto)]
        depths = iter(provide_many(self.provider, [item.photo for item in photos], normals=self.normals))
        return [item if isinstance(item, DepthResult) else PhotoDepth(item, next(depths)) for item in loaded]

    def write(self, computed: DepthResult | PhotoDepth) -> DepthResult:
        """Write the outputs of a photo's depth; returns what was written."""
        from metrocli.io.maps import depth_stats, write_depth_outputs

        if isinstance(computed, DepthResult):
            return computed
        photo, depth = computed.loaded.photo, computed.depth
        photo_path = computed.loaded.path
        prediction = depth.to_prediction()
        if depth.source == "model" and not np.any(np.isfinite(prediction.depth) & (prediction.depth > 0)):
            raise MetroError(
                f"{photo_path}: the model gave no valid depth (not a finite number anywhere; are the weights "
                "sound? try `metro weights verify`); nothing was written"
            )
        t1 = time.perf_counter()
        model = self.provider if isinstance(self.provider, ModelDepth) else None
        extra: dict[str, Any] = {
            "photo": str(photo_path),
            "provider": self.provider.key(),
            "photo_sha256": file_sha256(photo_path),
            "resume_key": resume_key(photo_path, self.provider),
            "weights": str(model.weights_path) if model else None,
            "device": model.device if model else None,
            "precision": model.precision if model else None,
            "orientation": photo.orientation,
            "stored_size": list(photo.stored_size),
            "camera": {"make": photo.make, "model": photo.model},
            "warnings": list(photo.warnings),
            "timings_s": {"load_photo": computed.loaded.load_s, **prediction.timings_s},
            "preview_depth_range_m": list(self.depth_range_m) if self.depth_range_m else None,
            # every file of this stem metro wrote here, this run's and earlier runs' still present
            "owned": sorted(
                {p.name for p in self._targets(computed.loaded.stem).values()}
                | {n for n in self._owned(computed.loaded.stem) if (self.out_dir / n).exists()}
            ),
        }
        if depth.selfcal is not None:
            extra["selfcal"] = depth.selfcal.to_dict()
        stem = computed.loaded.stem
        files = write_depth_outputs(
            self.out_dir,
            stem,
            prediction,
            extra=extra,
            options=self.options,
            depth_range_m=self.depth_range_m,
        )
        log.debug("wrote %s outputs in %.2f s", stem, time.perf_counter() - t1)
        return DepthResult(
            photo=computed.loaded.path,
            stem=stem,
            files=files,
            intrinsics=prediction.intrinsics.to_dict(),
            depth_median_m=depth_stats(prediction.depth)["median_m"],
            warnings=tuple(photo.warnings),
        )

    def run(self, photo_path: str | Path, stem: str | None = None) -> DepthResult:
        """Compute and write all outputs of one photo; returns what was written (or found complete)."""
        return self.write(self.compute(self.load(photo_path, stem)))

    def run_many(
        self,
        plan: Iterable[tuple[Path, str]],
        *,
        ahead: int = 2,
        loaders: int | None = None,
        writers: int | None = None,
        batch_size: int = 1,
    ) -> Generator[Outcome[tuple[Path, str], DepthResult], None, None]:
        """:meth:`run` over ``(photo, stem)`` pairs, pipelined (:func:`~metrocli.pipeline.engine.pipelined`):
        photos are decoded by ``loaders`` threads up to ``ahead`` ahead of the model and written behind it by
        ``writers`` threads (None: :func:`~metrocli.pipeline.engine.io_threads` of the model's device);
        up to ``batch_size`` photos to compute go through the model in one forward (every photo is resized
        to the preset's one input size, so any photos batch; photos found complete never wait for one).
        Yields one outcome per photo in input order (an error of one photo is its outcome; the batch goes
        on). Close the iterator (or let it finish) to join the writers."""
        return pipelined(
            plan,
            lambda item: self.load(*item),
            self.compute,
            self.write,
            ahead=ahead,
            loaders=loaders,
            writers=writers,
            device=getattr(self.provider, "device", None),  # known once the model is loaded
            batch_size=batch_size,
            compute_batch=self.compute_batch,
            batch_key=lambda loaded: None if isinstance(loaded, DepthResult) else "photo",
        )
