"""CPU feature detection, thread settings and what precision ``auto`` resolves to."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metrocli.errors import MetroUsageError
from metrocli.model import runtime
from metrocli.model.precision_rule import cpu_kind
from metrocli.model.runtime import (
    autocast_context,
    cpu_flags,
    resolve_precision,
    set_threads,
    this_cpu_kind,
)

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
SKYLAKE = """processor\t: 0
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512bw avx512vl
"""
GRAVITON3 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm sve
"""


def test_cpu_flags_reads_x86_and_arm_feature_lines():
    assert {"avx512_bf16", "amx_bf16", "fpu"} <= cpu_flags(SAPPHIRE_RAPIDS)
    assert "vendor_id" not in cpu_flags(SAPPHIRE_RAPIDS)
    assert "bf16" in cpu_flags(GRAVITON3)
    assert cpu_flags("") == frozenset()


ZEN4 = """processor\t: 0
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512bw avx512_bf16
"""


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (SAPPHIRE_RAPIDS, "cpu-amx"),
        (ZEN4, "cpu-avx512bf16"),
        (SKYLAKE, "cpu"),
        (GRAVITON3, "cpu-arm-bf16"),
        ("garbage", "cpu"),
    ],
)
def test_this_cpu_kind_from_cpuinfo(tmp_path: Path, text: str, kind: str):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert this_cpu_kind(path) == kind


def test_this_cpu_kind_is_plain_cpu_without_cpuinfo(tmp_path: Path):
    assert this_cpu_kind(tmp_path / "missing") == "cpu"


def test_this_machine_matches_its_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = cpu_flags(cpuinfo.read_text())
    assert this_cpu_kind() == cpu_kind(flags)


@pytest.mark.parametrize(
    ("kind", "preset", "expected"),
    [
        ("cpu-avx512bf16", "vit-small", "bf16"),  # measured within the bounds and 1.3x faster
        ("cpu-amx", "vit-small", "bf16"),
        ("cpu-avx512bf16", "vit-large", "fp32"),  # bf16 moves some normals by 16-19 deg (issue #20)
        ("cpu-amx", "vit-large", "fp32"),  # never measured on AMX: no fidelity is traded away unmeasured
        ("cpu-avx512bf16", "convnext-tiny", "fp32"),
        ("cpu", "vit-small", "fp32"),  # emulated bf16 is slower than float32
    ],
)
def test_auto_precision_on_the_cpu_is_the_measured_rule(monkeypatch, kind: str, preset: str, expected: str):
    monkeypatch.setattr(runtime, "this_cpu_kind", lambda: kind)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, preset) == expected
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision(explicit, cpu, preset) == explicit


def test_autocast_context_per_precision():
    cpu = torch.device("cpu")
    with autocast_context("fp32", cpu):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context("bf16", cpu):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16), autocast_context("fp32", cpu):
        assert not torch.is_autocast_enabled("cpu")  # fp32 wins over an enclosing autocast


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_fp32_on_cuda_turns_tf32_off_for_the_block_only():
    """On an H200 TF32 moved "fp32" outputs 3.7e-4 off the official float32 fixtures (normals up to 1.1 deg);
    the flags are process-wide, so the block must restore them, also when it raises."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with autocast_context("fp32", torch.device("cuda")):
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.is_autocast_enabled("cuda")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with pytest.raises(RuntimeError), autocast_context("fp32", torch.device("cuda")):
            raise RuntimeError("boom")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with autocast_context("fp16", torch.device("cuda")), autocast_context("fp32", torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32  # half precisions and CPUs leave the flags alone
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


@pytest.mark.parametrize("bf16_supported", [True, False])
@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_elsewhere(monkeypatch, bf16_supported: bool, native: bool):
    """CUDA: fp16 whether or not the GPU has bf16 (issue #17: as fast as bf16 on an H200 and ~10x closer to
    fp32), whatever the host CPU has; explicit choices stay; MPS: fp32."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    monkeypatch.setattr(runtime, "this_cpu_kind", lambda: "cpu-amx" if native else "cpu")
    cuda = torch.device("cuda")
    for preset in ("vit-small", "vit-large", "convnext-large"):
        assert resolve_precision("auto", cuda, preset) == "fp16"
        assert resolve_precision("auto", torch.device("cuda:1"), preset) == "fp16"
        for explicit in ("fp32", "bf16", "fp16"):
            assert resolve_precision(explicit, cuda, preset) == explicit
        assert resolve_precision("auto", torch.device("mps"), preset) == "fp32"


def test_set_threads_sets_and_validates():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == 1  # None leaves the setting alone
        with pytest.raises(MetroUsageError, match="at least 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)
