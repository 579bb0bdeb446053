"""Model forward speed and memory (issue 7): ViT-S at 616 x 1064, fp32 and bf16, against the official code.

Each precision runs in a fresh process, so that its peak RSS and its first (cold) forward are its own. The
process loads the model from an official-format checkpoint (the fixtures' seeded stand-in weights unless
``--weights`` is given: the cost of a forward does not depend on the values), runs one cold forward, then
``--repeats`` warm forwards, each right after a run of the calibration workload of
``../shared/bench/calib.py``; the figure is the best forward / unit ratio. The official implementation
measures 33.7 units on this machine kind (see README.md), so ``% official`` compares across machines and
noisy runs. Targets: fp32 <= 50 %, bf16 <= 25 %.

On a CUDA machine (``--device cuda``) the forward is timed after ``torch.cuda.synchronize()`` and the peak
of allocated GPU memory is printed as well.

Run: .venv/bin/python benchmarks/bench_model.py [--precision fp32 bf16] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import OFFICIAL_VIT_S_RSS_GB, OFFICIAL_VIT_S_UNITS, calibrate, peak_rss_gb, seeded_checkpoint

TARGET = {"fp32": 0.50, "bf16": 0.25}


def worker(args: argparse.Namespace) -> dict:
    """Time one precision in this process; returns the figures as a dict."""
    import torch

    from metrocli.model.factory import load_model

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    weights = Path(args.weights) if args.weights else seeded_checkpoint(args.model)
    t0 = time.perf_counter()
    model = load_model(args.model, weights=weights, device=args.device, precision=args.precision)
    load_s = time.perf_counter() - t0
    height, width = model.preset.input_size
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(model.device)

    def forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.forward_canonical(x)  # at the model's own precision
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    cold_s = forward()
    if model.device.type == "cuda":
        # CPU calibration units say nothing about a GPU: the median of ten synchronised warm forwards
        times = sorted(forward() for _ in range(max(10, args.repeats)))
        forward_s = times[len(times) // 2]
        runs, unit_s = [(t, float("nan")) for t in times], float("nan")
    else:
        runs = []
        for _ in range(args.repeats):
            unit_s = calibrate()
            runs.append((forward(), unit_s))
        forward_s, unit_s = min(runs, key=lambda r: r[0] / r[1])
    result = {
        "model": args.model,
        "precision": model.precision,
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "input": f"{height}x{width}",
        "load_s": load_s,
        "cold_s": cold_s,
        "forward_s": forward_s,
        "unit_s": unit_s,
        "units": forward_s / unit_s,
        "all_units": [round(f / u, 2) for f, u in runs],
        "peak_rss_gb": peak_rss_gb(),
    }
    if model.device.type == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vit-small")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", default=None, help="official-format checkpoint (default: seeded)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.precision = args.precision[0]
        print(json.dumps(worker(args)))
        return

    seeded_checkpoint(args.model) if not args.weights else None  # build once, outside the timed children
    rows = []
    for precision in args.precision:
        cmd = [sys.executable, __file__, "--worker", "--precision", precision, "--model", args.model]
        cmd += ["--device", args.device, "--threads", str(args.threads), "--repeats", str(args.repeats)]
        if args.weights:
            cmd += ["--weights", args.weights]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            sys.exit(f"{precision} failed:\n{out.stderr}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    print(f"{args.model}, {rows[0]['input']}, {args.device}, {rows[0]['threads']} threads")
    if args.device.startswith("cuda"):
        print(f"{'precision':<10}{'load s':>8}{'cold s':>8}{'fwd ms':>8}{'peak GPU GB':>13}   (median of 10)")
        for r in rows:
            line = f"{r['precision']:<10}{r['load_s']:>8.2f}{r['cold_s']:>8.2f}{r['forward_s'] * 1e3:>8.1f}"
            print(line + f"{r['peak_gpu_gb']:>13.2f}")
        return
    header = f"{'precision':<10}{'load s':>8}{'cold s':>8}{'fwd s':>8}{'unit s':>8}{'units':>8}"
    header += f"{'% official':>12}{'target':>8}{'peak RSS GB':>13}"
    print(header)
    for r in rows:
        share = r["units"] / OFFICIAL_VIT_S_UNITS
        target = TARGET.get(r["precision"])
        verdict = "" if target is None else ("ok" if share <= target else "MISSED")
        line = f"{r['precision']:<10}{r['load_s']:>8.2f}{r['cold_s']:>8.2f}{r['forward_s']:>8.2f}"
        line += f"{r['unit_s']:>8.3f}{r['units']:>8.1f}{share:>11.0%} {verdict:>7}{r['peak_rss_gb']:>13.2f}"
        if "peak_gpu_gb" in r:
            line += f"  (GPU {r['peak_gpu_gb']:.2f} GB)"
        print(line + f"   runs (units): {r['all_units']}")
    print(f"official (reference): {OFFICIAL_VIT_S_UNITS} units, peak RSS {OFFICIAL_VIT_S_RSS_GB} GB")


if __name__ == "__main__":
    main()
