"""Does ``--focal auto`` know when it is wrong? Focal error, silent failures and 2-sigma coverage (issue 15).

Scenes from the project's own ray caster (:mod:`metrocli.synth`): rooms, table-tops, streets and degenerate
views (one wall, the floor), 13-120 mm equivalent lenses (log-uniform), six aspect ratios. Each view is
rendered at the network's working resolution (the content of a 308 x 532 letterboxed input), turned into a
synthetic *model output* and fed through the real post-processing (``metrocli.model.preprocess``: canonical
depth clamped to the decoder's range, de-canonicalised with the default 65 degree focal length, cropped and
bilinearly upsampled to the photo, normals renormalised) and the real ``--focal auto`` step
(``metrocli.pipeline.selfcal.self_calibrate_prediction``).

Synthetic model error (default, from the issue): global depth scale uniform in +-10 %, 5 % (RMS) smooth
multiplicative depth error, 1 % per-pixel depth noise, normal error of 5-15 degrees (RMS) of which half is a
spatially smooth rotation field and half per-pixel noise; both the per-pixel noise and the depth noise are
three times larger within a few pixels of depth or normal edges. ``--exact``: exact depth and normals.

Figures: median / p90 of |focal error| (the focal length the step *returns*: the fallback when it is not
trusted, or an uncertain estimate combined with it), the share of *silent* errors above 25 % (not flagged:
no fallback and no warning), the 2-sigma
coverage (``|log(f / f_true)| <= 2 * sigma_f / f``, sigma of the returned focal; an infinite sigma counts as
covering) and the share of cases flagged. ``--quick`` runs a few cases (iteration), the full run several
hundred (minutes).

Run: .venv/bin/python benchmarks/bench_selfcal_honest.py [--quick] [--exact] [--cases N] [--seed S] [-v]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

ASPECTS = ((4, 3), (3, 4), (16, 9), (9, 16), (1, 1), (3, 2))
KINDS = ("room", "table", "street", "degenerate")
#: Network input (H, W): half the ViT size, to keep the benchmark fast; the post-processing is the same.
INPUT_SIZE = (308, 532)
#: Long side of the synthetic photos (px).
PHOTO_LONG_SIDE = 768
#: The decoder's canonical depth range (metres at the canonical focal of 1000 px), ViT presets.
CANONICAL_RANGE_M = (0.1, 200.0)


@dataclass(frozen=True)
class Case:
    kind: str
    aspect: tuple[int, int]
    f35_mm: float
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    seed: int


def _room_case(rng: np.random.Generator) -> tuple[tuple, tuple]:
    eye = (rng.uniform(0.4, 3.6), rng.uniform(0.3, 1.6), rng.uniform(1.1, 1.9))
    target = (rng.uniform(0.4, 3.6), rng.uniform(2.6, 4.9), rng.uniform(0.2, 1.6))
    return eye, target


def _table_case(rng: np.random.Generator) -> tuple[tuple, tuple]:
    # The table stands near (1.9, 2.9), top at 0.75 m: look down at it from a standing position.
    ang = rng.uniform(0, 2 * math.pi)
    dist = rng.uniform(0.6, 1.6)
    eye = (1.9 + dist * math.cos(ang), 2.9 + dist * math.sin(ang), rng.uniform(1.2, 1.8))
    eye = (float(np.clip(eye[0], 0.2, 3.8)), float(np.clip(eye[1], 0.2, 4.8)), eye[2])
    target = (1.9 + rng.uniform(-0.3, 0.3), 2.9 + rng.uniform(-0.3, 0.3), 0.75)
    return eye, target


def _street_case(rng: np.random.Generator) -> tuple[tuple, tuple]:
    eye = (rng.uniform(-8.0, 8.0), rng.uniform(-12.0, -3.0), rng.uniform(1.3, 1.8))
    target = (eye[0] + rng.uniform(-6.0, 6.0), rng.uniform(0.0, 6.0), rng.uniform(0.3, 9.0))  # high: sky
    return eye, target


def _degenerate_case(rng: np.random.Generator) -> tuple[tuple, tuple]:
    if rng.uniform() < 0.5:  # one wall (the far wall, y = 5), close, at an angle
        eye = (rng.uniform(1.0, 3.0), rng.uniform(3.4, 4.0), rng.uniform(1.4, 2.2))
        target = (eye[0] + rng.uniform(-1.0, 1.0), 5.0, eye[2] + rng.uniform(-0.3, 0.3))
    else:  # the bare floor in front of the far wall, looking down
        eye = (rng.uniform(0.8, 1.2), rng.uniform(0.5, 1.0), rng.uniform(1.2, 1.7))
        target = (eye[0] + rng.uniform(-0.3, 0.3), eye[1] + rng.uniform(0.3, 1.0), 0.0)
    return eye, target


_MAKERS = {"room": _room_case, "table": _table_case, "street": _street_case, "degenerate": _degenerate_case}


def make_cases(n: int, seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)] if i % 8 != 7 else "degenerate"
        aspect = ASPECTS[int(rng.integers(len(ASPECTS)))]
        f35 = float(math.exp(rng.uniform(math.log(13.0), math.log(120.0))))
        eye, target = _MAKERS[kind](rng)
        out.append(Case(kind, aspect, f35, eye, target, seed * 100_003 + i))
    return out


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, max_cycles: float = 2.5) -> np.ndarray:
    """Zero-mean, unit-RMS random field of a few sinusoids of up to ``max_cycles`` cycles per long side."""
    h, w = shape
    side = max(h, w)
    yy, xx = np.mgrid[0:h, 0:w] / side
    field = np.zeros(shape)
    for _ in range(8):
        freq = rng.uniform(0.3, max_cycles)
        ang = rng.uniform(0, 2 * math.pi)
        field += rng.normal() * np.sin(
            2 * math.pi * freq * (math.cos(ang) * xx + math.sin(ang) * yy) + rng.uniform(0, 6.3)
        )
    field -= field.mean()
    return field / max(float(np.sqrt(np.mean(field**2))), 1e-12)


def edge_factor(depth: np.ndarray, normal: np.ndarray, width_px: float = 3.0) -> np.ndarray:
    """1 far from depth / normal edges, up to 3 on them (decaying over ``width_px``)."""
    from scipy.ndimage import distance_transform_edt

    valid = depth > 0
    edge = np.zeros(depth.shape, bool)
    for axis in (0, 1):
        d1 = np.diff(depth, axis=axis)
        n1 = np.sum(np.diff(normal, axis=axis) ** 2, -1)
        e = (np.abs(d1) > 0.03 * np.minimum(np.delete(depth, 0, axis), np.delete(depth, -1, axis))) | (
            n1 > 0.1
        )
        pad = [(0, 0), (0, 0)]
        pad[axis] = (0, 1)
        edge |= np.pad(e, pad)
    edge |= ~valid
    dist = distance_transform_edt(~edge)
    return 1.0 + 2.0 * np.exp(-dist / width_px)


def rotate_normals(normal: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Rotate unit normals by small rotation vectors ``omega`` (H, W, 3, radians), renormalised."""
    angle = np.linalg.norm(omega, axis=-1, keepdims=True)
    axis = omega / np.maximum(angle, 1e-12)
    c, s = np.cos(angle), np.sin(angle)
    out = normal * c + np.cross(axis, normal) * s + axis * np.sum(axis * normal, -1, keepdims=True) * (1 - c)
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)


