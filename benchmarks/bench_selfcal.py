"""Cost of focal self-calibration (``--focal auto``) against one model forward (target: <= 5 %).

Maps: an analytic room (boxes ray-cast in numpy) with model-like noise, (1) at the model's output resolution
616 x 1064 and (2) as a 12 MP photo's prediction (3024 x 4032: the model output upsampled to the photo,
which self-calibration block-averages down internally). Times are the best of N runs, also expressed in
calibration units of ``../shared/bench/calib.py`` (``calibrate()``); the forward reference is ViT-S at
616 x 1064 = 33.7 units (6.8 s on the reference machine), or measured with ``--measure-forward`` (random
weights: same cost). On a shared, loaded machine the calibration unit (torch, 2 threads) inflates more than
the single-threaded numpy work, so the CPU time against the reference 6.8 s forward is printed too.

Run: .venv/bin/python benchmarks/bench_selfcal.py [--measure-forward]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from benchlib import OFFICIAL_VIT_S_S, OFFICIAL_VIT_S_UNITS, calibrate

from metrocli.geometry.selfcal import self_calibrate

FORWARD_UNITS_VIT_S = OFFICIAL_VIT_S_UNITS  # ViT-S forward at 616 x 1064, in calibration units
REFERENCE_FORWARD_S = OFFICIAL_VIT_S_S  # the same forward in seconds on the reference machine


def _yaw(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def room_maps(width: int, height: int, focal_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact z-depth (H, W) and camera-facing normals (H, W, 3) of a room with boxes (world y down)."""
    boxes = [  # centre, size, yaw, inside
        ((0.0, -1.5, 0.0), (8.0, 3.0, 10.0), 0.0, True),
        ((1.0, -0.5, 1.0), (1.2, 1.0, 0.8), 30.0, False),
        ((-1.5, -0.4, 2.5), (0.8, 0.8, 0.8), -20.0, False),
        ((2.0, -0.9, 3.0), (1.0, 1.8, 0.6), 50.0, False),
    ]
    eye, target = np.array([-2.5, -1.6, -4.0]), np.array([2.5, -0.8, 3.5])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    rot = np.stack([x, np.cross(z, x), z], axis=1)
    u = (np.arange(width) - width / 2.0) / focal_px
    v = (np.arange(height) - height / 2.0) / focal_px
    rays_c = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), -1)
    rays_w = rays_c @ rot.T
    best_t = np.full((height, width), np.inf)
    best_n = np.zeros((height, width, 3))
    for centre, size, yaw, inside in boxes:
        r = _yaw(yaw)
        o = (eye - np.asarray(centre)) @ r
        d = rays_w @ r
        half = np.asarray(size) / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-half - o) / d, (half - o) / d
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        if inside:
            t, axis = tmax.min(-1), tmax.argmin(-1)
        else:
            enter, leave = tmin.max(-1), tmax.min(-1)
            t, axis = np.where((enter <= leave) & (enter > 0), enter, np.inf), tmin.argmax(-1)
        n = np.zeros((height, width, 3))
        np.put_along_axis(n, axis[..., None], 1.0, axis=-1)
        hit = t < best_t
        best_t[hit], best_n[hit] = t[hit], (n @ r.T)[hit]
    normal = best_n @ rot
    normal[np.sum(normal * rays_c, -1) > 0] *= -1
    return best_t.astype(np.float32), normal.astype(np.float32)


def model_like(depth: np.ndarray, normal: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 % smooth multiplicative depth error and 3 degrees of normal noise."""
    rng = np.random.default_rng(seed)
    h, w = depth.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    field = sum(np.sin(2 * math.pi * (0.7 * xx + 0.4 * yy) * f + f) for f in (0.5, 1.1, 1.7))
    depth = depth * (1.0 + 0.03 * field / np.abs(field).max())
    noise = rng.normal(0.0, math.radians(3.0) / math.sqrt(2.0), normal.shape).astype(np.float32)
    normal = normal + noise - np.sum(noise * normal, -1, keepdims=True) * normal
    return depth.astype(np.float32), normal / np.linalg.norm(normal, axis=-1, keepdims=True)


def best_of(fn, n: int, clock=time.perf_counter) -> float:
    best = math.inf
    for _ in range(n):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def calibration_unit() -> float:
    return calibrate()


def measure_forward() -> float:
    import torch

    from metrocli.model.factory import build_model

    model = build_model("vit-small").eval()
    x = torch.randn(1, 3, 616, 1064)
    with torch.inference_mode():
        model.forward_canonical(x)
        return best_of(lambda: model.forward_canonical(x), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure-forward", action="store_true", help="time a ViT-S forward here too")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    unit = calibration_unit()
    forward_units = FORWARD_UNITS_VIT_S
    if args.measure_forward:
        forward_units = measure_forward() / unit
    forward_s = forward_units * unit
    print(f"calibration unit             {unit * 1e3:8.1f} ms")
    print(f"ViT-S forward 616x1064       {forward_s:8.2f} s   ({forward_units:.1f} units)")

    cases = []
    f_true = 0.8 * 1064
    depth, normal = room_maps(1064, 616, f_true)
    cases.append(("616x1064 (model output)", depth, normal, f_true, 1064, 616))
    f_small = 0.8 * 1008
    d_small, n_small = room_maps(1008, 756, f_small)
    d_big, n_big = (np.repeat(np.repeat(a, 4, axis=0), 4, axis=1) for a in (d_small, n_small))
    cases.append(("3024x4032 (12 MP prediction)", d_big, n_big, 4 * f_small, 4032, 3024))
    for name, depth, normal, focal, width, height in cases:
        depth, normal = model_like(depth, normal)
        assumed = 1.25 * focal
        depth = depth * np.float32(assumed / focal)  # what the model reports at the assumed focal
        conf = np.ones(depth.shape, np.float32)
        result = None

        def run(depth=depth, normal=normal, assumed=assumed, width=width, height=height, conf=conf):
            nonlocal result
            result = self_calibrate(
                depth,
                normal,
                width=width,
                height=height,
                cx=width / 2,
                cy=height / 2,
                assumed_focal_px=assumed,
                confidence=conf,
                normal_confidence=conf,
            )

        seconds = best_of(run, args.repeats)
        cpu = best_of(run, args.repeats, time.process_time)  # single-threaded numpy: ~ wall time when idle
        assert result is not None
        print(
            f"self-calibration {name:28s} {seconds * 1e3:7.1f} ms = {seconds / unit:5.2f} units = "
            f"{seconds / forward_s:6.2%} of a forward (target <= 5 %); CPU {cpu * 1e3:6.1f} ms = "
            f"{cpu / REFERENCE_FORWARD_S:.2%} of the reference {REFERENCE_FORWARD_S:g} s forward; "
            f"focal error {result.focal_px / focal - 1:+.2%}, {result.n_pixels} px"
        )


if __name__ == "__main__":
    main()
