"""The ``--precision auto`` rule: never a precision whose measured fidelity is out of bounds."""

from __future__ import annotations

import numpy as np
import pytest

from metrocli.model.precision_rule import (
    DEPTH_P99_REL,
    MEASURED,
    NORMAL_MAX_DEG,
    NORMAL_P99_DEG,
    FidelityFigures,
    Measurement,
    auto_precision,
    cpu_kind,
    measure_fidelity,
)
from metrocli.model.presets import PRESETS

KINDS = ("cpu-amx", "cpu-avx512bf16", "cpu-arm-bf16", "cpu", "cuda", "mps")
GOOD = FidelityFigures(0.002, 0.01, 0.5, 2.0)


def test_cpu_kind_from_flags():
    assert cpu_kind({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}) == "cpu-amx"
    assert cpu_kind({"avx512f", "avx512_bf16"}) == "cpu-avx512bf16"
    assert cpu_kind({"asimd", "bf16"}) == "cpu-arm-bf16"
    assert cpu_kind({"avx2", "avx512f"}) == "cpu"
    assert cpu_kind(()) == "cpu"


def test_bounds():
    assert (DEPTH_P99_REL, NORMAL_P99_DEG, NORMAL_MAX_DEG) == (0.01, 2.0, 5.0)
    assert GOOD.within_bounds()
    assert FidelityFigures(0.01, 0.5).within_bounds()  # depth-only: the depth maximum is not bounded
    assert not FidelityFigures(0.0101, 0.02, 0.1, 0.2).within_bounds()
    assert not FidelityFigures(0.001, 0.002, 2.01, 3.0).within_bounds()
    assert not FidelityFigures(0.001, 0.002, 1.5, 16.0).within_bounds()  # one pixel beyond 5 degrees
    assert not FidelityFigures(float("nan"), 0.0).within_bounds()
    assert not FidelityFigures(0.001, 0.002, 1.0, None).within_bounds()  # half-measured normals


def test_measure_fidelity():
    depth_ref = np.full((10, 10), 2.0, np.float32)
    depth = depth_ref.copy()
    depth[0, 0] = 2.2  # one pixel 10% off
    depth_ref[9, 9] = 0.0  # invalid in the reference: ignored
    normal_ref = np.zeros((10, 10, 3), np.float32)
    normal_ref[..., 2] = -1.0
    normal = normal_ref.copy()
    normal[5, 5] = (np.sin(np.radians(10.0)), 0.0, -np.cos(np.radians(10.0)))
    fid = measure_fidelity(depth, depth_ref, normal, normal_ref)
    assert fid.depth_max_rel == pytest.approx(0.1, rel=1e-5)
    assert fid.depth_p99_rel < 0.1  # 1 pixel in 99
    assert fid.normal_max_deg == pytest.approx(10.0, abs=1e-4)
    assert fid.normal_p99_deg < 10.0
    assert not fid.within_bounds()
    depth_only = measure_fidelity(depth_ref, depth_ref)
    assert (depth_only.depth_max_rel, depth_only.normal_max_deg) == (0.0, None)


def test_the_measured_table():
    """The rule applied to this project's measurements (benchmarks/bench_precision.py)."""
    assert auto_precision("cpu-avx512bf16", "vit-small") == "bf16"
    assert auto_precision("cpu-avx512bf16", "vit-large") == "fp32"  # bf16 moves some normals too far
    assert auto_precision("cpu-amx", "vit-small") == "bf16"
    for preset in PRESETS:  # no native bf16: never a half precision
        assert auto_precision("cpu", preset) == "fp32"
        assert auto_precision("mps", preset) == "fp32"
    assert auto_precision("cpu-avx512bf16", "vit-giant2") == "fp32"  # not measured: float32


@pytest.mark.parametrize("device", KINDS)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_auto_never_exceeds_the_bounds(device, preset):
    """Whatever auto picks has a measurement on this device kind and preset, within the bounds."""
    for cuda_bf16 in (True, False):
        choice = auto_precision(device, preset, cuda_bf16=cuda_bf16)
        if choice == "fp32":
            continue
        rows = [m for m in MEASURED if (m.device, m.preset, m.precision) == (device, preset, choice)]
        assert rows and all(m.fidelity.within_bounds() and m.speedup >= 1.1 for m in rows)


def test_the_fastest_faithful_precision_wins_on_cuda():
    bf16 = Measurement("cuda", "vit-large", "bf16", FidelityFigures(0.004, 0.02, 1.5, 4.0), 2.0)
    fp16 = Measurement("cuda", "vit-large", "fp16", FidelityFigures(0.0004, 0.002, 0.15, 0.5), 1.97)
    table = (bf16, fp16)
    # equally fast (within 5%): the more faithful one
    assert auto_precision("cuda", "vit-large", table=table) == "fp16"
    # clearly faster, and within the bounds: the faster one
    faster = Measurement("cuda", "vit-large", "bf16", bf16.fidelity, 3.0)
    assert auto_precision("cuda", "vit-large", table=(faster, fp16)) == "bf16"
    # a GPU without bf16 never gets it
    assert auto_precision("cuda", "vit-large", cuda_bf16=False, table=(faster, fp16)) == "fp16"
    # out of bounds or not faster: float32
    wild = Measurement("cuda", "vit-large", "fp16", FidelityFigures(0.001, 0.002, 1.0, 16.0), 3.0)
    slow = Measurement("cuda", "vit-large", "fp16", GOOD, 1.05)
    assert auto_precision("cuda", "vit-large", table=(wild, slow)) == "fp32"
    # one row out of bounds vetoes its precision however good the others are; the slowest row counts
    assert auto_precision("cuda", "vit-large", table=(fp16, wild)) == "fp32"
    assert auto_precision("cuda", "vit-large", table=(fp16, slow)) == "fp32"
    # fp16 rows never apply to a CPU, rows of another preset or device never apply
    assert auto_precision("cpu-avx512bf16", "vit-large", table=(fp16,)) == "fp32"
    assert auto_precision("cuda", "vit-small", table=table) == "fp32"
