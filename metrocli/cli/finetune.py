"""`metro finetune DATA... -o my-model.pth`: fine-tune Metric3D on your own RGB-D frames."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from metrocli.cli.common import emit_json, model_options
from metrocli.model.spec import ModelSpec


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected H,W (e.g. 616,1064), got {value!r}") from None
    if h <= 0 or w <= 0 or h % 28 or w % 28:
        raise click.BadParameter(f"H and W must be positive multiples of 28, got {h}x{w}")
    return h, w


@click.command("finetune")
@click.argument("data", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Fine-tuned checkpoint to write (official format, loads with --weights).",
)
@model_options
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True, help="Optimiser steps.")
@click.option("--size", "size_hw", callback=_size, default=None, help="Input crop H,W [default: 616,1064].")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--accumulate", type=click.IntRange(min=1), default=1, show_default=True, help="Micro-batches per step."
)
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True, help="Decoder lr."
)
@click.option(
    "--encoder-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-5,
    show_default=True,
    help="Encoder lr.",
)
@click.option(
    "--layer-decay", type=click.FloatRange(min=0, max=1, min_open=True), default=0.9, show_default=True
)
@click.option("--warmup", "warmup_steps", type=click.IntRange(min=0), default=None, help="Warm-up steps.")
@click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True)
@click.option(
    "--ema",
    "ema_decay",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=None,
    help="Keep and output an exponential moving average of the weights with this decay (e.g. 0.999).",
)
@click.option("--freeze-encoder", is_flag=True, help="Train the decoder only.")
@click.option(
    "--cstm", "cstm_mode", type=click.Choice(["label", "image"]), default="label", show_default=True
)
@click.option(
    "--canonical-focal",
    "canonical_focal_px",
    type=click.FloatRange(min=0, min_open=True),
    default=1000.0,
    show_default=True,
    help="Canonical camera focal (px) at the training resolution; scale it for downscaled images.",
)
@click.option("--no-augment", is_flag=True, help="No random resize, flip or colour jitter.")
@click.option("--val", "val_data", multiple=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--val-fraction",
    type=click.FloatRange(min=0, max=0.9),
    default=0.1,
    show_default=True,
    help="Share of scenes held out for validation when --val is not given.",
)
@click.option(
    "--val-every", type=click.IntRange(min=0), default=0, help="Validate every N steps (0: at the end)."
)
@click.option("--save-every", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUTPUT's saved training state.")
@click.option("--depth-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option(
    "--depth-scale", type=click.FloatRange(min=0, min_open=True), default=None, help="Metres per unit."
)
@click.option(
    "--focal-px", type=click.FloatRange(min=0, min_open=True), default=None, help="Focal (px), not EXIF."
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data loader processes."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def finetune(
    data: tuple[Path, ...],
    output: Path,
    spec: ModelSpec,
    steps: int,
    size_hw: tuple[int, int] | None,
    batch_size: int,
    accumulate: int,
    lr: float,
    encoder_lr: float,
    layer_decay: float,
    warmup_steps: int | None,
    grad_clip: float,
    ema_decay: float | None,
    freeze_encoder: bool,
    cstm_mode: str,
    canonical_focal_px: float,
    no_augment: bool,
    val_data: tuple[Path, ...],
    val_fraction: float,
    val_every: int,
    save_every: int,
    resume: bool,
    depth_dir: Path | None,
    depth_scale: float | None,
    focal_px: float | None,
    workers: int,
    seed: int,
    as_json: bool,
) -> None:
    """Fine-tune a Metric3D v2 model on DATA (one or more datasets, each an equal share of every batch).

    \b
    DATA is a folder of photos (or of scene sub-folders of photos), each with a depth map
    <stem>.depth.png (16-bit mm, or --depth-scale) or <stem>.depth.npy (m), optionally <stem>.normal.npy;
    or a folder with Metric3D's test_annotations.json. Intrinsics come from EXIF or --focal-px.
    Launch with torchrun --nproc-per-node K -m metrocli.cli.main finetune ... for DDP.
    """
    from metrocli.errors import MetroUsageError
    from metrocli.pipeline.outputs import check_output_file
    from metrocli.train import data as tdata
    from metrocli.train.cstm import AugmentConfig
    from metrocli.train.loop import FinetuneConfig
    from metrocli.train.loop import finetune as run_finetune

    check_output_file(output, inputs=[spec.weights])  # never the starting weights; a writable folder
    logging.getLogger("metrocli.train").setLevel(logging.INFO)
    train_sets, val_refs = [], []
    for folder in data:
        refs = tdata.find_frames(folder, depth_dir=depth_dir, depth_scale=depth_scale, focal_px=focal_px)
        if not val_data:
            refs, held = tdata.split_by_scene(refs, val_fraction, seed)
            val_refs += held
        train_sets.append(refs)
    for folder in val_data:
        val_refs += tdata.find_frames(folder, depth_dir=depth_dir, depth_scale=depth_scale, focal_px=focal_px)
    precision = spec.precision
    if precision == "auto":  # training: bf16 autocast on a GPU, float32 on the CPU
        import torch

        precision = "bf16" if torch.cuda.is_available() and spec.device != "cpu" else "fp32"
    if spec.threads is not None:
        from metrocli.model.runtime import set_threads

        set_threads(spec.threads)
    if output.is_dir():
        raise MetroUsageError(f"output {output} is a folder")
    cfg = FinetuneConfig(
        model=spec.name,
        weights=str(spec.weights) if spec.weights is not None else None,
        steps=steps,
        size_hw=size_hw,
        batch_size=batch_size,
        lr=lr,
        encoder_lr=encoder_lr,
        layer_decay=layer_decay,
        warmup_steps=warmup_steps,
        grad_clip=grad_clip,
        accumulate=accumulate,
        ema_decay=ema_decay,
        freeze_encoder=freeze_encoder,
        precision=precision,
        cstm_mode=cstm_mode,  # type: ignore[arg-type]
        canonical_focal_px=canonical_focal_px,
        augment=None if no_augment else AugmentConfig(),
        val_every=val_every,
        save_every=save_every,
        resume=resume,
        seed=seed,
        device=spec.device,
        workers=workers,
    )
    result = run_finetune(train_sets, output, cfg, val_refs=val_refs)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: only the first process reports
        return
    summary = {
        "output": str(result.output),
        "steps": result.steps,
        "train_frames": sum(len(s) for s in train_sets),
        "val_frames": len(val_refs),
        "validation": [{"step": s, **m} for s, m in result.validation],
        "last_losses": result.last_losses,
    }
    if as_json:
        emit_json(summary)
        return
    click.echo(f"wrote {result.output} after {result.steps} steps")
    if result.validation:
        (s0, first), (s1, last) = result.validation[0], result.validation[-1]
        for key in last:
            click.echo(
                f"  {key}: {first.get(key, float('nan')):.4f} (step {s0}) -> {last[key]:.4f} (step {s1})"
            )
