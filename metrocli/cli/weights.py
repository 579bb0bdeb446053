"""`metro weights`: list, download, locate and verify the official Metric3D checkpoints."""

from __future__ import annotations

from pathlib import Path

import click

from metrocli.cli.common import emit_json, json_option


def _model_choice() -> click.Choice:
    from metrocli.model.presets import PRESETS

    return click.Choice(list(PRESETS))


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


@click.group("weights")
def weights() -> None:
    """List, download, locate and verify model weights.

    Checkpoints live in $METRO_CACHE_DIR, else $XDG_CACHE_HOME/metrocli, else ~/.cache/metrocli.
    """


@weights.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Every model with its checkpoint file, size and whether it is cached."""
    from metrocli.model.weights import cache_dir, list_weights

    rows = list_weights()
    if as_json:
        for row in rows:
            emit_json(
                {
                    "model": row.name,
                    "filename": row.filename,
                    "path": str(row.path),
                    "cached": row.cached,
                    "size_bytes": row.size_bytes,
                    "hf_repo": row.hf_repo,
                }
            )
        return
    click.echo(f"cache: {cache_dir()}")
    width = max(len(r.name) for r in rows)
    for row in rows:
        state = "cached" if row.cached else "not cached"
        click.echo(f"{row.name:<{width}}  {state:<10}  {_size(row.size_bytes):>10}  {row.filename}")


@weights.command("pull")
@click.argument("name", type=_model_choice(), metavar="NAME")
@click.option("--force", is_flag=True, help="Download again even if a cached copy exists.")
def pull_cmd(name: str, force: bool) -> None:
    """Download the official checkpoint of NAME from Hugging Face (resumable, verified)."""
    from metrocli.model.weights import pull

    click.echo(str(pull(name, progress=True, force=force)))


@weights.command("path")
@click.argument("name", type=_model_choice(), metavar="NAME")
def path_cmd(name: str) -> None:
    """Print the cache path of NAME's checkpoint (whether or not it has been downloaded)."""
    from metrocli.model.weights import cached_path

    click.echo(str(cached_path(name)))


@weights.command("verify")
@click.argument("name", type=_model_choice(), required=False, metavar="[NAME]")
@click.option(
    "--weights",
    "weights_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint file to check instead of the cached one.",
)
@click.option("--model", "model_opt", type=_model_choice(), default=None, help="Model of --weights.")
@json_option
def verify_cmd(name: str | None, weights_file: Path | None, model_opt: str | None, as_json: bool) -> None:
    """Check that a checkpoint is intact, loads strictly into its model and runs.

    Without --weights, checks the cached checkpoint of NAME (default vit-small) against the size and sha256
    recorded at download. Checkpoints are read with torch.load(weights_only=True): files that would run code
    are refused. Weights holding NaN or infinity are refused; float64/float16/bfloat16 weights are cast to
    float32 (as every command does). Last, a tiny forward pass (1x3x28x28 for ViT, 1x3x32x32 for ConvNeXt)
    must give finite outputs.
    """
    from metrocli.model.factory import verify
    from metrocli.model.presets import DEFAULT_MODEL

    if name and model_opt and name != model_opt:
        raise click.UsageError("give the model once: NAME or --model")
    result = verify(name or model_opt or DEFAULT_MODEL, weights_file)
    if as_json:
        emit_json(result)
    else:
        cast = "".join(f", {n} {dtype} tensors cast to float32" for dtype, n in result["cast"].items())
        forward = result["forward"]
        shape = "x".join(map(str, forward["input_shape"]))
        click.echo(
            f"ok: {result['path']} loads strictly into {result['model']} ({result['tensors']} tensors, "
            f"{result['parameters']:,} parameters, sha256 {result['sha256'][:12]}…{cast}); "
            f"a {shape} test forward gives finite outputs ({forward['time_s']:.2f} s)"
        )
