"""metrocli.heap: large buffers out of glibc's heaps (flat memory over long batches), freed pages returned."""

from __future__ import annotations

import ctypes
import platform

import numpy as np
import pytest

from metrocli.heap import MMAP_THRESHOLD_BYTES, bound_heap, release_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost",
        )
    ]  # fmt: skip


def _mapped_bytes() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblkhd)


@glibc
def test_a_buffer_above_the_threshold_gets_its_own_mapping_even_after_a_bigger_one_was_freed() -> None:
    assert bound_heap() and bound_heap()  # idempotent
    # glibc's dynamic threshold would rise to 24 MB after this free, and the next 2 MB would go to the heap
    big = np.ones(24 << 20, np.uint8)
    del big
    before = _mapped_bytes()
    buffer = np.ones(2 * MMAP_THRESHOLD_BYTES, np.uint8)
    assert _mapped_bytes() - before >= buffer.nbytes
    del buffer
    assert _mapped_bytes() <= before + MMAP_THRESHOLD_BYTES  # unmapped when freed: back to the system
    assert isinstance(release_memory(), bool)
