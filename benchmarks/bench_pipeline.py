"""`metro measure` and `metro depth` on a 12 MP phone photo, stage by stage, with peak memory (issue 7).

The photo: a real camera photo from ../shared/exif-samples resized to 4032 x 3024, saved as an iPhone-style
JPEG (stored landscape with EXIF orientation 6, FocalLength 5.1 mm, 35 mm equivalent 26 mm), so the run reads
EXIF, decodes 12 MP and rotates it upright (3024 x 4032) like a real phone photo.

1. In-process stages of `metro measure` (the same library calls as the command), after one warm-up forward
   on another image so that the forward timed here is a warm one (the comparison is with the warm forward;
   a single-photo command also pays a first-forward cost that `bench_model.py` prints as "cold"):
   photo (EXIF + decode + orientation), preprocess (resize, pad, normalise), forward, postprocess (unpad,
   upsampling to 12 MP, de-canonical transform), measurement (backprojection of the lines), output (the
   JSON line). Target: everything but the forward adds <= 15 % to it. Model loading is printed apart.
2. The real commands end to end in fresh processes: wall time and peak RSS (target for `metro depth` with
   ViT-S: <= 1.5 GB).

Run: .venv/bin/python benchmarks/bench_pipeline.py [--precision fp32] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import SHARED, child_peak_rss_gb, seeded_checkpoint

from metrocli.model.spec import Precision

SOURCE_PHOTO = SHARED / "exif-samples" / "jpg" / "mobile" / "HMD_Nokia_8.3_5G.jpg"
STORED_SIZE = (4032, 3024)  # (width, height) as stored; displayed upright as 3024 x 4032
LINES = [(500.0, 1200.0, 2500.0, 1300.0), (1512.0, 2000.0, 1600.0, 3500.0)]
OVERHEAD_TARGET = 0.15
RSS_TARGET_GB = 1.5


def make_photo(folder: Path) -> Path:
    """A 12 MP iPhone-style JPEG (orientation 6) made from a real photo."""
    import cv2
    from PIL import Image

    from metrocli.camera.exif_write import write_jpeg

    if not SOURCE_PHOTO.is_file():
        sys.exit(f"{SOURCE_PHOTO} is missing: this benchmark needs ../shared beside the repository")
    rgb = np.asarray(Image.open(SOURCE_PHOTO).convert("RGB"))
    stored = cv2.resize(rgb, STORED_SIZE, interpolation=cv2.INTER_CUBIC)
    return write_jpeg(
        folder / "IMG_0001.jpg",
        stored,
        make="Apple",
        model="iPhone 13",
        focal_length_mm=5.1,
        focal_35mm=26,
        orientation=6,
    )


def stages(photo_path: Path, weights: Path, precision: Precision) -> tuple[dict[str, float], float]:
    """Seconds per stage of `metro measure` in this process, and the model loading time."""
    import torch

    from metrocli.geometry.measure import measure_lines
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.measure import MeasureResult
    from metrocli.pipeline.provider import FocalMode, ModelDepth

    provider = ModelDepth(ModelSpec(weights=weights, device="cpu", precision=precision), FocalMode())
    t0 = time.perf_counter()
    model = provider.model()
    load_s = time.perf_counter() - t0
    warm = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    model.predict(warm, (500.0, 500.0, 320.0, 240.0))

    times: dict[str, float] = {}
    t = time.perf_counter()
    photo = provider.focal.load_photo(photo_path)
    times["photo (EXIF, decode, rotate)"] = time.perf_counter() - t
    with torch.inference_mode():
        depth = provider.provide(photo, normals=False)  # as `metro measure`
    times["preprocess"] = depth.timings_s["preprocess"]
    times["forward"] = depth.timings_s["forward"]
    times["postprocess (to 12 MP)"] = depth.timings_s["postprocess"]
    t = time.perf_counter()
    measurements = measure_lines(depth.depth_m, depth.intrinsics, LINES, confidence=depth.confidence)
    times["measurement"] = time.perf_counter() - t
    t = time.perf_counter()
    k = depth.intrinsics
    result = MeasureResult(str(photo_path), k.fx, k.focal_source, tuple(measurements))
    print(json.dumps(result.to_dict()), file=io.StringIO())
    times["output (JSON)"] = time.perf_counter() - t
    return times, load_s


def run_command(args: list[str], threads: int) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (GB) and exit code of ``metro ARGS`` in a fresh process."""
    metro = Path(sys.executable).with_name("metro")
    env = {**os.environ, "METRO_THREADS": str(threads)}
    t = time.perf_counter()
    proc = subprocess.Popen([str(metro), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if proc.stderr is not None:
        proc.stderr.close()
    return wall, child_peak_rss_gb(rusage), os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    weights = seeded_checkpoint("vit-small")
    with tempfile.TemporaryDirectory() as tmp:
        photo = make_photo(Path(tmp))
        times, load_s = stages(photo, weights, args.precision)
        forward = times["forward"]
        rest = sum(v for k, v in times.items() if k != "forward")
        print(f"metro measure, 12 MP photo (3024 x 4032), ViT-S {args.precision}, {args.threads} threads")
        print(f"  model loading: {load_s:.2f} s (printed apart)")
        for name, seconds in times.items():
            print(f"  {name:<30}{seconds:>8.3f} s{seconds / forward:>8.1%} of the forward")
        verdict = "ok" if rest / forward <= OVERHEAD_TARGET else "MISSED"
        print(f"  everything but the forward: {rest:.3f} s = {rest / forward:.1%} (target <= 15%: {verdict})")

        common = ["--weights", str(weights), "--precision", args.precision, "--device", "cpu"]
        line_args = [x for u1, v1, u2, v2 in LINES for x in ("--line", f"{u1},{v1},{u2},{v2}")]
        print("end to end, fresh processes:")
        for name, cmd in (
            ("metro measure", ["measure", str(photo), *line_args, *common, "--json"]),
            ("metro depth", ["depth", str(photo), "-o", str(Path(tmp) / "out"), *common]),
        ):
            wall, rss, code = run_command(cmd, args.threads)
            verdict = "ok" if rss <= RSS_TARGET_GB else "MISSED"
            print(f"  {name:<15} exit {code}  wall {wall:6.2f} s  peak RSS {rss:.2f} GB", end="")
            print(f" (target <= {RSS_TARGET_GB}: {verdict})")


if __name__ == "__main__":
    main()
