"""`metro depth IMAGE... -o OUTDIR`: metric depth, normals and confidence maps of photos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from metrocli.cli.common import (
    build_provider,
    emit_json,
    focal_options,
    json_option,
    model_options,
    run_batch,
)


def parse_depth_range(text: str) -> tuple[float, float]:
    """``"0.5,10"`` -> ``(0.5, 10.0)`` metres; a usage error unless 0 < NEAR < FAR."""
    from metrocli.errors import MetroUsageError
    from metrocli.io.maps import check_depth_range

    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        return check_depth_range((float(parts[0]), float(parts[1])))
    except (ValueError, MetroUsageError) as exc:
        raise click.BadParameter(f"expected NEAR,FAR metres with 0 < NEAR < FAR, got {text!r}") from exc


if TYPE_CHECKING:
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.provider import FocalMode


@click.command("depth")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (created if needed).",
)
@model_options
@focal_options()
@click.option(
    "--force", is_flag=True, help="Recompute photos whose outputs already exist (default: skip them)."
)
@click.option(
    "--depth-range",
    "depth_range",
    default=None,
    metavar="NEAR,FAR",
    help="Fixed depth range of the previews' colours in metres (e.g. 0.5,10), so a batch compares "
    "[default: each photo's own range].",
)
@json_option
def depth(
    images: tuple[Path, ...],
    out_dir: Path,
    spec: ModelSpec,
    focal: FocalMode,
    force: bool,
    depth_range: str | None,
    as_json: bool,
) -> None:
    """Metric depth, normals and confidence of each IMAGE (photos or folders of photos).

    \b
    Writes into OUTDIR, for a photo named STEM.jpg:
      STEM.depth.npy       float32 metres (H x W of the upright photo)
      STEM.normal.npy      float32 H x W x 3 camera-frame normals (ViT models only)
      STEM.confidence.npy  float32 depth confidence
      STEM.depth.png       16-bit millimetres (0 = invalid, clipped at 65.535 m)
      STEM.preview.png     colourised depth (near red) beside normals ((n+1)/2: x right, y up,
                           z towards you), above a colour bar in metres
      STEM.json            intrinsics (with their source), model, timings
    In a folder, hidden files and these outputs (*.depth.*, *.normal.*, *.confidence.*,
    *.preview.*) are not photos. Re-running skips photos whose outputs are complete (same
    photo, model, weights, precision and focal mode); --force recomputes them.
    """
    from metrocli.pipeline.depth import DepthRunner
    from metrocli.pipeline.inputs import expand_inputs, plan_stems

    span = parse_depth_range(depth_range) if depth_range is not None else None
    runner = DepthRunner(build_provider(spec, focal), out_dir, force=force, depth_range_m=span)
    plan = plan_stems(expand_inputs(images))
    if not plan:
        raise click.UsageError("no photos found in the given folders")
    if any(runner.existing(photo, stem) is None for photo, stem in plan):
        runner.prepare()  # missing or unsafe weights: one clear line, before any photo

    def work(item: tuple[Path, str]) -> None:
        result = runner.run(*item)
        if as_json:
            emit_json(result.to_dict())
        else:
            note = " (skipped: outputs exist)" if result.skipped else ""
            files = ", ".join(str(p) for p in result.files.values())
            click.echo(f"{result.photo}: {files}{note}")

    report = run_batch(plan, work, name=lambda item: str(item[0]), what="photo", description="depth")
    report.finish()
