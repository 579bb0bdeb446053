"""`metro depth IMAGE... -o OUTDIR`: metric depth, normals and confidence maps of photos."""

from __future__ import annotations

from pathlib import Path

import click

from metrocli.cli.common import (
    check_focal_exclusive,
    emit_json,
    focal_auto_option,
    focal_options,
    json_option,
    model_options,
    run_batch,
)

#: File extensions picked up when a folder is given instead of a photo.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".heic", ".heif", ".tif", ".tiff", ".webp", ".bmp"})


def expand_inputs(inputs: tuple[Path, ...]) -> list[Path]:
    """Photos as given; folders replaced by their image files (sorted, not recursive, no hidden files)."""
    photos: list[Path] = []
    for item in inputs:
        if item.is_dir():
            photos.extend(
                sorted(
                    p
                    for p in item.iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
                )
            )
        else:
            photos.append(item)
    return photos


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
@focal_options
@focal_auto_option
@click.option(
    "--force", is_flag=True, help="Recompute photos whose outputs already exist (default: skip them)."
)
@json_option
def depth(
    images: tuple[Path, ...],
    out_dir: Path,
    model_name: str,
    weights: Path | None,
    focal_px: float | None,
    fov_deg: float | None,
    focal_mode: str,
    device: str,
    precision: str,
    force: bool,
    as_json: bool,
) -> None:
    """Metric depth, normals and confidence of each IMAGE (photos or folders of photos).

    \b
    Writes into OUTDIR, for a photo named STEM.jpg:
      STEM.depth.npy       float32 metres (H x W of the upright photo)
      STEM.normal.npy      float32 H x W x 3 camera-frame normals (ViT models only)
      STEM.confidence.npy  float32 depth confidence
      STEM.depth.png       16-bit millimetres (0 = invalid, clipped at 65.535 m)
      STEM.preview.png     colourised depth beside colourised normals
      STEM.json            intrinsics (with their source), model, timings
    Re-running skips photos whose outputs are complete (same photo, model, weights and
    focal override); --force recomputes them.
    """
    from metrocli.pipeline.depth import DepthOptions, DepthRunner, plan_stems

    check_focal_exclusive(focal_px, fov_deg, focal_mode)
    if focal_mode == "auto":
        from metrocli.model.presets import get_preset

        if get_preset(model_name).family != "vit":
            raise click.UsageError("--focal auto needs a ViT model: it uses the predicted normals")
    options = DepthOptions(
        model=model_name,
        weights=weights,
        device=device,  # type: ignore[arg-type]
        precision=precision,  # type: ignore[arg-type]
        focal_px=focal_px,
        fov_deg=fov_deg,
        focal_auto=focal_mode == "auto",
        force=force,
    )
    runner = DepthRunner(options, out_dir)
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
