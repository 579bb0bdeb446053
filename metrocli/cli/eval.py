"""`metro eval` (not built yet)."""

from __future__ import annotations

import click

from metrocli.errors import MetroError


@click.command("eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def eval_cmd() -> None:
    """Not built yet."""
    raise MetroError("'metro eval' is not built yet in this version")