def model_output(depth: np.ndarray, normal: np.ndarray, rng: np.random.Generator, exact: bool) -> tuple:
    """Synthetic network output (depth at the true focal, normals) with the default model error."""
    if exact:
        return depth, normal
    hit = depth > 0
    ef = edge_factor(depth, normal)
    scale = 1.0 + rng.uniform(-0.10, 0.10)
    d = (
        depth
        * scale
        * (1.0 + 0.05 * smooth_field(depth.shape, rng))
        * (1.0 + 0.01 * ef * rng.normal(size=depth.shape))
    )
    theta = math.radians(rng.uniform(5.0, 15.0))
    # A rotation vector with RMS angle t has per-component sigma t / sqrt(3).
    smooth = np.stack([smooth_field(depth.shape, rng) for _ in range(3)], -1) * (
        theta / math.sqrt(2) / math.sqrt(3)
    )
    iid = rng.normal(size=(*depth.shape, 3)) * (theta / math.sqrt(2) / math.sqrt(3)) * ef[..., None]
    n = rotate_normals(normal, smooth + iid)
    n[np.sum(n * normal, -1) < 0] *= -1  # keep them facing the camera
    return np.where(hit, d, 0.0), np.where(hit[..., None], n, 0.0)


def run_case(case: Case, exact: bool):
    import torch

    from metrocli.camera.focal import default_focal_px
    from metrocli.camera.intrinsics import centred
    from metrocli.model.preprocess import CANONICAL_FOCAL_PX, metric_depth, photo_normals, prepare
    from metrocli.pipeline.selfcal import self_calibrate_prediction
    from metrocli.prediction import Prediction
    from metrocli.synth import focal_px_for_35mm, look_at, render
    from metrocli.synth.scene import room_scene, street_scene

    a, b = case.aspect
    pw, ph = (
        (PHOTO_LONG_SIDE, round(PHOTO_LONG_SIDE * b / a))
        if a >= b
        else (round(PHOTO_LONG_SIDE * a / b), PHOTO_LONG_SIDE)
    )
    f_true = focal_px_for_35mm(pw, ph, case.f35_mm)
    canon = prepare(np.zeros((ph, pw, 3), np.uint8), INPUT_SIZE)
    top, bottom, left, right = canon.pad
    nh, nw = INPUT_SIZE[0] - top - bottom, INPUT_SIZE[1] - left - right
    s = canon.scale
    k_net = centred(nw, nh, f_true * s, "user")
    scene = street_scene() if case.kind == "street" else room_scene()
    view = render(scene, k_net, look_at(case.eye, case.target))
    rng = np.random.default_rng(case.seed)
    depth, normal = model_output(view.depth_m.astype(np.float64), view.normal.astype(np.float64), rng, exact)
    # The network predicts canonical depth (focal 1000 px at the input resolution), clamped to its range;
    # the sky (no hit) sits at the far clamp.
    canonical = np.where(depth > 0, depth * CANONICAL_FOCAL_PX / (f_true * s), CANONICAL_RANGE_M[1])
    canonical = np.clip(canonical, *CANONICAL_RANGE_M)
    normal = np.where((depth > 0)[..., None], normal, np.array([0.0, 0.0, -1.0]))  # sky: facing the camera
    full_d = np.zeros(INPUT_SIZE, np.float32)
    full_n = np.zeros((3, *INPUT_SIZE), np.float32)
    full_d[top : top + nh, left : left + nw] = canonical
    full_n[:, top : top + nh, left : left + nw] = normal.transpose(2, 0, 1)
    assumed = default_focal_px(pw, ph)
    with torch.inference_mode():
        d_photo = metric_depth(torch.from_numpy(full_d)[None, None], canon, assumed)[0, 0].numpy()
        n_photo = photo_normals(torch.from_numpy(full_n)[None], canon)[0].numpy()
    pred = Prediction(
        depth=np.ascontiguousarray(d_photo, np.float32),
        normal=np.ascontiguousarray(n_photo, np.float32),
        confidence=np.ones((ph, pw), np.float32),
        normal_confidence=None,
        intrinsics=centred(pw, ph, assumed, "default"),
        model="vit-small",
    )
    t0 = time.perf_counter()
    result = self_calibrate_prediction(pred)
    seconds = time.perf_counter() - t0
    sky = float(np.mean(view.depth_m <= 0))
    return f_true, result, seconds, sky


