"""`metro info FILE...`: displayed size, orientation, camera and intrinsics of photos (no model, fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from metrocli.cli.common import check_focal_exclusive, emit_json, focal_options, json_option, run_batch


def _camera_name(make: str | None, model: str | None) -> str:
    """``"Apple iPhone 12"``, but ``"Canon EOS 40D"`` rather than ``"Canon Canon EOS 40D"``."""
    make, model = (make or "").strip(), (model or "").strip()
    if make and model and model.split()[0].lower() == make.split()[0].lower():
        return model
    return " ".join(part for part in (make, model) if part) or "-"


def _table(infos: list) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for header, justify in (
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
    ):
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
@focal_options
@click.option(
    "--check-focal",
    is_flag=True,
    help="Cross-check the focal length against self-calibration from the model's depth and normals "
    "(one forward per photo); disagreement beyond 10% is flagged.",
)
@click.option(
    "--model", "model_name", default="vit-small", show_default=True, help="Model for --check-focal."
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint for --check-focal (default: the cached official one).",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True
)
@json_option
def info(
    files: tuple[Path, ...],
    focal_px: float | None,
    fov_deg: float | None,
    check_focal: bool,
    model_name: str,
    weights: Path | None,
    device: str,
    as_json: bool,
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
    check_focal_exclusive(focal_px, fov_deg)
    from metrocli.camera.photo import describe_photo

    rows: list = []
    checks: list[tuple[Path, str]] = []
    focal_checker = _FocalChecker(model_name, weights, device) if check_focal else None

    def work(path: Path) -> None:
        item = describe_photo(path, focal_px=focal_px, fov_deg=fov_deg)
        record = item.to_dict()
        if focal_checker is not None:
            check = focal_checker.check(path, focal_px, fov_deg)
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


class _FocalChecker:
    """Loads the model once (on first use) for ``--check-focal`` and checks one photo at a time."""

    def __init__(self, model_name: str, weights: Path | None, device: str) -> None:
        from metrocli.model.presets import get_preset

        if get_preset(model_name).family != "vit":
            raise click.UsageError("--check-focal needs a ViT model: it uses the predicted normals")
        self.model_name, self.weights, self.device = model_name, weights, device
        self._model = None

    def check(self, path: Path, focal_px: float | None, fov_deg: float | None):
        from metrocli.camera.photo import load_photo
        from metrocli.pipeline.selfcal import check_photo_focal

        if self._model is None:
            from metrocli.model.factory import load_model

            self._model = load_model(self.model_name, weights=self.weights, device=self.device)
        photo = load_photo(path, focal_px=focal_px, fov_deg=fov_deg)
        return check_photo_focal(photo, model=self._model)
