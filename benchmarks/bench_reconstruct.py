"""Multi-view reconstruction time: 6 photos at 1 MP with sensor depth, and the cost per added photo (3 vs 6).

Renders the six room views of :mod:`metrocli.synth.multiview` at 1152 x 864 (1.0 MP, one stored
with orientation 6), writes them as phone JPEGs with 16-bit depth PNGs, and times
:func:`metrocli.pipeline.multiview.reconstruct_folder` (load + register + fuse + write; rendering is not
timed) on the first 3 and on all 6 photos. Times (wall clock and CPU seconds of this process, all threads) are
the best of ``--repeat`` runs; they are also given in
units of ``../shared/bench/calib.py`` (a fixed torch workload) when that file is present, so that machines
can be compared.

Run: .venv/bin/python benchmarks/bench_reconstruct.py [--repeat 2] [--width 1152 --height 864]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import calibrate_if_available


def calibration_unit() -> float | None:
    """Seconds of the shared calibration workload (2 threads) on this machine, or None when it is absent."""
    import torch

    torch.set_num_threads(2)
    return calibrate_if_available()


def run(folder: Path, out: Path, repeat: int):
    from metrocli.pipeline.multiview import MultiviewOptions, reconstruct_folder
    from metrocli.pipeline.provider import SensorDepth

    best, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = reconstruct_folder(folder, out, SensorDepth(folder), MultiviewOptions(force=True))
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1152)
    parser.add_argument("--height", type=int, default=864)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import open3d as o3d

    from metrocli.synth import room_scene
    from metrocli.synth.multiview import (
        ROOM_VIEWS,
        render_views,
        scene_metrics,
        to_world,
        write_views,
    )

    renders = render_views(args.width, args.height)
    tmp = Path(tempfile.mkdtemp(prefix="bench-reconstruct-"))
    try:
        times, cpu = {}, {}
        for n in (3, 6):
            folder = tmp / f"views{n}"
            write_views(folder, renders[:n], views=ROOM_VIEWS[:n])
            out = tmp / f"scene{n}.ply"
            times[n], cpu[n], result = run(folder, out, args.repeat)
            stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings_s.items())
            print(
                f"{n} photos at {args.width}x{args.height}: {times[n]:.2f} s wall, {cpu[n]:.2f} s CPU "
                f"({stages}; {result.n_triangles} triangles, voxel {result.voxel_m * 100:.1f} cm)"
            )
        mesh = o3d.io.read_triangle_mesh(tmp / "scene6.ply")
        m = scene_metrics(
            to_world(np.asarray(mesh.vertices), renders[0].pose),
            np.asarray(mesh.triangles),
            room_scene(),
            renders,
        )
        per_photo = (times[6] - times[3]) / 3
        print(
            f"cost per added photo (3 -> 6): {per_photo:.2f} s wall, {(cpu[6] - cpu[3]) / 3:.2f} s CPU "
            "(registration tries every pair, so this grows with the number of photos)"
        )
        print(
            f"6-photo accuracy: median {m.accuracy_median_m * 100:.2f} cm, "
            f"p90 {m.accuracy_p90_m * 100:.2f} cm, "
            f"completeness {m.completeness * 100:.1f} % within {m.tolerance_m * 100:.0f} cm"
        )
        unit = calibration_unit()
        if unit:
            print(
                f"calibration unit {unit * 1e3:.1f} ms: 6 photos = {times[6] / unit:.0f} units, "
                f"3 photos = {times[3] / unit:.0f} units, per added photo = {per_photo / unit:.0f} units"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
