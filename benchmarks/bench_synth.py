"""Render time of the synthetic scenes (metrocli.synth): 640x480 and 1280x960, room and street.

Run: .venv/bin/python benchmarks/bench_synth.py
"""

from __future__ import annotations

import time

from metrocli.synth import intrinsics_for_lens, look_at, render, room_scene, street_scene


def best_of(fn, n: int = 3) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (this process, all threads) of ``n`` calls of ``fn``.

    On a busy machine the wall time is inflated by other processes; the CPU time is not.
    """
    best_wall = best_cpu = float("inf")
    for _ in range(n):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def main() -> None:
    cases = [
        ("room", room_scene(), look_at((1.0, 0.45, 1.55), (2.0, 2.9, 0.65))),
        ("street", street_scene(), look_at((-5.0, -6.5, 1.6), (0.5, 0.5, 1.0))),
    ]
    render(cases[0][1], intrinsics_for_lens(64, 48, 26), cases[0][2])  # warm-up (imports open3d)
    for name, scene, pose in cases:
        for w, h, ss in ((640, 480, 1), (1280, 960, 1), (1280, 960, 2)):
            k = intrinsics_for_lens(w, h, 26)
            wall, cpu = best_of(
                lambda k=k, ss=ss, scene=scene, pose=pose: render(scene, k, pose, supersample=ss)
            )
            print(f"{name:<7} {w}x{h} supersample {ss}: wall {wall:6.2f} s   cpu {cpu:6.2f} s")


if __name__ == "__main__":
    main()
