"""A pipelined batch: items are loaded ahead of the model in a worker thread and finished in writer threads.

Usage::

    for outcome in pipelined(items, load, compute, finish):
        print(outcome.item, outcome.result())      # in input order; result() raises the item's error

Stages: ``load(item)`` (decode a photo: one worker thread, or ``loaders`` threads, at most ``ahead`` items
ahead of the model and ``loaders`` more being decoded),
``compute(loaded)`` (the model: the calling thread, one item at a time), ``finish(computed)`` (post-process
and write: ``writers`` threads, at most ``ahead`` computed items waiting). So on a CPU the decoding and
writing of neighbouring photos overlap the forward, and memory stays bounded (about ``2 * ahead + loaders +
writers`` items alive; ``batch_size`` more with batches) whatever the number of items. The process's large
buffers are kept out of the C heap (:func:`metrocli.heap.bound_heap`), so that the heaps of the three kinds
of threads do not fragment and grow over a long batch.

Batches on the model's device: with ``batch_size`` > 1 and ``compute_batch``, up to ``batch_size``
consecutive loaded items of one ``batch_key`` (e.g. the network input size; ``None``: never batched) go to
``compute_batch(values) -> results`` (one forward for all; an item that failed to load between them does
not split the batch); when it raises, its items are computed one at a time, so each failing item gets its
own error. The outcomes stay in input order.

An exception (not KeyboardInterrupt) of any stage becomes that item's outcome and the batch goes on. When the
consumer stops early (Ctrl-C, an error, ``close()``), nothing new starts, writes under way complete (each
of them atomic: never half a file) and the writer threads are joined; the loader thread writes nothing and
stops at its next item.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("metrocli.pipeline.engine")

#: Seconds between checks of the stop flag while the loader waits for room in its queue.
_POLL_S = 0.1
_END: Any = object()


def io_threads(device: str | None, cpus: int | None = None) -> int:
    """Loader threads, and as many writer threads, for a batch whose model runs on ``device`` (``cpu``,
    ``cuda:0``, ...; None: not loaded): 1 where the model computes on the CPU (its forward uses every core)
    or the device is unknown; on an accelerator a quarter of the ``cpus`` (default: this machine's), 1 to 4.

    On an H200 with 16 cores, one loader and one writer kept the GPU 3 % busy (`metro depth`, 12 MP photos:
    decoding 0.33 s a photo, writing about 1 s; benchmarks/README.md)."""
    if device is None or device.split(":")[0] == "cpu":
        return 1
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(4, cpus // 4))


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


def _compute_group(
    group: list[tuple[T, Any, Exception | None]],
    compute: Callable[[Any], Any],
    compute_batch: Callable[[list[Any]], list[Any]] | None,
) -> list[tuple[T, Any, Exception | None]]:
    """The ``(item, computed value, error)`` of each loaded entry of ``group`` (entries with a load error
    pass through): one ``compute_batch`` call for a group of several, else (or when it fails) ``compute``
    one at a time."""
    loaded = [i for i, (_, _, error) in enumerate(group) if error is None]
    if compute_batch is not None and len(loaded) > 1:
        try:
            values = compute_batch([group[i][1] for i in loaded])
            if len(values) != len(loaded):
                raise ValueError(f"compute_batch gave {len(values)} results for {len(loaded)} items")
            batched = list(group)
            for i, value in zip(loaded, values, strict=True):
                batched[i] = (group[i][0], value, None)
            return batched
        except Exception as exc:  # one bad item must not fail its neighbours: each on its own
            log.info("a batch of %d failed (%s); computing its items one at a time", len(loaded), exc)
    done: list[tuple[T, Any, Exception | None]] = []
    for item, value, error in group:
        if error is None:
            try:
                value = compute(value)
            except Exception as exc:
                value, error = None, exc
        done.append((item, value, error))
    return done


def pipelined(
    items: Iterable[T],
    load: Callable[[T], Any],
    compute: Callable[[Any], Any],
    finish: Callable[[Any], R],
    *,
    ahead: int = 2,
    loaders: int | None = None,
    writers: int | None = None,
    device: str | None = None,
    batch_size: int = 1,
    compute_batch: Callable[[list[Any]], list[Any]] | None = None,
    batch_key: Callable[[Any], Hashable | None] | None = None,
) -> Generator[Outcome[T, R], None, None]:
    """Run ``finish(compute(load(item)))`` for each item, the stages overlapping and up to ``batch_size``
    items computed together by ``compute_batch`` (see the module docstring); yields one :class:`Outcome`
    per item, in input order. ``loaders`` / ``writers`` left None: :func:`io_threads` of ``device``, where
    ``compute`` runs (None: unknown, one each)."""
    loaders = io_threads(device) if loaders is None else loaders
    writers = io_threads(device) if writers is None else writers
    if ahead < 1 or loaders < 1 or writers < 1 or batch_size < 1:
        raise ValueError("ahead, loaders, writers and batch_size must be at least 1")
    from metrocli.heap import bound_heap

    bound_heap()
    items = list(items)
    batching = batch_size > 1 and compute_batch is not None
    key_of = batch_key or (lambda value: 0)
    stop = threading.Event()
    loaded: queue.Queue[tuple[T, Any, Exception | None]] = queue.Queue(
        maxsize=max(ahead, batch_size if batching else 1)
    )

    def load_entry(item: T) -> tuple[T, Any, Exception | None]:
        try:
            return item, load(item), None
        except Exception as exc:
            return item, None, exc

    def loaded_in_order() -> Generator[tuple[T, Any, Exception | None], None, None]:
        """The loaded entries in input order: loaded here, or by ``loaders`` threads at most ``loaders``
        items ahead of the queue."""
        if loaders == 1:
            for item in items:
                if stop.is_set():
                    return
                yield load_entry(item)
            return
        with ThreadPoolExecutor(max_workers=loaders, thread_name_prefix="metro-decode") as decode:
            started: deque[Future[tuple[T, Any, Exception | None]]] = deque()
            rest = iter(items)
            try:
                while True:
                    while len(started) < loaders and not stop.is_set():
                        item = next(rest, _END)
                        if item is _END:
                            break
                        started.append(decode.submit(load_entry, item))
                    if not started or stop.is_set():
                        return
                    yield started.popleft().result()
            finally:
                for future in started:
                    future.cancel()

    def loader() -> None:
        for entry in loaded_in_order():
            while True:
                if stop.is_set():
                    return
                try:
                    loaded.put(entry, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            del entry

    def next_group(
        remaining: int, carry: tuple[T, Any, Exception | None] | None
    ) -> tuple[list[tuple[T, Any, Exception | None]], tuple[T, Any, Exception | None] | None, int]:
        """The next group of loaded entries to compute, the entry read past it, the items left to read."""
        first = carry
        if first is None:
            first, remaining = loaded.get(), remaining - 1
        group = [first]
        key = key_of(first[1]) if batching and first[2] is None else None
        size = 1
        while key is not None and size < batch_size and remaining:
            entry, remaining = loaded.get(), remaining - 1
            if entry[2] is None:  # an item that failed to load passes through, in its place
                if key_of(entry[1]) != key:
                    return group, entry, remaining
                size += 1
            group.append(entry)
        return group, None, remaining

    # computed items waiting for a writer: ``ahead``, and a whole batch more (the next forward need not
    # wait for the writes of the last one)
    waiting = ahead + (batch_size if batching else 0)
    thread = threading.Thread(target=loader, name="metro-load", daemon=True)
    pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="metro-write")
    pending: deque[tuple[T, Future[R]]] = deque()
    thread.start()
    try:
        remaining, carry = len(items), None
        while remaining or carry is not None:
            group, carry, remaining = next_group(remaining, carry)
            computed = _compute_group(group, compute, compute_batch if batching else None)
            del group
            for item, value, error in computed:
                if error is None:
                    future = pool.submit(finish, value)
                else:
                    future = Future()
                    future.set_exception(error)
                pending.append((item, future))
            del computed, value  # the writers hold them now: memory stays bounded by the queues
            while pending and (len(pending) > waiting or pending[0][1].done()):
                yield _outcome(*pending.popleft())
        while pending:
            yield _outcome(*pending.popleft())
    finally:
        stop.set()
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)  # writes under way complete (atomically); none starts
