"""`metro measure PHOTO --line U1,V1,U2,V2 ...`: real distances between points of a photo."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from metrocli.cli.common import (
    build_provider,
    emit_json,
    error_line,
    focal_options,
    json_option,
    model_options,
    within,
)
from metrocli.errors import MeasurementError, MetroError

if TYPE_CHECKING:
    from metrocli.io.units import LengthUnit
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.measure import MeasureResult
    from metrocli.pipeline.provider import FocalMode


def _parse_lines(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[float, float, float, float]]:
    lines = []
    for raw in values:
        parts = [p.strip() for p in raw.split(",")]
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) != 4 or not all(math.isfinite(x) for x in nums):
            raise click.BadParameter(
                f"{raw!r} is not four numbers U1,V1,U2,V2 (pixels of the displayed photo)",
                ctx=ctx,
                param=param,
            )
        lines.append((nums[0], nums[1], nums[2], nums[3]))
    return lines


def has_display() -> bool:
    """True when a graphical display is available ($DISPLAY or $WAYLAND_DISPLAY)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@click.command("measure")
@click.argument("photo", type=click.Path(path_type=Path))
@click.option(
    "--line",
    "lines",
    multiple=True,
    callback=_parse_lines,
    metavar="U1,V1,U2,V2",
    help="A line to measure, in pixels of the displayed photo (floats allowed). Repeatable. "
    "Without --line an interactive picker opens (needs a display).",
)
@click.option(
    "--depth",
    "depth_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Sensor depth map instead of the model: .npy in metres or 16-bit .png in millimetres, "
    "of the displayed or the stored photo size.",
)
@click.option(
    "--depth-scale",
    type=float,
    default=None,
    callback=within(1e-9, 1e3, "a number of metres per unit"),
    help="Metres per unit of the --depth map (default 0.001 for PNG, 1 for .npy; KITTI: 0.00390625).",
)
@focal_options()
@model_options
@click.option(
    "--annotate",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="OUT.png",
    help="Also write the photo with the lines and their lengths drawn on it (PNG).",
)
@click.option(
    "--units",
    type=click.Choice(["m", "cm", "mm", "in", "ft"]),
    default=None,
    help="Show lengths in this unit (table, picture; the JSON keeps metres and adds distance/uncertainty "
    "in it) [default: table in m and cm, picture in m, or cm when all lines are under 1 m].",
)
@json_option
def measure(
    photo: Path,
    lines: list[tuple[float, float, float, float]],
    depth_file: Path | None,
    depth_scale: float | None,
    focal: FocalMode,
    spec: ModelSpec,
    annotate: Path | None,
    units: LengthUnit | None,
    as_json: bool,
) -> None:
    """Measure real distances between points of PHOTO.

    Each --line U1,V1,U2,V2 gives the two end points in pixels of the displayed (upright) photo; the
    points are backprojected with the photo's metric depth (the Metric3D model, or a sensor map given
    with --depth) and the focal length (EXIF, or --focal-px / --fov). Prints a table of 3D points,
    distances and uncertainties, or with --json one object:
    {"image", "focal_px", "focal_source", "focal_sigma_px", "depth_source", "error_model", "warnings",
    "measurements": [{"from_px", "to_px", "from_m", "to_m", "distance_m", "uncertainty_m", "sigma_m",
    "contributors"}], "failed": [{"line", "error"}]}. Each uncertainty (one sigma) propagates the focal
    length's (by its source: EXIF, default 65°, self-calibration), the depth source's and half a pixel of
    picking.

    \b
    Example:
      metro measure room.jpg --line 412,388,860,402 --line 860,402,905,530 --annotate room-measured.png
    """
    if not lines and not has_display():
        raise click.UsageError(
            "give at least one --line U1,V1,U2,V2 (no display for the interactive picker: "
            "$DISPLAY and $WAYLAND_DISPLAY are unset)"
        )
    if not lines:
        from metrocli.cli.picker import check_display

        try:
            check_display()  # a display that cannot open a window fails now, not after the model ran
        except MetroError as exc:
            raise click.UsageError(str(exc)) from None
    from metrocli.pipeline.measure import open_session

    if annotate is not None:
        from metrocli.atomic import remove_stale_temps
        from metrocli.pipeline.outputs import ANNOTATION_SUFFIXES, check_output_file

        check_output_file(
            annotate,
            inputs=[photo, depth_file, spec.weights],
            suffixes=ANNOTATION_SUFFIXES,
            option="--annotate",
        )
        remove_stale_temps(annotate.parent)
    provider = build_provider(spec, focal, sensor=depth_file, depth_scale=depth_scale)
    failed: list[tuple[int, MetroError]] = []
    try:
        session = open_session(photo, provider, lines=lines, partial=True)
        if lines:
            measurements, failed = session.measure_each(lines)
            if not measurements:  # nothing to show: the first line's error and its exit code
                raise failed[0][1]
        else:
            from metrocli.cli.picker import pick_and_measure

            measurements = pick_and_measure(session)
            if not measurements:
                raise click.UsageError("no line was measured in the picker")
        _check_finite(measurements)
        annotated = None
        if annotate is not None:
            from metrocli.io.annotate import write_annotated

            annotated = str(write_annotated(annotate, session.photo.image, measurements, units))
        result = session.result(measurements, annotated, failed)
    except MetroError as exc:
        # one clean line and the error's exit code (2 for points outside the photo, 1 otherwise)
        error_line(str(exc))
        raise click.exceptions.Exit(exc.exit_code) from None
    if as_json:
        emit_json(with_units(result.to_dict(), units) if units else result.to_dict())
    else:
        _print_table(result, units)
    for _, line_error in failed:  # every valid line was printed; each invalid one is reported, exit 1
        error_line(str(line_error))
    if failed:
        raise click.exceptions.Exit(1)


