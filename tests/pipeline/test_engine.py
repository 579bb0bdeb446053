"""The pipelined batch engine: input order, per-item errors, stages overlap, bounded memory, clean end."""

from __future__ import annotations

import threading
import time

import pytest

from metrocli.pipeline.engine import Outcome, io_threads, pipelined


def test_outcomes_come_in_input_order_whatever_the_stage_times() -> None:
    def finish(x: int) -> int:
        time.sleep(0.02 if x % 2 == 0 else 0.0)  # even items finish late: still in order
        return x * 10

    outcomes = list(pipelined(range(7), lambda x: x, lambda x: x + 1, finish, ahead=2, writers=3))
    assert [o.item for o in outcomes] == list(range(7))
    assert [o.result() for o in outcomes] == [(x + 1) * 10 for x in range(7)]


def test_an_error_of_any_stage_is_that_items_outcome_and_the_batch_goes_on() -> None:
    def load(x: int) -> int:
        if x == 1:
            raise ValueError("bad photo")
        return x

    def compute(x: int) -> int:
        if x == 3:
            raise RuntimeError("model failed")
        return x

    def finish(x: int) -> int:
        if x == 5:
            raise OSError("disk full")
        return x

    outcomes = list(pipelined(range(7), load, compute, finish))
    assert [o.item for o in outcomes] == list(range(7))
    errors = {o.item: type(o.error) for o in outcomes if o.error is not None}
    assert errors == {1: ValueError, 3: RuntimeError, 5: OSError}
    assert [o.value for o in outcomes if o.error is None] == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="bad photo"):
        outcomes[1].result()


def test_loading_and_writing_overlap_the_model() -> None:
    """While the model works on item k, item k+1 is loaded and item k-1 written (threads)."""
    seen: list[tuple[str, int, int]] = []  # (stage, item, items being computed)
    computing = threading.Event()
    lock = threading.Lock()

    def load(x: int) -> int:
        time.sleep(0.03)
        with lock:
            seen.append(("load", x, computing.is_set()))
        return x

    def compute(x: int) -> int:
        computing.set()
        time.sleep(0.08)
        computing.clear()
        return x

    def finish(x: int) -> int:
        time.sleep(0.03)
        with lock:
            seen.append(("finish", x, computing.is_set()))
        return x

    start = time.perf_counter()
    assert [o.result() for o in pipelined(range(6), load, compute, finish)] == list(range(6))
    wall = time.perf_counter() - start
    assert wall < 6 * (0.03 + 0.08 + 0.03) * 0.8  # not one stage after another
    assert any(stage == "load" and busy for stage, _, busy in seen)
    assert any(stage == "finish" and busy for stage, _, busy in seen)


def test_memory_is_bounded_by_the_queues() -> None:
    """The loader never runs more than a few items ahead of the consumer (a 300-photo batch stays flat)."""
    loaded: list[int] = []
    ahead = 2
    worst = 0

    def load(x: int) -> int:
        loaded.append(x)
        return x

    outcomes = pipelined(range(50), load, lambda x: x, lambda x: x, ahead=ahead, writers=1)
    for consumed, outcome in enumerate(outcomes, start=1):
        time.sleep(0.002)
        worst = max(worst, len(loaded) - consumed)
        assert outcome.error is None
    # queue + one in hand + the writer's pending items + one being loaded
    assert worst <= 2 * ahead + 3


def test_stopping_early_finishes_the_writes_under_way_and_starts_none() -> None:
    started: list[int] = []
    finished: list[int] = []

    def finish(x: int) -> int:
        started.append(x)
        time.sleep(0.05)
        finished.append(x)
        return x

    outcomes = pipelined(range(100), lambda x: x, lambda x: x, finish, ahead=2, writers=1)
    assert next(outcomes).result() == 0
    outcomes.close()  # what Ctrl-C in the consumer does (the generator's finally)
    assert started == finished  # every write that began completed: no half-written output
    assert len(started) < 10
    count = len(started)
    time.sleep(0.15)
    assert len(started) == count  # nothing new after the stop


def test_interrupt_in_the_model_stops_the_batch() -> None:
    finished: list[int] = []

    def compute(x: int) -> int:
        if x == 3:
            raise KeyboardInterrupt
        return x

    def finish(x: int) -> int:
        time.sleep(0.02)
        finished.append(x)
        return x

    got: list[Outcome[int, int]] = []
    with pytest.raises(KeyboardInterrupt):
        for outcome in pipelined(range(10), lambda x: x, compute, finish):
            got.append(outcome)
    assert [o.item for o in got] == finished[: len(got)]
    assert 3 not in finished and set(finished) <= {0, 1, 2}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        next(pipelined([1], lambda x: x, lambda x: x, lambda x: x, ahead=0))
    with pytest.raises(ValueError):
        next(pipelined([1], lambda x: x, lambda x: x, lambda x: x, loaders=0))


