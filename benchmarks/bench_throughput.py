"""`metro depth` throughput on a folder of real-size phone photos (issue 17): photos per second, the share of
the time the model is busy, and the forward-only rate, per model and precision.

The folder: ``--photos N`` copies (cycled) of the 8-16 MP JPEG and HEIC/HEIF phone photos of
../shared/exif-samples, in a temporary folder (never the repository). For each model and precision:

1. load the model and run one warm-up forward (not timed in the rates);
2. ``pipelined``: :meth:`DepthRunner.run_many` (decoding ahead of the model, writing behind it), the engine of
   `metro depth`; photos/s, and from the sidecars the seconds spent in the forward and in the model thread
   (pre-processing + forward + post-processing): the forward-only rate is N / sum(forward), the model's busy
   share is sum(forward) / wall;
3. ``sequential`` (``--compare``): :meth:`DepthRunner.run` one photo after another (what `metro depth` did
   before the engine), same photos, same outputs;
4. host memory: the resident set after each photo; ``--photos 300`` is the flat-memory check (the RSS of the
   last quarter of the batch against the first quarter, and the peak), with the size of the C heaps (glibc
   ``mallinfo2``: what grew before :func:`metrocli.heap.bound_heap`).

The time not spent in the forward (wall - sum of forwards) is printed per mode: on a CPU it is what the
pipeline did not hide (post-processing in the model thread, waits for decoding or writing).

Outputs (default: those of `metro depth`; ``--outputs depth,png16`` as in the issue's GPU target) are written
to a temporary folder and deleted after each run.

Run: .venv/bin/python benchmarks/bench_throughput.py [--photos 64] [--models vit-small,vit-large]
     [--precisions fp32,fp16] [--device auto] [--weights FILE] [--compare] [--threads 2] [--batch-size 8]
Without --weights the seeded stand-in weights of ../shared are used (same cost as the official ones).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchlib import SHARED, seeded_checkpoint

#: Real phone photos of 8-16 MP (JPEG and HEIC/HEIF), relative to ../shared/exif-samples.
SOURCES = (
    "heic/mobile/iphone_13_pro_max.HEIC",  # 12.2 MP
    "jpg/mobile/HMD_Nokia_8.3_5G.jpg",  # 9.1 MP
    "heic/mobile/HMD_Nokia_8.3_5G.heif",  # 15.9 MP
    "jpg/mobile/jolla.jpg",  # 8.0 MP
    "heic/IMG_5195.HEIC",  # 8.5 MP
    "jpg/hdr/iphone_hdr_NO.jpg",  # 8.0 MP
    "heic/mobile/HMD_Nokia_8.3_5G_hdr.heif",  # 15.9 MP
    "jpg/hdr/iphone_hdr_YES.jpg",  # 8.0 MP
)


def make_folder(folder: Path, count: int) -> list[Path]:
    """``count`` photos copied (cycled) from :data:`SOURCES` into ``folder``."""
    root = SHARED / "exif-samples"
    sources = [root / s for s in SOURCES if (root / s).is_file()]
    if not sources:
        raise SystemExit(f"{root} has none of the benchmark photos: this benchmark needs ../shared")
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(count):
        src = sources[i % len(sources)]
        dst = folder / f"p{i:04d}{src.suffix.lower()}"
        shutil.copyfile(src, dst)
        photos.append(dst)
    return photos


def rss_mb() -> float:
    """The current resident set of this process (MB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def heap_mb() -> float:
    """Bytes in the C heaps of all threads (glibc ``mallinfo2().arena``, MB); NaN elsewhere."""
    import ctypes

    class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2: all ten fields (returned by value)
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        return libc.mallinfo2().arena / 1e6
    except (OSError, AttributeError):
        return float("nan")


def timings(out_dir: Path) -> dict[str, float]:
    """Sums of the per-stage seconds in the sidecars of ``out_dir``."""
    total: dict[str, float] = {}
    for sidecar in out_dir.glob("*.json"):
        for stage, seconds in json.loads(sidecar.read_text())["timings_s"].items():
            total[stage] = total.get(stage, 0.0) + float(seconds)
    return total


def run_batch(
    runner, plan, pipelined: bool, batch_size: int = 1
) -> tuple[float, list[float], list[float], int]:
    """Wall seconds, RSS and C heap after each photo (MB), failures."""
    rss: list[float] = []
    heap: list[float] = []
    failed = 0
    start = time.perf_counter()
    if pipelined:
        for outcome in runner.run_many(plan, batch_size=batch_size):
            failed += outcome.error is not None
            rss.append(rss_mb())
            heap.append(heap_mb())
    else:
        for item in plan:
            try:
                runner.run(*item)
            except Exception:
                failed += 1
            rss.append(rss_mb())
            heap.append(heap_mb())
    return time.perf_counter() - start, rss, heap, failed


def report(
    label: str,
    n: int,
    wall: float,
    stages: dict[str, float],
    rss: list[float],
    heap: list[float],
    failed: int,
) -> None:
    forward = stages.get("forward", 0.0)
    model = forward + stages.get("preprocess", 0.0) + stages.get("postprocess", 0.0)
    quarter = max(1, len(rss) // 4)
    failures = f", {failed} failed" if failed else ""
    print(
        f"  {label:10s} {n / wall:6.3f} photos/s ({wall:7.1f} s for {n}{failures})"
        f" | forward {forward:6.1f} s = {forward / wall:4.0%} busy, model thread {model / wall:4.0%}"
        f" | forward-only {n / forward if forward else float('nan'):6.3f} photos/s"
        f" | outside the forward {wall - forward:6.1f} s ({(wall - forward) / n:5.2f} s a photo)"
        f" | decode {stages.get('load_photo', 0.0):5.1f} s"
        f" | RSS max first quarter {max(rss[:quarter]):6.0f} MB, last quarter {max(rss[-quarter:]):6.0f} MB,"
        f" peak {max(rss):6.0f} MB"
        f" | C heaps first quarter {max(heap[:quarter]):5.0f} MB, last {max(heap[-quarter:]):5.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=64, help="photos in the folder (>= 64 for the issue)")
    parser.add_argument("--models", default="vit-small", help="comma-separated presets")
    parser.add_argument("--precisions", default="fp32", help="comma-separated precisions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint (one model only)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--outputs", default="depth,normal,confidence,preview,png16")
    parser.add_argument("--compare", action="store_true", help="also run photos one after another")
    parser.add_argument("--batch-size", type=int, default=1, help="photos per forward (pipelined mode)")
    parser.add_argument(
        "--input-size",
        default=None,
        help="H,W network input instead of the preset's (torch only): a quick check of the overlap and of "
        "flat memory on a slow CPU; the rates are then not the preset's",
    )
    args = parser.parse_args()

    from metrocli.io.maps import OutputOptions
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.depth import DepthRunner
    from metrocli.pipeline.engine import io_threads
    from metrocli.pipeline.inputs import plan_stems
    from metrocli.pipeline.provider import FocalMode, ModelDepth

    options = OutputOptions.parse(args.outputs)
    with tempfile.TemporaryDirectory(prefix="metro-throughput-") as tmp:
        photos = make_folder(Path(tmp) / "photos", args.photos)
        plan = plan_stems(photos)
        print(
            f"{len(photos)} photos ({len(SOURCES)} sources, 8-16 MP JPEG/HEIC); outputs {args.outputs}; "
            f"batch size {args.batch_size}"
        )
        for name in args.models.split(","):
            weights = args.weights or seeded_checkpoint(name)
            for precision in args.precisions.split(","):
                spec = ModelSpec(name, weights, args.device, precision, args.threads)  # type: ignore[arg-type]
                provider = ModelDepth(spec, FocalMode())
                t0 = time.perf_counter()
                provider.prepare()
                if args.input_size:
                    import dataclasses

                    model = provider.model()
                    size = tuple(int(v) for v in args.input_size.split(","))
                    model.preset = dataclasses.replace(model.preset, input_size=size)
                load_s = time.perf_counter() - t0
                warm = DepthRunner(provider, Path(tmp) / "warm", options=options)
                t0 = time.perf_counter()
                warm.run(photos[0], "warm")
                print(
                    f"{name} {provider.precision} on {provider.device}: load {load_s:.1f} s, "
                    f"warm-up photo {time.perf_counter() - t0:.1f} s; "
                    f"{io_threads(provider.device)} loader and writer threads each"
                )
                shutil.rmtree(Path(tmp) / "warm")
                modes = [("pipelined", True)] + ([("sequential", False)] if args.compare else [])
                for label, pipelined in modes:
                    out = Path(tmp) / label
                    runner = DepthRunner(provider, out, force=True, options=options)
                    wall, rss, heap, failed = run_batch(runner, plan, pipelined, args.batch_size)
                    report(label, len(plan), wall, timings(out), rss, heap, failed)
                    shutil.rmtree(out)


if __name__ == "__main__":
    main()
