"""`metro info` (not built yet)."""

from __future__ import annotations

import click

from metrocli.errors import MetroError


@click.command("info", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def info() -> None:
    """Not built yet."""
    raise MetroError("'metro info' is not built yet in this version")
