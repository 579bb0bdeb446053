"""Fidelity and speed of each half precision against float32, per preset: the rows of the ``--precision
auto`` table (``metrocli/model/precision_rule.py``, ``MEASURED``).

For each model (seeded stand-in weights: random weights magnify every difference, so the figures bound real
weights too) the photo ``scene_a.png`` of the fixtures (or ``--image``) is predicted at the preset's input
size (or ``--size``) in float32 and in each half precision, alternately ``--repeats`` times after one untimed
run of each; the time is the best of the repeats (forward wall seconds, and CPU seconds of the whole
prediction: the speedup of the row on a CPU, steadier on a shared machine; on CUDA the synchronised forward
wall time is the row's speedup); the fidelity is that of the whole
prediction at the photo's size against float32: depth p99 / max relative change, normal p99 / max angle. A
row passes the bounds of ``precision_rule`` (depth p99 <= 1%, normals p99 <= 2 deg and no pixel beyond
5 deg) or not; the script prints the table rows to paste.

Run: .venv/bin/python benchmarks/bench_precision.py [--models vit-small vit-large] [--size H,W]
     [--device cpu|cuda] [--precisions bf16 fp16] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from benchlib import FIXTURES, seeded_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["vit-small", "vit-large"])
    parser.add_argument("--size", default=None, help="network input H,W (default: the preset's own)")
    parser.add_argument("--image", default=str(FIXTURES / "scene_a.png"), help="photo (default: scene_a)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precisions", nargs="+", default=None, help="default: bf16 on CPU, bf16 fp16 on CUDA"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from metrocli.camera.intrinsics import centred
    from metrocli.model.factory import load_model
    from metrocli.model.precision_rule import cpu_kind, measure_fidelity
    from metrocli.model.runtime import cpu_flags

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
        kind = cpu_kind(cpu_flags(Path("/proc/cpuinfo").read_text()))
    else:
        kind = args.device
    precisions = args.precisions or (["bf16"] if args.device == "cpu" else ["bf16", "fp16"])
    size = tuple(int(v) for v in args.size.split(",")) if args.size else None
    image = np.asarray(Image.open(args.image).convert("RGB"))
    intrinsics = centred(image.shape[1], image.shape[0], 520.0, "user")
    print(
        f"device kind {kind}, photo {Path(args.image).name} {image.shape[1]}x{image.shape[0]}, "
        f"{torch.get_num_threads()} threads"
    )
    rows = []
    for name in args.models:
        model = load_model(name, weights=seeded_checkpoint(name), device=args.device, precision="fp32")
        if size is not None:
            model.preset = dataclasses.replace(model.preset, input_size=size)
        times: dict[str, list[tuple[float, float]]] = {p: [] for p in ["fp32", *precisions]}
        preds = {}
        for precision in times:  # warm-up: first-touch page faults and kernel creation, per precision
            model.precision = precision  # type: ignore[assignment]
            model.predict(image, intrinsics)
        for _ in range(args.repeats):
            for precision in times:
                model.precision = precision  # type: ignore[assignment]
                cpu0 = time.process_time()
                pred = model.predict(image, intrinsics)
                times[precision].append((pred.timings_s["forward"], time.process_time() - cpu0))
                preds[precision] = pred
        ref = preds["fp32"]
        wall32, cpu32 = min(t[0] for t in times["fp32"]), min(t[1] for t in times["fp32"])
        height, width = model.preset.input_size
        print(f"{name} {height}x{width}: fp32 forward {wall32:.4f} s wall, predict {cpu32:.2f} CPU s")
        for precision in precisions:
            pred = preds[precision]
            fid = measure_fidelity(pred.depth, ref.depth, pred.normal, ref.normal)
            wall, cpu = min(t[0] for t in times[precision]), min(t[1] for t in times[precision])
            # CPU seconds on a CPU (steadier than wall time on a shared machine); on a GPU the host only
            # waits, so the synchronised forward wall time
            speedup = cpu32 / cpu if args.device == "cpu" else wall32 / wall
            normals = (
                ""
                if fid.normal_p99_deg is None
                else f", normal p99 {fid.normal_p99_deg:.3f} max {fid.normal_max_deg:.2f} deg"
            )
            print(
                f"  {precision}: forward {wall:.4f} s wall ({wall32 / wall:.2f}x), predict {cpu:.2f} CPU s "
                f"({speedup:.2f}x); depth p99 {fid.depth_p99_rel:.2e} max {fid.depth_max_rel:.2e}"
                f"{normals}; within bounds: {fid.within_bounds()}"
            )
            figures = ", ".join(
                "None" if v is None else f"{v:.3g}"
                for v in (fid.depth_p99_rel, fid.depth_max_rel, fid.normal_p99_deg, fid.normal_max_deg)
            )
            rows.append(
                f'Measurement("{kind}", "{name}", "{precision}", '
                f"FidelityFigures({figures}), {speedup:.2f}, ...),"
            )
        del model
    print("rows for metrocli/model/precision_rule.py MEASURED:")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
