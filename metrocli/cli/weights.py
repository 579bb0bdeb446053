"""`metro weights` (not built yet)."""

from __future__ import annotations

import click

from metrocli.errors import MetroError


@click.command("weights", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def weights() -> None:
    """Not built yet."""
    raise MetroError("'metro weights' is not built yet in this version")
