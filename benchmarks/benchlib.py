"""Shared pieces of the benchmarks: the calibration unit, seeded stand-in weights, peak memory.

Benchmarks run as scripts (``.venv/bin/python benchmarks/<script>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CALIB = SHARED / "bench" / "calib.py"
FIXTURES = SHARED / "fixtures" / "metric3d"
#: Official Metric3D ViT-S forward at 616 x 1064, fp32, in calibration units on the reference machine kind
#: (2 cores, AVX-512 / AMX-bf16): 6.8 s, peak RSS 1.64 GB.
OFFICIAL_VIT_S_UNITS = 33.7
OFFICIAL_VIT_S_S = 6.8
OFFICIAL_VIT_S_RSS_GB = 1.64
#: The seed of the stand-in weights of ../shared/fixtures/metric3d.
SEED = 4321


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        sys.exit(f"{path} is missing: this benchmark needs ../shared beside the repository")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibrate() -> float:
    """Seconds of the fixed fp32 GEMM + 3x3-conv workload of ../shared/bench/calib.py (best of 5); exits
    with a message when ../shared is absent."""
    return float(_load(CALIB, "calib").calibrate())


def calibrate_if_available() -> float | None:
    """:func:`calibrate`, or None when ../shared/bench/calib.py is absent."""
    return calibrate() if CALIB.is_file() else None


def seeded_checkpoint(variant: str = "vit-small", folder: Path | None = None) -> Path:
    """An official-format checkpoint of ``variant`` with the fixtures' seeded stand-in values (cached)."""
    import torch

    folder = folder or Path(tempfile.gettempdir()) / "metrocli-bench"
    path = folder / f"{variant}.seed{SEED}.pth"
    if not path.is_file():
        seedweights = _load(FIXTURES / "seedweights.py", "seedweights")
        shapes = json.loads((FIXTURES / f"{variant}.keys.json").read_text())
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        torch.save({"model_state_dict": seedweights.make_state_dict(shapes, seed=SEED)}, tmp)
        tmp.replace(path)
    return path


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (10^9 bytes; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def child_peak_rss_gb(rusage: resource.struct_rusage) -> float:
    """Peak RSS in GB of a child from the rusage ``os.wait4`` returned for it."""
    return rusage.ru_maxrss * 1024 / 1e9
