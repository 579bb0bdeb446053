"""Root ``metro`` group. Subcommands load lazily: ``metro --help`` imports neither torch, timm nor open3d."""

from __future__ import annotations

import importlib
import sys

import click

from metrocli import __version__

#: subcommand name -> "module:attribute" of its click.Command, imported only when used.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("metrocli.cli.info:info", "Show size, orientation and intrinsics of photos."),
    "depth": ("metrocli.cli.depth:depth", "Metric depth, normals and confidence maps of photos."),
    "measure": ("metrocli.cli.measure:measure", "Measure real distances between points of a photo."),
    "reconstruct": ("metrocli.cli.reconstruct:reconstruct", "Metric 3D mesh of one photo or a folder."),
    "weights": ("metrocli.cli.weights:weights", "List, download, locate and verify model weights."),
    "eval": ("metrocli.cli.eval:eval_cmd", "Evaluate depth accuracy against ground truth."),
    "finetune": ("metrocli.cli.finetune:finetune", "Fine-tune Metric3D on your own RGB-D data."),
    "export": ("metrocli.cli.export:export", "Export a model to ONNX (onnxruntime, TensorRT, ...)."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; ``--help`` lists them from static summaries."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attr = SUBCOMMANDS[cmd_name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metro")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug and tracebacks).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """metro — measure the world from a single photo with Metric3D.

    Results go to stdout (JSON Lines with --json); progress and logs go to stderr.
    Exit codes: 0 ok, 1 failure, 2 usage error.
    """
    from metrocli.cli.common import setup_logging

    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    setup_logging(verbose)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, turning every error into a clean message and exit code."""
    from metrocli.cli.common import run_cli

    sys.exit(run_cli(cli, argv))


if __name__ == "__main__":  # pragma: no cover
    main()
