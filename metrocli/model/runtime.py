"""Settings of the torch runtime: the arithmetic precision (autocast), CPU threads, native bf16, returning
freed memory."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from metrocli.errors import MetroUsageError
from metrocli.model.spec import Precision

log = logging.getLogger("metrocli.model")

#: /proc/cpuinfo flags of x86 CPUs with native bf16 arithmetic (AMX tiles, AVX512-BF16 dot products).
X86_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
#: /proc/cpuinfo feature of ARM CPUs with the BF16 extension (ARMv8.6: BFDOT, BFMMLA).
ARM_BF16_FEATURE = "bf16"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU feature flags listed in the text of ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


@functools.cache
def cpu_native_bf16(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> bool:
    """True when this machine's CPU has native bf16 arithmetic (AMX-BF16 / AVX512-BF16 / ARM BF16).

    Read from ``cpuinfo_path`` (Linux); False where it cannot be read (bf16 is then emulated and slower than
    float32, so ``precision="auto"`` keeps float32).
    """
    try:
        flags = cpu_flags(cpuinfo_path.read_text(errors="replace"))
    except OSError:
        return False
    return bool(flags & X86_BF16_FLAGS) or ARM_BF16_FEATURE in flags


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """``auto`` -> the fastest precision that is native on ``device``; other values unchanged.

    CPU: ``bf16`` where the CPU has native bf16 arithmetic (:func:`cpu_native_bf16`: AMX / AVX512-BF16 /
    ARM BF16), else ``fp32`` (emulated bf16 is slower than float32). CUDA: ``fp16`` on every GPU (on an H200
    it runs as fast as bf16 and stays about 10x closer to fp32: median relative depth error 1.3e-4 against
    1.3e-3, issue #17). Other devices (MPS): ``fp32``.
    """
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return "bf16" if cpu_native_bf16() else "fp32"
    if device.type == "cuda":
        return "fp16"
    return "fp32"


def autocast_context(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast that runs code on ``device`` at ``precision`` (``auto``: see :func:`resolve_precision`):
    ``bf16`` / ``fp16`` autocast, or autocast disabled for ``fp32`` (so that an enclosing autocast does not
    apply either)."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads for torch's intra-op parallelism (None: leave torch's default, one per
    physical core). Process-wide. Returns the number in effect.

    Raises:
        MetroUsageError: ``threads`` is below 1.
    """
    if threads is not None:
        if threads < 1:
            raise MetroUsageError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
        log.debug("torch uses %d CPU threads", threads)
    return torch.get_num_threads()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


def release_memory() -> bool:
    """Hand the heap memory that freed tensors left behind back to the operating system.

    glibc keeps freed blocks of up to 32 MB in the process heap for reuse, so after a forward pass the
    resident size stays at its peak; ``malloc_trim`` releases those pages, which keeps the peak of a 12 MP
    prediction (network activations, then full-size outputs) at the larger of the two instead of their sum.
    Returns True when memory was released; a no-op (False) where the C library has no ``malloc_trim``.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
