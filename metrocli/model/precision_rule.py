"""What ``--precision auto`` resolves to: the fastest precision whose *measured* fidelity stays within bounds.

Per device kind and preset, :data:`MEASURED` holds how far a half precision moves the predictions from
float32 (``benchmarks/bench_precision.py`` measures them and prints the rows) and how much faster it is.
:func:`auto_precision` picks the fastest half precision that

* the device runs natively (bf16: a CPU with AMX / AVX512-BF16 / ARM BF16, or a CUDA GPU that supports it;
  fp16: CUDA),
* stays within the fidelity bounds: depth <= :data:`DEPTH_P99_REL` relative at the 99th percentile, normals
  <= :data:`NORMAL_P99_DEG` at the 99th percentile and no pixel beyond :data:`NORMAL_MAX_DEG`,
* is at least :data:`MIN_SPEEDUP` times faster than float32

(where a device kind, preset and precision have several rows, every row must pass and the slowest counts);

and float32 when none does, or when nothing was measured for that device kind and preset (an unmeasured
combination never trades fidelity away). Pure data and arithmetic: no torch import.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
#: ``cpu_kind`` values plus ``cuda`` and ``mps``.
DeviceKind = Literal["cpu-amx", "cpu-avx512bf16", "cpu-arm-bf16", "cpu", "cuda", "mps"]

#: Largest 99th-percentile relative depth change a half precision may cause.
DEPTH_P99_REL = 0.01
#: Largest 99th-percentile normal change (degrees).
NORMAL_P99_DEG = 2.0
#: Largest normal change of any pixel (degrees).
NORMAL_MAX_DEG = 5.0
#: A half precision must save at least this factor of time to be worth any change at all.
MIN_SPEEDUP = 1.1


def cpu_kind(flags: Iterable[str]) -> DeviceKind:
    """The kind of CPU from its feature flags (``metrocli.model.runtime.cpu_flags``): ``cpu-amx`` (AMX-BF16
    tiles), ``cpu-avx512bf16`` (AVX512-BF16 dot products only), ``cpu-arm-bf16`` or ``cpu`` (no native
    bf16)."""
    flags = frozenset(flags)
    if "amx_bf16" in flags:
        return "cpu-amx"
    if "avx512_bf16" in flags:
        return "cpu-avx512bf16"
    if "bf16" in flags:
        return "cpu-arm-bf16"
    return "cpu"


@dataclass(frozen=True)
class FidelityFigures:
    """How far one prediction is from a float32 reference.

    Attributes:
        depth_p99_rel / depth_max_rel: 99th percentile / maximum of ``|d - d32| / d32`` over valid pixels.
        normal_p99_deg / normal_max_deg: 99th percentile / maximum angle between the normals (degrees), None
            for depth-only models.
    """

    depth_p99_rel: float
    depth_max_rel: float
    normal_p99_deg: float | None = None
    normal_max_deg: float | None = None

    def within_bounds(self) -> bool:
        """True when within :data:`DEPTH_P99_REL`, :data:`NORMAL_P99_DEG` and :data:`NORMAL_MAX_DEG`."""
        if not self.depth_p99_rel <= DEPTH_P99_REL:  # NaN fails
            return False
        if self.normal_p99_deg is None and self.normal_max_deg is None:
            return True
        return bool(
            self.normal_p99_deg is not None
            and self.normal_max_deg is not None
            and self.normal_p99_deg <= NORMAL_P99_DEG
            and self.normal_max_deg <= NORMAL_MAX_DEG
        )


def measure_fidelity(
    depth: np.ndarray,
    depth_ref: np.ndarray,
    normal: np.ndarray | None = None,
    normal_ref: np.ndarray | None = None,
) -> FidelityFigures:
    """The :class:`FidelityFigures` of ``depth`` (H, W) and ``normal`` (H, W, 3) against float32 ones."""
    valid = np.isfinite(depth_ref) & (depth_ref > 0)
    rel = np.abs(depth[valid].astype(np.float64) - depth_ref[valid]) / depth_ref[valid]
    if rel.size == 0:
        rel = np.array([np.nan])
    normal_p99 = normal_max = None
    if normal is not None and normal_ref is not None:
        a, b = normal.reshape(-1, 3).astype(np.float64), normal_ref.reshape(-1, 3).astype(np.float64)
        angle = np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), (a * b).sum(axis=1)))
        normal_p99, normal_max = float(np.percentile(angle, 99)), float(angle.max())
    return FidelityFigures(float(np.percentile(rel, 99)), float(rel.max()), normal_p99, normal_max)


@dataclass(frozen=True)
class Measurement:
    """One row of the table: a half precision of one preset on one device kind, against float32.

    Attributes:
        device: the device kind (:func:`cpu_kind`, ``cuda``).
        preset: preset name.
        precision: ``bf16`` or ``fp16``.
        fidelity: its :class:`FidelityFigures` against float32.
        speedup: float32 time / its time (forward pass).
        source: where and how it was measured.
    """

    device: DeviceKind
    preset: str
    precision: Literal["bf16", "fp16"]
    fidelity: FidelityFigures
    speedup: float
    source: str = ""


_EPYC = "bench_precision.py 2026-11-30, AMD EPYC (avx512_bf16, no AMX), 2 threads, seeded weights, scene_a"

#: The measured rows (``benchmarks/bench_precision.py`` prints new ones). Where one device kind, preset and
#: precision has several rows (other input sizes, photos or weights), every row must pass.
MEASURED: tuple[Measurement, ...] = (
    Measurement(
        "cpu-avx512bf16",
        "vit-small",
        "bf16",
        FidelityFigures(0.00839, 0.0112, 1.13, 1.52),
        1.34,
        f"{_EPYC}, input 308x532, best of 2 (CPU s 2.55 -> 1.91)",
    ),
    Measurement(
        "cpu-avx512bf16",
        "vit-small",
        "bf16",
        FidelityFigures(0.00684, 0.011, 1.22, 1.91),
        1.36,
        f"{_EPYC}, input 616x1064; speed: issue #20, single-thread CPU s 8.0-8.3 -> 5.8-6.2",
    ),
    Measurement(
        "cpu-avx512bf16",
        "vit-large",
        "bf16",
        FidelityFigures(0.00365, 0.0057, 0.996, 1.61),
        1.59,
        f"{_EPYC}, input 308x532, best of 2 (CPU s 17.3 -> 10.9)",
    ),
    Measurement(
        "cpu-avx512bf16",
        "vit-large",
        "bf16",
        FidelityFigures(0.00337, 0.00502, 0.947, 1.60),
        1.57,
        f"{_EPYC}, input 616x1064, one run (CPU s 56.3 -> 35.9)",
    ),
    Measurement(
        "cpu-avx512bf16",
        "vit-large",
        "bf16",
        FidelityFigures(0.00319, 0.00481, 0.594, 1.11),
        1.41,
        f"{_EPYC.replace('scene_a', 'nyu_demo rgb_00050.jpg')}, input 616x1064, one run (CPU s 54.0 -> 38.2)",
    ),
    Measurement(
        "cpu-avx512bf16",
        "vit-large",
        "bf16",
        FidelityFigures(0.005, 0.005, 1.5, 19.0),
        1.4,
        "issue #20 (this machine kind, 616x1064): normals p99 1.5 deg, some 16-19 deg; depth max 0.5%; "
        "about 40% faster",
    ),
    Measurement(
        "cpu-amx",
        "vit-small",
        "bf16",
        FidelityFigures(0.00684, 0.011, 1.22, 1.91),
        2.75,
        "fidelity: the 616x1064 avx512_bf16 row (the same bf16 rounding, float32 accumulation); speed: "
        "benchmarks/README.md (Xeon with AMX, fp32 3.08 s -> bf16 1.12 s)",
    ),
)


def auto_precision(
    device: DeviceKind,
    preset: str,
    *,
    cuda_bf16: bool = True,
    table: Iterable[Measurement] = MEASURED,
) -> ResolvedPrecision:
    """The precision ``auto`` means for ``preset`` on a ``device`` kind (see the module docstring).

    Args:
        device: :func:`cpu_kind` of this CPU, ``cuda`` or ``mps``.
        preset: preset name.
        cuda_bf16: on CUDA, whether the GPU supports bf16 (``torch.cuda.is_bf16_supported()``).
        table: the measurements (default :data:`MEASURED`).
    """
    native = {"bf16": device.startswith("cpu-") or (device == "cuda" and cuda_bf16), "fp16": device == "cuda"}
    rows = [m for m in table if m.device == device and m.preset == preset]
    # per precision whose every row is within bounds: (its slowest measured speedup, its worst depth p99)
    candidates: dict[ResolvedPrecision, tuple[float, float]] = {}
    for precision in ("bf16", "fp16"):
        mine = [m for m in rows if m.precision == precision]
        if not mine or not native[precision] or not all(m.fidelity.within_bounds() for m in mine):
            continue
        speedup = min(m.speedup for m in mine)
        if speedup >= MIN_SPEEDUP:
            candidates[precision] = (speedup, max(m.fidelity.depth_p99_rel for m in mine))
    if not candidates:
        return "fp32"
    # the fastest; between equally fast ones (within 5%), the more faithful
    best = max(speedup for speedup, _ in candidates.values())
    close = {p: worst for p, (speedup, worst) in candidates.items() if speedup >= best / 1.05}
    return min(close, key=lambda p: close[p])
