"""Multi-photo registration: success, accuracy and time per rendered case, and how time grows with N.

Cases (:mod:`metrocli.synth.trajectories`): textures rich / checker / tiles / plain, trajectories orbit /
walk / pan, exact depth ("exact") or a monocular model's errors ("model": ±8 % scale per photo, ±3 % smooth
distortion), mixed lenses (13/26/77 mm) with one portrait photo. Each line prints the registered views,
views with a rotation error over 5° (must be 0), the largest and median rotation error, the median surface
error (each view's pixels placed with its estimated pose and scale against their true positions), the
verified / tried pairs and the registration time. Rendering is not timed.

Run: .venv/bin/python benchmarks/bench_register.py [--n 12] [--sizes 6,12,24,48,96] [--quick] [--model-all]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def run_case(texture: str, kind: str, n: int, depth: str, *, lenses=(26.0,), portrait=(), size=(480, 360)):
    from metrocli.geometry.posegraph import register_frames
    from metrocli.geometry.registration import Frame
    from metrocli.synth.trajectories import model_like_depth, pose_errors, render_sequence

    seq = render_sequence(
        texture, kind, n, width=size[0], height=size[1], lenses_mm=tuple(lenses), portrait=tuple(portrait)
    )
    depths = [
        model_like_depth(r.depth_m, 100 + k)[0] if depth == "model" else r.depth_m
        for k, r in enumerate(seq.renders)
    ]
    frames = [
        Frame(nm, r.rgb, d, r.intrinsics) for nm, r, d in zip(seq.names, seq.renders, depths, strict=True)
    ]
    t0 = time.perf_counter()
    reg = register_frames(frames, estimate_scale=depth == "model")
    seconds = time.perf_counter() - t0
    err = pose_errors(
        [r.pose for r in seq.renders],
        depths,
        [r.intrinsics for r in seq.renders],
        reg.reference,
        reg.poses,
        reg.scales,
        true_depths_m=[r.depth_m for r in seq.renders],
        fields={k: reg.correction(k, depths[k].shape) for k in reg.poses},
    )
    return reg, err, seconds


def line(label: str, n: int, reg, err, seconds: float) -> str:
    rot = list(err.rotation_deg.values())
    wrong = sum(v > 5.0 for v in rot)
    ok = sum(p.ok for p in reg.pairs)
    return (
        f"{label:28s} {len(reg.poses):3d}/{n:<3d} wrong {wrong:2d}  rot max {max(rot):6.2f}° "
        f"median {np.median(rot):5.2f}°  surface {100 * err.surface_median_m:5.1f} cm  "
        f"pairs {ok:3d}/{len(reg.pairs):<4d} {seconds:7.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="views per case")
    parser.add_argument("--sizes", default="6,12,24,48,96", help="N for the scaling run (rich walk)")
    parser.add_argument("--quick", action="store_true", help="orbit cases and N <= 24 only")
    parser.add_argument("--no-cases", action="store_true", help="only the scaling run")
    parser.add_argument("--no-scaling", action="store_true", help="only the cases")
    parser.add_argument(
        "--model-all", action="store_true", help="model-like depth on every texture and trajectory too"
    )
    args = parser.parse_args()

    if not args.no_cases:
        cases(args.n, ("orbit",) if args.quick else ("orbit", "walk", "pan"), model_all=args.model_all)
    if not args.no_scaling:
        sizes = [int(v) for v in args.sizes.split(",")]
        scaling([v for v in sizes if v <= 24] if args.quick else sizes)


def cases(n: int, trajectories: tuple[str, ...], *, model_all: bool = False) -> None:
    print(f"# cases, N = {n}, 480 x 360")
    for kind in trajectories:
        for texture in ("rich", "checker", "tiles", "plain"):
            reg, err, s = run_case(texture, kind, n, "exact")
            print(line(f"{texture} {kind} exact", n, reg, err, s), flush=True)
    textures = ("rich", "checker", "tiles", "plain") if model_all else ("rich", "checker")
    for kind in trajectories if model_all else ("orbit",):
        for texture in textures:
            reg, err, s = run_case(texture, kind, n, "model")
            print(line(f"{texture} {kind} model", n, reg, err, s), flush=True)
    reg, err, s = run_case("rich", "orbit", n, "exact", lenses=(13.0, 26.0, 77.0), portrait=(4,))
    print(line("rich orbit lenses 13/26/77", n, reg, err, s), flush=True)


def scaling(sizes: list[int]) -> None:
    print("# scaling: rich walk, exact depth")
    times = {}
    for n in sizes:
        reg, err, s = run_case("rich", "walk", n, "exact")
        times[n] = s
        print(line(f"rich walk N={n}", n, reg, err, s), flush=True)
    if 12 in times and 48 in times:
        print(f"time(48) / time(12) = {times[48] / times[12]:.2f} (target <= 3)")
    if len(times) >= 2:
        ns = np.array(sorted(times))
        slope = np.polyfit(np.log(ns), np.log([times[k] for k in ns]), 1)[0]
        print(f"log-log slope of time against N: {slope:.2f} (1 = linear, 2 = all pairs)")


if __name__ == "__main__":
    main()
