"""``metro reconstruct --separate``: one mesh (or cloud) per photo into a folder, resumable.

Each photo goes through :func:`metrocli.pipeline.single.reconstruct_photo` with the same depth provider (the
model is loaded once, lazily); a photo whose output exists is skipped unless ``force``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metrocli.errors import MetroUsageError
from metrocli.pipeline.inputs import plan_stems
from metrocli.pipeline.provider import DepthProvider, photos_of
from metrocli.pipeline.single import MeshMethod


@dataclass(frozen=True)
class SeparateOptions:
    """Options of the ``--separate`` batch: those of :func:`metrocli.pipeline.single.reconstruct_photo`,
    the output extension and whether to recompute existing outputs."""

    points_only: bool = False
    mesh_method: MeshMethod = "grid"
    simplify: int | None = None
    force: bool = False
    suffix: str = ".ply"


@dataclass(frozen=True)
class SeparateResult:
    """One photo of the ``--separate`` batch: its output file and whether it was skipped (already there)."""

    photo: Path
    output: Path
    skipped: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"photo": str(self.photo), "output": str(self.output), "skipped": self.skipped, **self.details}


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
        photos = photos_of(inputs, provider) if inputs.is_dir() else [inputs]
        if not photos:
            raise MetroUsageError(f"{inputs}: no photos found")
        self.plan = plan_stems(photos)

    def prepare(self) -> None:
        """Load the model when some photo still needs depth (WeightsError up front)."""
        if any(self.options.force or not self.output_for(stem).is_file() for _, stem in self.plan):
            self.provider.prepare()

    def output_for(self, stem: str) -> Path:
        return self.out_dir / f"{stem}{self.options.suffix}"

    def run(self, item: tuple[Path, str]) -> SeparateResult:
        """Reconstruct one photo (skipped when its output exists, unless ``force``)."""
        from metrocli.pipeline.single import reconstruct_photo

        photo, stem = item
        out = self.output_for(stem)
        o = self.options
        if out.is_file() and not o.force:
            return SeparateResult(photo, out, True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        result = reconstruct_photo(
            photo,
            out,
            self.provider,
            points_only=o.points_only,
            mesh_method=o.mesh_method,
            simplify=o.simplify,
        )
        details = result.to_dict()
        details.pop("photo", None)
        details.pop("output", None)
        return SeparateResult(photo, out, False, details)
