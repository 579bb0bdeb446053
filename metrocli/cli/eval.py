"""`metro eval DATASET`: depth (and normal) accuracy of a model against ground truth."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from metrocli.cli.common import (
    batch_size_option,
    build_provider,
    emit_json,
    model_options,
    one_line,
    positive,
    within,
)

if TYPE_CHECKING:
    from metrocli.evaluation.metrics import Crop
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.evaluate import EvalReport

#: Columns of the printed table: (metric key, header, format).
_DEPTH_COLUMNS = (
    ("abs_rel", "AbsRel", "{:.4f}"),
    ("rmse", "RMSE[m]", "{:.3f}"),
    ("log10", "log10", "{:.4f}"),
    ("delta1", "δ1", "{:.3f}"),
    ("delta2", "δ2", "{:.3f}"),
    ("delta3", "δ3", "{:.3f}"),
)
_NORMAL_COLUMNS = (
    ("mean_deg", "mean°", "{:.2f}"),
    ("median_deg", "median°", "{:.2f}"),
    ("within_11_25", "<11.25°", "{:.3f}"),
    ("within_22_5", "<22.5°", "{:.3f}"),
    ("within_30", "<30°", "{:.3f}"),
)


def _cells(values: dict[str, float] | None, columns) -> list[str]:
    out = []
    for key, _, fmt in columns:
        v = None if values is None else values.get(key)
        out.append("-" if v is None or not math.isfinite(v) else fmt.format(v))
    return out


def format_table(report: EvalReport) -> str:
    """The report as a plain-text table: one row per frame and a mean row."""
    columns = list(_DEPTH_COLUMNS)
    has_normals = report.mean_normal is not None
    if has_normals:
        columns += list(_NORMAL_COLUMNS)
    header = ["frame", *(h for _, h, _ in columns)]
    rows = []
    for s in report.samples:
        cells = _cells(s.depth, _DEPTH_COLUMNS)
        if has_normals:
            cells += _cells(s.normal, _NORMAL_COLUMNS)
        rows.append([s.name, *cells])
    mean = _cells(report.mean_depth, _DEPTH_COLUMNS)
    if has_normals:
        mean += _cells(report.mean_normal, _NORMAL_COLUMNS)
    rows.append([f"mean ({len(report.samples)})", *mean])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    title = (
        f"{report.dataset}: model {report.model}, {len(report.samples)} frames, "
        f"depth {report.min_depth_m:g}-{report.max_depth_m:g} m ({report.cap_reason}), crop {report.crop}"
    )
    body = [line(header), *(line(r) for r in rows[:-1]), line(["-" * w for w in widths]), line(rows[-1])]
    return "\n".join([title, *body])


@click.command("eval")
@click.argument("dataset", type=click.Path(path_type=Path))
@model_options
@click.option(
    "--max-depth",
    "max_depth_m",
    type=float,
    default=None,
    callback=within(1e-3, 1e5, "a number of metres"),
    help="Depth cap in metres [default: 10 for indoor, 80 for outdoor datasets, by name or GT range].",
)
@click.option(
    "--min-depth",
    "min_depth_m",
    type=float,
    default=1e-3,
    callback=within(0, 1e5, "a number of metres"),
    show_default=True,
    help="Ignore ground truth at or below this depth (m).",
)
@click.option(
    "--crop",
    type=click.Choice(["eigen", "garg", "none"]),
    default=None,
    help="Evaluation region [default: eigen for NYU, garg for KITTI, none otherwise].",
)
@click.option(
    "--depth-scale",
    type=float,
    default=None,
    callback=positive("number of metres per unit"),
    help="Metres per unit of the ground-truth depth PNGs, overriding the dataset's annotations "
    "(KITTI: 0.00390625, NYU: 0.001).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N frames.")
@batch_size_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the JSON report to this file.",
)
def eval_cmd(
    dataset: Path,
    spec: ModelSpec,
    max_depth_m: float | None,
    min_depth_m: float,
    crop: Crop | None,
    limit: int | None,
    depth_scale: float | None,
    batch_size: int,
    as_json: bool,
    output: Path | None,
) -> None:
    """Evaluate depth accuracy on DATASET, a folder with Metric3D's test_annotations.json.

    \b
    Metrics over ground-truth pixels inside (--min-depth, --max-depth), with the
    prediction clipped to that range, averaged over frames: AbsRel, RMSE (m), log10,
    δ1/δ2/δ3 (ratio < 1.25, 1.25², 1.25³). Where the dataset has ground-truth normals:
    mean/median angle and the fraction within 11.25°/22.5°/30°. Frames are read ahead
    of the model and scored behind it (in a pipeline).
    Exit code 1 if any frame could not be evaluated.
    """
    from metrocli.atomic import write_text_atomic
    from metrocli.cli.common import BatchFailed
    from metrocli.pipeline.evaluate import EvalOptions, evaluate_dataset
    from metrocli.pipeline.provider import FocalMode

    if output is not None:
        from metrocli.atomic import remove_stale_temps
        from metrocli.pipeline.outputs import check_output_file, eval_inputs

        check_output_file(output, inputs=[*eval_inputs(dataset), spec.weights])
        remove_stale_temps(output.parent)
    options = EvalOptions(
        min_depth_m=min_depth_m, max_depth_m=max_depth_m, crop=crop, limit=limit, depth_scale=depth_scale
    )
    report = evaluate_dataset(dataset, options, build_provider(spec, FocalMode()), batch_size=batch_size)
    data = report.to_dict()
    if output is not None:
        write_text_atomic(output, json.dumps(data, indent=2, allow_nan=False) + "\n")
    if as_json:
        emit_json(data)
    else:
        click.echo(format_table(report))
    if report.failed:
        click.echo(
            one_line(
                f"{len(report.samples)} of {len(report.samples) + len(report.failed)} frames evaluated; "
                f"failed: {', '.join(n for n, _ in report.failed)}"
            ),
            err=True,
        )
        raise BatchFailed()