def test_several_loaders_decode_in_parallel_keep_order_errors_and_bounds() -> None:
    """``loaders`` threads: items still reach the model in input order (late loads too), a failed load is
    that item's outcome, loads overlap, and the loaders run at most ``loaders`` items past the queue."""
    lock = threading.Lock()
    running = most = 0
    loaded: list[int] = []
    computed: list[int] = []

    def load(x: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            loaded.append(x)
        time.sleep(0.03 if x % 3 == 0 else 0.005)  # every third photo decodes slowly
        with lock:
            running -= 1
        if x == 4:
            raise ValueError("corrupt photo")
        return x

    def compute(x: int) -> int:
        computed.append(x)
        return x * 2

    worst = 0
    outcomes = pipelined(range(24), load, compute, lambda x: x + 1, ahead=2, loaders=3, writers=2)
    got = []
    for consumed, outcome in enumerate(outcomes, start=1):
        time.sleep(0.004)
        with lock:
            worst = max(worst, len(loaded) - consumed)
        got.append(outcome)
    assert [o.item for o in got] == list(range(24))
    assert computed == [x for x in range(24) if x != 4]  # the model sees input order
    assert isinstance(got[4].error, ValueError)
    assert [o.result() for o in got if o.item != 4] == [2 * x + 1 for x in range(24) if x != 4]
    assert most >= 2  # the loads overlapped
    assert worst <= 2 * 2 + 3 + 3  # as with one loader, plus the other loaders' items


def test_stopping_early_stops_several_loaders() -> None:
    loaded: list[int] = []

    def load(x: int) -> int:
        loaded.append(x)
        time.sleep(0.01)
        return x

    outcomes = pipelined(range(200), load, lambda x: x, lambda x: x, ahead=2, loaders=4)
    assert next(outcomes).result() == 0
    outcomes.close()
    time.sleep(0.1)
    count = len(loaded)
    assert count < 20
    time.sleep(0.1)
    assert len(loaded) == count  # no load starts after the stop


def test_io_threads_follow_the_device() -> None:
    assert io_threads(None, 16) == 1  # model not loaded: nothing known
    assert io_threads("cpu", 64) == 1  # the forward uses every core
    assert io_threads("cuda", 16) == 4 and io_threads("cuda:1", 8) == 2
    assert io_threads("cuda", 2) == 1 and io_threads("mps", 64) == 4


class _Payload:
    """A big per-item array whose live instances are counted (a photo's decoded image or depth maps)."""

    live = 0
    worst = 0
    lock = threading.Lock()

    def __init__(self, mb: int = 8) -> None:
        import numpy as np

        self.array = np.ones(mb << 18, dtype=np.float32)  # mb MB, written: really resident
        with _Payload.lock:
            _Payload.live += 1
            _Payload.worst = max(_Payload.worst, _Payload.live)

    def __del__(self) -> None:
        with _Payload.lock:
            _Payload.live -= 1


def test_no_per_item_data_is_retained_over_a_long_batch() -> None:
    """Loaded and computed data (big arrays) die once written: over 60 items at most a queue's worth is alive
    at once, none is left at the end, and traced memory stays bounded (a 300-photo batch stays flat)."""
    import gc
    import tracemalloc

    _Payload.live = _Payload.worst = 0
    ahead, writers = 2, 1

    def compute(loaded: _Payload) -> _Payload:
        return _Payload()  # the maps of the photo; the decoded photo is dropped

    def finish(computed: _Payload) -> int:
        return int(computed.array.size)  # what a writer returns: a small record

    tracemalloc.start()
    try:
        outcomes = []
        batch = pipelined(range(60), lambda x: _Payload(), compute, finish, ahead=ahead, writers=writers)
        for outcome in batch:
            outcomes.append(outcome)  # the consumer keeps every outcome (a summary): they must be small
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    gc.collect()
    bound = 2 * ahead + writers + 4  # queues + the ones in hand (see the engine's docstring)
    assert _Payload.worst <= bound
    assert _Payload.live == 0
    assert peak < (bound + 2) * 8e6
    assert [o.result() for o in outcomes] == [2 << 20] * 60


def test_batches_of_one_key_go_to_compute_batch_in_order() -> None:
    calls: list[list[int]] = []

    def compute_batch(values: list[int]) -> list[int]:
        calls.append(list(values))
        return [v * 10 for v in values]

    def key(value: int) -> int | None:
        return None if value == 7 else value // 4  # 7 is never batched; 0-3, 4-6, 8-11 share a key

    outcomes = list(
        pipelined(
            range(12),
            lambda x: x,
            lambda x: x * 10,
            lambda x: x,
            batch_size=3,
            compute_batch=compute_batch,
            batch_key=key,
        )
    )
    assert [o.item for o in outcomes] == list(range(12))
    assert [o.result() for o in outcomes] == [x * 10 for x in range(12)]
    assert calls == [[0, 1, 2], [4, 5, 6], [8, 9, 10]]  # 3 alone (key change), 7 alone (no key), 11 alone


def test_a_failing_batch_is_computed_one_item_at_a_time() -> None:
    def compute(x: int) -> int:
        if x == 2:
            raise RuntimeError("bad photo")
        return x

    def compute_batch(values: list[int]) -> list[int]:
        return [compute(v) for v in values]  # one bad item fails the whole forward

    def load(x: int) -> int:
        if x == 4:
            raise ValueError("unreadable")
        return x

    outcomes = list(
        pipelined(range(6), load, compute, lambda x: x, batch_size=4, compute_batch=compute_batch)
    )
    assert [o.item for o in outcomes] == list(range(6))
    errors = {o.item: type(o.error) for o in outcomes if o.error is not None}
    assert errors == {2: RuntimeError, 4: ValueError}
    assert [o.value for o in outcomes if o.error is None] == [0, 1, 3, 5]


def test_an_item_that_failed_to_load_does_not_split_a_batch() -> None:
    calls: list[list[int]] = []

    def load(x: int) -> int:
        if x in (1, 2):
            raise ValueError("unreadable")
        return x

    def compute_batch(values: list[int]) -> list[int]:
        calls.append(list(values))
        return values

    outcomes = list(
        pipelined(range(6), load, lambda x: x, lambda x: x, batch_size=3, compute_batch=compute_batch)
    )
    assert [o.item for o in outcomes] == list(range(6))
    assert [o.error is None for o in outcomes] == [True, False, False, True, True, True]
    assert calls == [[0, 3, 4]]  # 5 alone: computed by compute
