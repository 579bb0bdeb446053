"""`metro depth IMAGE... -o OUTDIR`: metric depth, normals and confidence maps of photos."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import click

from metrocli.cli.common import (
    batch_size_option,
    build_provider,
    emit_json,
    focal_options,
    json_option,
    model_options,
    run_batch,
)
from metrocli.errors import MetroUsageError


def parse_depth_range(text: str) -> tuple[float, float]:
    """``"0.5,10"`` -> ``(0.5, 10.0)`` metres; a usage error unless 0 < NEAR < FAR."""
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
    from metrocli.pipeline.depth import DepthRunner
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
@click.option("-r", "--recursive", is_flag=True, help="Also the photos in subfolders of the given folders.")
@click.option(
    "--outputs",
    default="depth,normal,confidence,preview,png16",
    show_default=True,
    help="What to write, comma-separated: depth, normal, confidence (maps), preview, png16 (16-bit mm "
    "PNG), tiff (32-bit float metres, no clipping).",
)
@click.option(
    "--dtype",
    "map_dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Number type of the depth, normal and confidence maps.",
)
@click.option(
    "--format",
    "map_format",
    type=click.Choice(["npy", "npz"]),
    default="npy",
    show_default=True,
    help="File format of the maps (npz: compressed, one array named like the map).",
)
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
@batch_size_option
@json_option
def depth(
    images: tuple[Path, ...],
    out_dir: Path,
    spec: ModelSpec,
    focal: FocalMode,
    recursive: bool,
    outputs: str,
    map_dtype: str,
    map_format: str,
    force: bool,
    depth_range: str | None,
    batch_size: int,
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
      STEM.depth.tiff      32-bit float metres (only with --outputs ...,tiff)
      STEM.json            intrinsics (with their source), model, timings, files written
    In a folder, hidden files, these outputs (*.depth.*, *.normal.*, *.confidence.*,
    *.preview.*, *-measured.*) and the output folder are not photos. STEM keeps Unicode and
    spaces; photos with one STEM (a/x.jpg, b/x.jpg) get STEM-<hash of the path>. Re-running
    skips photos whose outputs are complete (same photo content, model, weights, precision,
    focal mode and outputs, whatever the path spelling); --force recomputes them. A file in
    OUTDIR that metro did not write (an input, a sensor depth map) is never replaced: exit 2
    before any work. One run at a time per OUTDIR. Photos are decoded ahead of the model and
    written behind it (in a pipeline); with --json a failed photo is the line
    {"photo": ..., "error": ...} in its place.
    """
    from metrocli.atomic import remove_stale_temps
    from metrocli.io.maps import OutputOptions
    from metrocli.pipeline.depth import DepthRunner
    from metrocli.pipeline.inputs import expand_inputs, plan_stems
    from metrocli.pipeline.lock import output_lock
    from metrocli.pipeline.outputs import check_output_folder

    try:
        options = OutputOptions.parse(outputs, map_dtype, map_format)
    except MetroUsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--outputs") from None
    check_output_folder(out_dir)
    remove_stale_temps(out_dir)
    span = parse_depth_range(depth_range) if depth_range is not None else None
    runner = DepthRunner(
        build_provider(spec, focal), out_dir, force=force, options=options, depth_range_m=span
    )
    plan = plan_stems(expand_inputs(images, recursive=recursive, exclude=[out_dir]))
    if not plan:
        raise click.UsageError("no photos found in the given folders")
    runner.check_targets(plan)
    with output_lock(out_dir):  # the folder itself is locked: nothing is added to it
        _run(runner, plan, as_json, batch_size)


def _run(runner: DepthRunner, plan: list[tuple[Path, str]], as_json: bool, batch_size: int = 1) -> None:
    if any(runner.existing(photo, stem) is None for photo, stem in plan):
        runner.prepare()  # missing or unsafe weights: one clear line, before any photo

    outcomes = runner.run_many(plan, batch_size=batch_size)

    def work(item: tuple[Path, str]) -> None:
        outcome = next(outcomes)  # the engine yields in input order: this item's outcome
        assert outcome.item == item
        result = outcome.result()
        if as_json:
            emit_json(result.to_dict())
        else:
            note = " (skipped: outputs exist)" if result.skipped else ""
            files = ", ".join(str(p) for p in result.files.values())
            click.echo(f"{result.photo}: {files}{note}")

    with closing(outcomes):  # Ctrl-C: writes under way complete, nothing new starts
        report = run_batch(
            plan,
            work,
            name=lambda item: str(item[0]),
            what="photo",
            description="depth",
            error_record=(lambda item: {"photo": str(item[0])}) if as_json else None,
        )
    report.finish()