def with_units(doc: dict[str, Any], unit: LengthUnit) -> dict[str, Any]:
    """The measure JSON with ``unit`` and each measurement's ``distance`` and ``uncertainty`` in it added
    (``distance_m`` and ``uncertainty_m`` stay)."""
    from metrocli.io.units import to_unit

    out = {**doc, "unit": unit}
    out["measurements"] = [
        {**m, "distance": to_unit(m["distance_m"], unit), "uncertainty": to_unit(m["uncertainty_m"], unit)}
        for m in doc["measurements"]
    ]
    return out


def _check_finite(measurements) -> None:
    """A distance or point that is not a finite number is an error, never a printed ``inf``."""
    for i, m in enumerate(measurements, start=1):
        if not all(math.isfinite(float(x)) for x in (m.distance_m, *m.from_m, *m.to_m)):
            raise MeasurementError(
                f"line {i}: the result is not a finite number (distance {m.distance_m!r} m); "
                "check the focal length and the depth map's scale"
            )


def _print_table(result: MeasureResult, unit: LengthUnit | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from metrocli.io.annotate import format_uncertainty
    from metrocli.io.units import format_length

    console = Console(file=sys.stdout, width=160, highlight=False, soft_wrap=True)
    console.print(
        f"{result.image}: focal {result.focal_px:.1f} ± {result.focal_sigma_px:.1f} px "
        f"({result.focal_source}), "
        f"depth from {result.depth_source} ({result.error_model or 'no error model'})"
    )
    table = Table(show_edge=False, pad_edge=False)
    for name in (
        "#",
        "from (px)",
        "to (px)",
        "from (m)",
        "to (m)",
        *((f"distance ({unit})", f"± 1σ ({unit})") if unit else ("distance (m)", "distance (cm)", "± (1σ)")),
    ):
        table.add_column(name, justify="right", no_wrap=True)
    for i, m in enumerate(result.measurements, start=1):
        table.add_row(
            str(i),
            f"{m.from_px[0]:g}, {m.from_px[1]:g}",
            f"{m.to_px[0]:g}, {m.to_px[1]:g}",
            ", ".join(f"{x:+.3f}" for x in m.from_m),
            ", ".join(f"{x:+.3f}" for x in m.to_m),
            *(
                (
                    format_length(m.distance_m, unit, with_unit=False),
                    format_length(m.uncertainty_m, unit, with_unit=False),
                )
                if unit
                else (f"{m.distance_m:.3f}", f"{m.distance_m * 100:.1f}", format_uncertainty(m.uncertainty_m))
            ),
        )
    console.print(table)
    if result.error_model:
        console.print(f"uncertainty: {result.error_model}")
    if result.annotated:
        console.print(f"annotated picture: {result.annotated}")
