"""metrocli.heap: large buffers out of glibc's heaps (flat memory over long batches), freed pages returned."""

from __future__ import annotations

import platform

import pytest

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


_BODY = """
import ctypes
import numpy as np
from metrocli.heap import MMAP_THRESHOLD_BYTES, bound_heap, release_memory


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


def mapped_bytes():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return int(libc.mallinfo2().hblkhd)


assert bound_heap() and bound_heap()  # idempotent
# glibc's dynamic threshold would rise to 24 MB after this free, and the next 2 MB would go to the heap
big = np.ones(24 << 20, np.uint8)
del big
before = mapped_bytes()
buffer = np.ones(2 * MMAP_THRESHOLD_BYTES, np.uint8)
assert mapped_bytes() - before >= buffer.nbytes, (mapped_bytes(), before)
del buffer
assert mapped_bytes() <= before + MMAP_THRESHOLD_BYTES  # unmapped when freed: back to the system
assert isinstance(release_memory(), bool)
"""


@glibc
def test_a_buffer_above_the_threshold_gets_its_own_mapping_even_after_a_bigger_one_was_freed() -> None:
    # A fresh process: once a library that replaces malloc (Open3D's TBB allocator proxy) is loaded, glibc's
    # counters no longer see numpy's buffers, as in a test session that imported open3d earlier.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _BODY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
