"""Settings of the torch runtime: the arithmetic precision (autocast), CPU threads, native bf16 (freed memory:
:mod:`metrocli.heap`)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from metrocli.errors import MetroUsageError
from metrocli.model.precision_rule import DeviceKind, ResolvedPrecision, auto_precision, cpu_kind
from metrocli.model.spec import Precision

log = logging.getLogger("metrocli.model")


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU feature flags listed in the text of ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


@functools.cache
def this_cpu_kind(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> DeviceKind:
    """The :func:`~metrocli.model.precision_rule.cpu_kind` of this machine's CPU (``cpu-amx``,
    ``cpu-avx512bf16``, ``cpu-arm-bf16`` or ``cpu``), read from ``cpuinfo_path``; ``cpu`` where it cannot be
    read (no native bf16 assumed, so ``precision="auto"`` keeps float32)."""
    try:
        return cpu_kind(cpu_flags(cpuinfo_path.read_text(errors="replace")))
    except OSError:
        return "cpu"


def resolve_precision(precision: Precision, device: torch.device, preset: str) -> ResolvedPrecision:
    """``auto`` -> the precision of ``preset`` on ``device`` that is fastest without giving away fidelity;
    other values unchanged.

    CPU: the measured rule :func:`metrocli.model.precision_rule.auto_precision` for this CPU's kind
    (:func:`this_cpu_kind`): a half precision only where it is native, measured within the fidelity
    bounds (depth p99 <= 1%, normals p99 <= 2 deg, no pixel beyond 5 deg) and measurably faster, else
    fp32. Today that is bf16 for ViT-S on CPUs with AVX512-BF16 or AMX, and fp32 for ViT-L (whose bf16
    normals move by up to 19 deg) and for every unmeasured preset.
    CUDA: ``fp16`` for every preset (on an H200 it runs as fast as bf16 and stays about 10x closer to
    fp32: median relative depth error 1.3e-4 against 1.3e-3, normals at most 0.23 deg; issue #17).
    Other devices (MPS): ``fp32``.
    """
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return auto_precision(this_cpu_kind(), preset)
    if device.type == "cuda":
        return "fp16"
    return "fp32"


def autocast_context(precision: ResolvedPrecision, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast that runs code on ``device`` at ``precision`` (resolved: see :func:`resolve_precision`):
    ``bf16`` / ``fp16`` autocast, or autocast disabled for ``fp32`` (so that an enclosing autocast does not
    apply either). On CUDA, ``fp32`` also turns TF32 off for the block (:func:`exact_fp32_cuda`)."""
    if precision == "fp32":
        if device.type == "cuda":
            return exact_fp32_cuda()
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def exact_fp32_cuda() -> Iterator[None]:
    """A block of true float32 on CUDA: autocast off, and TF32 off for cuDNN convolutions and cuBLAS matrix
    products (PyTorch rounds convolution inputs to TF32's 10-bit mantissa by default); the flags the caller
    had are restored on exit.

    Measured on an H200 (torch 2.11, seeded weights, ``../shared`` fixtures): with TF32 the "fp32" raw
    outputs were 3.7e-4 (ViT-S) relative off the official float32 ones at the 99th percentile and normals
    up to 1.1 deg (ViT-L); without it 2e-6 and 0.003 deg, as on a CPU. The cost: ViT-S 27 -> 35 ms, ViT-L
    (308 x 532) 37 -> 65 ms a forward; ``--precision fp16`` (the CUDA default) is faster than both.
    """
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type="cuda", enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = conv
        torch.backends.cuda.matmul.allow_tf32 = matmul


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
