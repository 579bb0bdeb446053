"""``metro reconstruct --separate``: one mesh (or cloud) per photo into a folder, resumable.

Each photo goes through the steps of :func:`metrocli.pipeline.single.reconstruct_photo` with the same depth
provider (the model is loaded once, lazily), pipelined (:meth:`SeparateJob.run_many`): photos are decoded
ahead of the model and their meshes built and written behind it, in plan order. An index in the user's
cache (:func:`index_path_for`: nothing but the outputs is ever added to the output folder or beside it)
records the resume key of each output (:func:`metrocli.pipeline.fingerprint.resume_key`: photo and
sensor-map content, provider settings, these options); a photo is skipped only when its output exists with
the same key, unless ``force``. A file in the folder that the index does not list is never replaced.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metrocli.atomic import write_text_atomic
from metrocli.errors import MetroUsageError, OutputError
from metrocli.pipeline.fingerprint import resume_key
from metrocli.pipeline.inputs import plan_stems
from metrocli.pipeline.provider import DepthMap, DepthProvider, photos_of
from metrocli.pipeline.single import MeshMethod

if TYPE_CHECKING:
    from metrocli.camera.photo import Photo
    from metrocli.pipeline.engine import Outcome


def index_path_for(out_dir: Path) -> Path:
    """Where the resume index of output folder ``out_dir`` lives (output name -> resume key):
    ``<cache>/separate/<sha256 of the folder's resolved path>.json`` (see :func:`metrocli.model.weights.
    cache_dir`)."""
    import hashlib

    from metrocli.model.weights import cache_dir

    digest = hashlib.sha256(os.fsencode(out_dir.resolve())).hexdigest()[:32]
    return cache_dir() / "separate" / f"{digest}.json"


@dataclass(frozen=True)
class SeparateOptions:
    """Options of the ``--separate`` batch: those of :func:`metrocli.pipeline.single.reconstruct_photo`,
    the output extension and whether to recompute existing outputs."""

    points_only: bool = False
    mesh_method: MeshMethod = "grid"
    simplify: int | None = None
    force: bool = False
    suffix: str = ".ply"
    recursive: bool = False
    mesh_normals: bool = False

    def key(self) -> dict[str, Any]:
        """The options that shape an output (resume)."""
        return {
            "points_only": self.points_only,
            "mesh_method": self.mesh_method,
            "simplify": self.simplify,
            "suffix": self.suffix,
            "mesh_normals": self.mesh_normals,
        }


@dataclass(frozen=True)
class SeparateResult:
    """One photo of the ``--separate`` batch: its output file and whether it was skipped (already there)."""

    photo: Path
    output: Path
    skipped: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "photo": str(self.photo),
            "output": str(self.output),
            "outputs": [str(self.output)],
            "skipped": self.skipped,
            **self.details,
        }


class SeparateJob:
    """``--separate``: one mesh (or cloud) per photo of ``inputs`` (a photo or a folder) into ``out_dir``."""

    def __init__(
        self,
        inputs: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        provider: DepthProvider,
        options: SeparateOptions = SeparateOptions(),
    ) -> None:
        inputs = Path(inputs)
        self.out_dir = Path(out_dir)
        self.provider = provider
        self.options = options
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise MetroUsageError(f"-o {self.out_dir}: --separate needs an output folder")
        photos = (
            photos_of(inputs, provider, recursive=options.recursive, exclude=[self.out_dir])
            if inputs.is_dir()
            else [inputs]
        )
        if not photos:
            raise MetroUsageError(f"{inputs}: no photos found")
        self.plan = plan_stems(photos)
        self.index_path = index_path_for(self.out_dir)
        self.index = self._read_index()
        self._lock = threading.Lock()  # the index: read by the loader thread, written by the writer
        self.check_targets()

    def _read_index(self) -> dict[str, str]:
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def key(self, photo: Path) -> str:
        """The resume key of ``photo``'s output."""
        return resume_key(photo, self.provider, self.options.key())

    def check_targets(self) -> None:
        """OutputError (before any work) when an output would replace an input photo, or a file that this
        command did not write (not in the index)."""
        from metrocli.pipeline.outputs import check_not_input

        inputs = [photo for photo, _ in self.plan]
        for photo, stem in self.plan:
            out = self.output_for(stem)
            check_not_input([out], inputs)
            if (out.exists() or out.is_symlink()) and out.name not in self.index and not self.options.force:
                raise OutputError(
                    f"{out} exists and was not written by this command (for {photo}); refusing to replace "
                    "it: choose another output folder, or --force"
                )

    def up_to_date(self, photo: Path, stem: str) -> bool:
        """Whether ``photo``'s output exists with the same resume key (and ``force`` is off)."""
        out = self.output_for(stem)
        if self.options.force or not out.is_file():
            return False
        try:
            key = self.key(photo)
        except OSError:  # the photo cannot be read: the run reports it
            return False
        with self._lock:
            return self.index.get(out.name) == key

    def prepare(self) -> None:
        """Load the model when some photo still needs depth (WeightsError up front)."""
        if not all(self.up_to_date(photo, stem) for photo, stem in self.plan):
            self.provider.prepare()

    def output_for(self, stem: str) -> Path:
        return self.out_dir / f"{stem}{self.options.suffix}"

    # -- one photo, in three stages (see metrocli.pipeline.engine) -------------------------------------------
    def load(self, item: tuple[Path, str]) -> SeparateResult | _Loaded:
        """The result of a photo whose output is up to date (skipped), or the decoded photo."""
        photo, stem = item
        if self.up_to_date(photo, stem):
            return SeparateResult(photo, self.output_for(stem), True)
        return _Loaded(photo, stem, self.provider.focal.load_photo(photo))

    def compute(self, loaded: SeparateResult | _Loaded) -> SeparateResult | _Computed:
        """The depth of a decoded photo (the model runs here)."""
        if isinstance(loaded, SeparateResult):
            return loaded
        return _Computed(loaded, self.provider.provide(loaded.image))

    def compute_batch(self, loaded: list[SeparateResult | _Loaded]) -> list[SeparateResult | _Computed]:
        """:meth:`compute` of several decoded photos in one forward of the model."""
        from metrocli.pipeline.provider import provide_many

        photos = [item for item in loaded if isinstance(item, _Loaded)]
        depths = iter(provide_many(self.provider, [item.image for item in photos]))
        return [
            item if isinstance(item, SeparateResult) else _Computed(item, next(depths)) for item in loaded
        ]

    def write(self, computed: SeparateResult | _Computed) -> SeparateResult:
        """Build and write the mesh (or cloud) of a photo's depth, and record it in the index."""
        from metrocli.pipeline.single import reconstruct_depth

        if isinstance(computed, SeparateResult):
            return computed
        photo = computed.loaded.path
        out = self.output_for(computed.loaded.stem)
        o = self.options
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.index.pop(out.name, None)
            self._write_index()
        result = reconstruct_depth(
            computed.loaded.image,
            computed.depth,
            out,
            points_only=o.points_only,
            mesh_method=o.mesh_method,
            simplify=o.simplify,
            mesh_normals=o.mesh_normals,
        )
        key = self.key(photo)
        with self._lock:
            self.index[out.name] = key
            self._write_index()
        details = result.to_dict()
        details.pop("photo", None)
        details.pop("output", None)
        return SeparateResult(photo, out, False, details)

    def run(self, item: tuple[Path, str]) -> SeparateResult:
        """Reconstruct one photo (skipped when its output exists, unless ``force``)."""
        return self.write(self.compute(self.load(item)))

    def run_many(
        self,
        *,
        ahead: int = 2,
        loaders: int | None = None,
        writers: int | None = None,
        batch_size: int = 1,
    ) -> Generator[Outcome[tuple[Path, str], SeparateResult], None, None]:
        """:meth:`run` over the plan, pipelined (:func:`~metrocli.pipeline.engine.pipelined`): photos decoded
        ahead of the model, meshes built and written behind it, up to ``batch_size`` photos per forward;
        one outcome per photo in plan order (an error of one photo is its outcome). ``loaders`` /
        ``writers`` threads (None: :func:`~metrocli.pipeline.engine.io_threads` of the model's device, once
        loaded). Close the iterator (or let it finish) to join the writers."""
        from metrocli.pipeline.engine import pipelined

        return pipelined(
            self.plan,
            self.load,
            self.compute,
            self.write,
            ahead=ahead,
            loaders=loaders,
            writers=writers,
            device=getattr(self.provider, "device", None),  # known once the model is loaded
            batch_size=batch_size,
            compute_batch=self.compute_batch,
            batch_key=lambda loaded: None if isinstance(loaded, SeparateResult) else "photo",
        )

    def _write_index(self) -> None:
        if self.out_dir.is_dir():
            self.index_path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.index_path, json.dumps(self.index, indent=1, sort_keys=True) + "\n")


@dataclass(frozen=True)
class _Loaded:
    """Stage 1 of a ``--separate`` photo: decoded."""

    path: Path
    stem: str
    image: Photo


@dataclass(frozen=True)
class _Computed:
    """Stage 2: with its depth."""

    loaded: _Loaded
    depth: DepthMap
