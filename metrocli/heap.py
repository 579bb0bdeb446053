"""The C heap of the process (glibc): freed memory handed back to the system, large buffers kept out of
the heap.

A batch of 12 MP photos allocates and frees buffers of a few to a few hundred MB in several threads (decoding,
the model, writing). glibc serves a request from its heap unless it is above the *mmap threshold*, which it
raises, each time a mapped block is freed, to that block's size (up to 32 MB). After the first photos, every
buffer up to 32 MB (resized images, PNG rows, float16 copies, the network's activations) therefore lands
in the heaps of three threads, and their free holes fragment: over a 24-photo ``metro depth`` batch the
heaps grew from 416 to 829 MB, half of it free but not returnable (measured with ``mallinfo2``), and they
keep growing. :func:`bound_heap` fixes the threshold instead (which also turns the dynamic raise off):
buffers of :data:`MMAP_THRESHOLD_BYTES` or more are mapped and unmapped on their own, and the heaps stay
flat (165 MB over the same batch). :func:`release_memory` returns the free pages left in the heaps.

Both are no-ops (False) where the C library is not glibc (macOS, musl). Where a library that replaces
malloc is loaded (Open3D's TBB allocator proxy: ``reconstruct``), numpy's buffers bypass glibc and this has
no effect. Nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading

#: Buffers of this size or more get their own mapping (returned to the system when freed): 1 MiB (4 MiB
#: left the heaps growing slowly: 190 -> 236 MB over the 24 photos).
MMAP_THRESHOLD_BYTES = 1 << 20
#: glibc's ``mallopt`` parameter number of the mmap threshold (``M_MMAP_THRESHOLD`` in ``malloc.h``).
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_bounded: list[int] = []


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
        libc.mallopt  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """Hand the heap memory that freed buffers left behind back to the operating system.

    glibc keeps freed blocks in the process heaps for reuse, so after a forward pass the resident size stays
    at its peak; ``malloc_trim`` releases those pages (of every thread's heap), which keeps the peak of a
    12 MP prediction (network activations, then full-size outputs) at the larger of the two instead of their
    sum. Returns True when memory was released.
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def bound_heap(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Map every buffer of ``threshold_bytes`` or more on its own, for the rest of the process (see the module
    docstring), once; returns True when the setting is in effect."""
    libc = _libc()
    if libc is None:
        return False
    with _lock:
        if _bounded and _bounded[0] == threshold_bytes:
            return True
        if not libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)):
            return False
        _bounded[:] = [threshold_bytes]
        return True