def summarise(rows: list[dict], label: str) -> None:
    err = np.array([abs(r["err"]) for r in rows])
    silent = np.array([abs(r["err"]) > 0.25 and not r["flagged"] for r in rows])
    covered = np.array([abs(math.log1p(r["err"])) <= 2 * r["sigma_rel"] for r in rows])
    flagged = np.array([r["flagged"] for r in rows])
    trusted = ~flagged
    tr_err = err[trusted]
    print(
        f"{label:11s} n={len(rows):3d}  median |err| {np.median(err):6.1%}  "
        f"p90 {np.percentile(err, 90):6.1%}  "
        f"silent>25% {silent.mean():6.1%}  2-sigma coverage {covered.mean():6.1%}  "
        f"flagged {flagged.mean():6.1%}"
        + (
            f"  | trusted: median {np.median(tr_err):6.1%} coverage {covered[trusted].mean():6.1%}"
            if trusted.any()
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 cases (iteration)")
    parser.add_argument("--exact", action="store_true", help="exact model outputs (no error)")
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    cases = make_cases(16 if args.quick else args.cases, args.seed)
    rows = []
    total_s = 0.0
    for case in cases:
        f_true, res, seconds, sky = run_case(case, args.exact)
        total_s += seconds
        # sigma of the returned focal length (issue 15's focal_sigma_px; before it: the estimate's own)
        sigma_px = getattr(res, "focal_sigma_px", res.uncertainty_px)
        sigma_rel = sigma_px / res.focal_px if math.isfinite(sigma_px) else math.inf
        flagged = bool(res.fallback or res.warning)
        row = {
            "kind": case.kind,
            "err": res.focal_px / f_true - 1.0,
            "sigma_rel": sigma_rel,
            "flagged": flagged,
        }
        rows.append(row)
        if args.verbose:
            print(
                f"{case.kind:10s} {case.aspect[0]}:{case.aspect[1]:<2d} {case.f35_mm:6.1f} mm  "
                f"true {f_true:7.1f}  got {res.focal_px:7.1f} (est {res.estimate_px:7.1f}) "
                f"err {row['err']:+7.1%}  sigma {sigma_rel:6.1%}  {'FLAG ' if flagged else '     '}"
                f"sky {sky:4.0%} lev {res.leverage:.2f} "
                f"plane {getattr(res, 'plane_share', 0.0):.2f} "
                f"{(res.warning or '')[:90]}",
                flush=True,
            )
    mode = "exact" if args.exact else "model-like"
    print(
        f"--- {mode} outputs, {len(rows)} cases, self-calibration {total_s / len(rows) * 1e3:.0f} ms per case"
    )
    summarise(rows, "all")
    for kind in KINDS:
        sel = [r for r in rows if r["kind"] == kind]
        if sel:
            summarise(sel, kind)


if __name__ == "__main__":
    main()
