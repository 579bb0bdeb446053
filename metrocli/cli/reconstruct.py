"""`metro reconstruct` (not built yet)."""

from __future__ import annotations

import click

from metrocli.errors import MetroError


@click.command("reconstruct", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def reconstruct() -> None:
    """Not built yet."""
    raise MetroError("'metro reconstruct' is not built yet in this version")
