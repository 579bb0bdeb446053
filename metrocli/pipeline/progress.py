"""A progress bar on stderr over the items of a batch (rich; none for a single item)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")


def with_progress(
    items: Sequence[T],
    *,
    description: str,
    name: Callable[[T], str] = str,
    enabled: bool = True,
    console: Console | None = None,
) -> Iterator[T]:
    """Yield ``items`` while a transient bar ``"<description> <name(item)>"`` counts them on ``console``
    (default: a new stderr console); plain iteration when not ``enabled`` or for at most one item."""
    if not enabled or len(items) <= 1:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console or Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=len(items))
        for item in items:
            bar.update(task, description=f"{description} {name(item)}")
            yield item
            bar.advance(task)
