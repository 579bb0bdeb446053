"""`metro measure` (not built yet)."""

from __future__ import annotations

import click

from metrocli.errors import MetroError


@click.command("measure", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def measure() -> None:
    """Not built yet."""
    raise MetroError("'metro measure' is not built yet in this version")
