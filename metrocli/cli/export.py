"""`metro export onnx --model NAME -o model.onnx`: the model as an ONNX graph, checked against torch."""

from __future__ import annotations

from pathlib import Path

import click

from metrocli.cli.common import emit_json, json_option


def _model_choice() -> click.Choice:
    from metrocli.model.presets import PRESETS  # pure data, no torch

    return click.Choice(list(PRESETS))


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not H,W (e.g. 616,1064)", ctx=ctx, param=param) from None
    if height < 1 or width < 1:
        raise click.BadParameter("height and width must be positive", ctx=ctx, param=param)
    return height, width


@click.group("export")
def export() -> None:
    """Export a model for other runtimes (ONNX: onnxruntime, TensorRT, mobile, the browser)."""


@export.command("onnx")
@click.option(
    "--model",
    "model_name",
    type=_model_choice(),
    default="vit-small",
    show_default=True,
    help="Metric3D model to export.",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Official-format checkpoint file instead of the cached download.",
)
@click.option(
    "--size",
    callback=_parse_size,
    default=None,
    metavar="H,W",
    help="Network input size (multiples of 28 for ViT, 32 for ConvNeXt) [default: the model's own, "
    "616,1064 or 544,1216]. With --dynamic: the size traced and checked.",
)
@click.option(
    "--dynamic",
    is_flag=True,
    help="Height and width as graph dimensions (any multiple of 32; ConvNeXt models only).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The .onnx file to write (graphs over 2 GiB also write OUTPUT.data beside it).",
)
@json_option
def onnx_cmd(
    model_name: str,
    weights: Path | None,
    size: tuple[int, int] | None,
    dynamic: bool,
    output: Path,
    as_json: bool,
) -> None:
    """Export a model to ONNX (opset 18, float32, named inputs and outputs).

    Input `image`: float32 (1, 3, H, W) RGB 0-255, the photo keep-ratio resized and padded with the mean
    colour; the normalisation is inside the graph. Outputs: `depth` (canonical metres at focal 1000 px),
    `confidence`, and for ViT models `normal` and `normal_confidence`. The file's metadata names the model,
    input size, canonical focal length and weights sha256. The file is written only after onnxruntime has
    reproduced torch float32 on a test image (depth within 1e-4 relative, normals within 0.1 degree).
    """
    from metrocli.model.onnx_export import export_preset
    from metrocli.pipeline.outputs import check_output_file

    check_output_file(output, inputs=[weights], suffixes=(".onnx",))  # before minutes of export
    result = export_preset(model_name, output, weights=weights, size=size, dynamic=dynamic)
    fid = result.fidelity
    if as_json:
        emit_json(
            {
                "path": result.path,
                "model": result.preset,
                "input_size": result.input_size,
                "dynamic": result.input_size is None,
                "check_sizes": result.check_sizes,
                "depth_max_rel": fid.depth_max_rel,
                "confidence_max_rel": fid.confidence_max_rel,
                "normal_max_deg": fid.normal_max_deg,
                "normal_confidence_max_rel": fid.normal_confidence_max_rel,
                "weights_sha256": result.metadata.get("weights_sha256"),
                "data_files": result.data_files,
                "seconds": round(result.export_s, 2),
            }
        )
        return
    size_text = "dynamic" if result.input_size is None else f"{result.input_size[0]}x{result.input_size[1]}"
    normals = "" if fid.normal_max_deg is None else f", normals {fid.normal_max_deg:.2g} deg"
    click.echo(
        f"{result.path}: {result.preset} {size_text}, onnxruntime vs torch fp32: "
        f"depth {fid.depth_max_rel:.2g} relative{normals} ({result.export_s:.0f} s)"
    )
