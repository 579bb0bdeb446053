"""ONNX Runtime against torch, float32, in the same run (issue 20): ViT-S at 616 x 1064 on ``scene_a.png``.

The seeded stand-in weights are exported once (``metro export onnx``'s code, cached in
``$TMPDIR/metrocli-bench``); then torch (:class:`Metric3D`) and onnxruntime (:class:`OnnxMetric3D`) predict
the same photo alternately ``--repeats`` times with the same number of threads. Printed: the forward time of
each (best and median, wall and CPU seconds of the process), the ratio onnxruntime / torch (target <= 0.75),
and the fidelity of the onnxruntime prediction against torch's: depth p99 / max relative, normal p99 / max
degrees.

Run: .venv/bin/python benchmarks/bench_onnx.py [--model vit-small] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import FIXTURES, seeded_checkpoint

TARGET_RATIO = 0.75


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vit-small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from metrocli.camera.intrinsics import centred
    from metrocli.model.factory import load_model
    from metrocli.model.onnx_export import export_preset
    from metrocli.model.onnx_runtime import OnnxMetric3D
    from metrocli.model.precision_rule import measure_fidelity

    torch.set_num_threads(args.threads)
    weights = seeded_checkpoint(args.model)
    model = load_model(args.model, weights=weights, device="cpu", precision="fp32")
    height, width = model.preset.input_size
    onnx_file = Path(tempfile.gettempdir()) / "metrocli-bench" / f"{args.model}.{height}x{width}.onnx"
    if not onnx_file.is_file():
        t0 = time.perf_counter()
        result = export_preset(args.model, onnx_file, weights=weights)
        print(f"exported {onnx_file} in {time.perf_counter() - t0:.0f} s; check: {result.fidelity}")
    backend = OnnxMetric3D(onnx_file, device="cpu", threads=args.threads)

    image = np.asarray(Image.open(FIXTURES / "scene_a.png").convert("RGB"))
    intrinsics = centred(image.shape[1], image.shape[0], 520.0, "user")
    runners = {"torch": model, "onnxruntime": backend}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    preds = {}
    for name, runner in runners.items():  # warm-up (first-touch page faults, graph initialisation)
        preds[name] = runner.predict(image, intrinsics)
    for _ in range(args.repeats):
        for name, runner in runners.items():
            cpu0 = time.process_time()
            pred = runner.predict(image, intrinsics)
            cpu = time.process_time() - cpu0
            times[name].append((pred.timings_s["forward"], cpu))
    print(
        f"{args.model} {height}x{width} float32, photo {image.shape[1]}x{image.shape[0]}, "
        f"{args.threads} threads"
    )
    print(f"{'backend':<13}{'best s':>8}{'median s':>10}{'best CPU s':>12}   runs (wall s)")
    for name, runs in times.items():
        walls = [w for w, _ in runs]
        print(
            f"{name:<13}{min(walls):>8.2f}{statistics.median(walls):>10.2f}{min(c for _, c in runs):>12.2f}"
            f"   {[round(w, 2) for w in walls]}"
        )
    ratio = min(w for w, _ in times["onnxruntime"]) / min(w for w, _ in times["torch"])
    ratio_cpu = min(c for _, c in times["onnxruntime"]) / min(c for _, c in times["torch"])
    verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
    print(f"onnxruntime / torch: {ratio:.2f} wall, {ratio_cpu:.2f} CPU (target <= {TARGET_RATIO}: {verdict})")
    ours, ref = preds["onnxruntime"], preds["torch"]
    fid = measure_fidelity(ours.depth, ref.depth, ours.normal, ref.normal)
    print(
        f"fidelity vs torch: depth p99 {fid.depth_p99_rel:.2e} max {fid.depth_max_rel:.2e}; "
        f"normal p99 {fid.normal_p99_deg:.4f} max {fid.normal_max_deg:.4f} deg"
    )


if __name__ == "__main__":
    main()
