"""`metro depth` (not built yet)."""

from __future__ import annotations

import click

from metrocli.errors import MetroError


@click.command("depth", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def depth() -> None:
    """Not built yet."""
    raise MetroError("'metro depth' is not built yet in this version")
