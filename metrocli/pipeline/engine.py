"""A pipelined batch: items are loaded ahead of the model in a worker thread and finished in writer threads.

Usage::

    for outcome in pipelined(items, load, compute, finish):
        print(outcome.item, outcome.result())      # in input order; result() raises the item's error

Stages: ``load(item)`` (decode a photo: one worker thread, at most ``ahead`` items ahead),
``compute(loaded)`` (the model: the calling thread, one item at a time), ``finish(computed)`` (post-process
and write: ``writers`` threads, at most ``ahead`` computed items waiting). So on a CPU the decoding and
writing of neighbouring photos overlap the forward, and memory stays bounded (about ``2 * ahead + writers +
1`` items alive) whatever the batch size.

An exception (not KeyboardInterrupt) of any stage becomes that item's outcome and the batch goes on. When the
consumer stops early (Ctrl-C, an error, ``close()``), nothing new starts, writes under way complete (each
of them atomic: never half a file) and the writer threads are joined; the loader thread writes nothing and
stops at its next item.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Seconds between checks of the stop flag while the loader waits for room in its queue.
_POLL_S = 0.1


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    """The outcome of one item: its ``value``, or the ``error`` one of its stages raised."""

    item: T
    value: R | None = None
    error: Exception | None = None

    def result(self) -> R:
        """The value; raises the item's error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # None only with an error


def _outcome(item: T, future: Future[R]) -> Outcome[T, R]:
    try:
        return Outcome(item, future.result())
    except Exception as exc:
        return Outcome(item, error=exc)


def pipelined(
    items: Iterable[T],
    load: Callable[[T], Any],
    compute: Callable[[Any], Any],
    finish: Callable[[Any], R],
    *,
    ahead: int = 2,
    writers: int = 1,
) -> Generator[Outcome[T, R], None, None]:
    """Run ``finish(compute(load(item)))`` for each item, the stages overlapping (see the module docstring);
    yields one :class:`Outcome` per item, in input order."""
    if ahead < 1 or writers < 1:
        raise ValueError("ahead and writers must be at least 1")
    items = list(items)
    stop = threading.Event()
    loaded: queue.Queue[tuple[T, Any, Exception | None]] = queue.Queue(maxsize=ahead)

    def loader() -> None:
        for item in items:
            if stop.is_set():
                return
            try:
                entry: tuple[T, Any, Exception | None] = (item, load(item), None)
            except Exception as exc:
                entry = (item, None, exc)
            while True:
                if stop.is_set():
                    return
                try:
                    loaded.put(entry, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=loader, name="metro-load", daemon=True)
    pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="metro-write")
    pending: deque[tuple[T, Future[R]]] = deque()
    thread.start()
    try:
        for _ in items:
            item, value, error = loaded.get()
            if error is None:
                try:
                    value = compute(value)
                except Exception as exc:
                    error = exc
            if error is None:
                future = pool.submit(finish, value)
            else:
                future = Future()
                future.set_exception(error)
            del value  # the writer holds it now: memory stays bounded by the queues
            pending.append((item, future))
            while pending and (len(pending) > ahead or pending[0][1].done()):
                yield _outcome(*pending.popleft())
        while pending:
            yield _outcome(*pending.popleft())
    finally:
        stop.set()
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)  # writes under way complete (atomically); none starts
