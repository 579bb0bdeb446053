"""`metro info FILE...`: displayed size, orientation, camera and intrinsics of photos (no model, fast)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from metrocli.cli.common import (
    build_provider,
    emit_json,
    focal_options,
    json_option,
    model_options,
    run_batch,
)

if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from metrocli.camera.photo import PhotoInfo
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.provider import FocalMode


def _camera_name(make: str | None, model: str | None) -> str:
    """``"Apple iPhone 12"``, but ``"Canon EOS 40D"`` rather than ``"Canon Canon EOS 40D"``."""
    make, model = (make or "").strip(), (model or "").strip()
    if make and model and model.split()[0].lower() == make.split()[0].lower():
        return model
    return " ".join(part for part in (make, model) if part) or "-"


def _table(infos: list[PhotoInfo]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("file", "left"),
        ("width", "right"),
        ("height", "right"),
        ("orient.", "right"),
        ("make / model", "left"),
        ("focal_px", "right"),
        ("focal_source", "left"),
        ("cx", "right"),
        ("cy", "right"),
        ("35mm eq.", "right"),
        ("fov_deg", "right"),
    )
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")
    for item in infos:
        k = item.intrinsics
        camera = _camera_name(item.make, item.model)
        table.add_row(
            str(item.path),
            str(k.width),
            str(k.height),
            str(item.orientation),
            camera,
            f"{k.fx:.1f}",
            k.focal_source,
            f"{k.cx:.1f}",
            f"{k.cy:.1f}",
            f"{k.focal_35mm:.1f} mm",
            f"{k.fov_x_deg:.1f}",
        )
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200, highlight=False)
    console.print(table)


@click.command("info")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@focal_options(auto=False)
@click.option(
    "--check-focal",
    is_flag=True,
    help="Cross-check the focal length against self-calibration from the model's depth and normals "
    "(one forward per photo, with the model options below); disagreement beyond 10% is flagged.",
)
@model_options
@json_option
def info(
    files: tuple[Path, ...], focal: FocalMode, check_focal: bool, spec: ModelSpec, as_json: bool
) -> None:
    """Show size, orientation, camera and intrinsics of photos.

    For each FILE (JPEG, PNG, TIFF, WebP, HEIC/HEIF): the displayed (upright) width and height, the EXIF
    orientation, make and model, and the pinhole intrinsics in pixels of the displayed photo: focal_px, where
    it came from (focal_source: user, exif-focal-plane, exif-35mm, sensor-table or default), the principal
    point cx, cy and the 35 mm equivalent focal length. Warnings go to stderr; an unreadable file gets one
    error line and the exit code is 1, but the other files are still shown.

    \b
    Example:
      metro info photo.jpg IMG_0042.HEIC
      metro info --json --fov 70 photo.jpg
      metro info --check-focal IMG_0042.jpg
    """
    from metrocli.camera.photo import describe_photo

    rows: list[PhotoInfo] = []
    checks: list[tuple[Path, str]] = []
    provider = None
    if check_focal:
        from metrocli.pipeline.provider import FocalMode

        provider = build_provider(spec, FocalMode(auto=True))

    def work(path: Path) -> None:
        item = describe_photo(path, focal_px=focal.focal_px, fov_deg=focal.fov_deg)
        record: dict[str, Any] = item.to_dict()
        if provider is not None:
            from metrocli.pipeline.provider import check_photo_focal

            check = check_photo_focal(focal.load_photo(path), provider)
            record["focal_check"] = check.to_dict()
            checks.append((path, check.message))
        if as_json:
            emit_json(record)
        else:
            rows.append(item)

    report = run_batch(files, work, name=str, what="photo", description="reading")
    if rows:
        _table(rows)
        for path, message in checks:
            click.echo(f"{path}: {message}")
    report.finish()
