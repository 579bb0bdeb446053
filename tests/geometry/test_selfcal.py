"""Focal-length self-calibration from depth–normal consistency (issue 9) on analytic ray-cast scenes.

The scenes are ray-cast by hand (boxes, the inside of a room) so that depth and normals are exact. The
depth is handed to the method as the model would hand it over: at an *assumed* focal length, i.e. the true
depth times ``assumed_focal / true_focal``.

Noise model ("model-like noise", acceptance 2), every configuration over the fixed seeds :data:`SEEDS`
(0..11, not picked), each seed required to pass:

* normals: 3 degrees RMS angular noise (isotropic in the tangent plane), i.i.d. per pixel;
* depth ("3 % depth noise"), multiplicative ``depth * (1 + e(u, v))`` with ``std(e) = 3 %`` over the image,
  one of
  - ``"smooth"``: four random plane waves of 0.3 to 2 cycles per image side (random directions and phases),
    the low-frequency error of a network's depth (peaks of about 7 %); the hardest and most model-like case,
    because a smooth depth error tilts the depth-derived surfaces like a focal change does;
  - ``"gaussian-field"``: white noise blurred with a Gaussian of 1/8 of the image side (a smooth field that
    is not a sum of a few waves, with some energy above 2 cycles per side);
  - ``"iid"``: independent per pixel;
  - ``"smooth+iid"``: the smooth field plus 1 % i.i.d. per-pixel noise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest

import metrocli
from metrocli.camera.intrinsics import centred
from metrocli.errors import DepthMapError
from metrocli.geometry.selfcal import SelfCalResult, check_focal, self_calibrate
from metrocli.geometry.selfcal.calibrate import DEFAULT_FOCAL_SIGMA_REL, mask_clamped_depth
from metrocli.prediction import Prediction

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
W, H = 640, 480


# ----------------------------------------------------------------------------------------------- ray caster
@dataclass(frozen=True)
class Box:
    """Axis-aligned box, rotated by ``yaw_deg`` about the world y axis and moved to ``centre``.

    ``inside=True``: the camera is inside (a room): rays hit the far side.
    """

    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw_deg: float = 0.0
    inside: bool = False


def _yaw(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def look_at(eye, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """3x3 camera-to-world rotation, OpenCV axes (x right, y down, z forward); world y points down."""
    eye, target, up = (np.asarray(a, float) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(-up, z)  # right = down x forward
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def render(boxes: list[Box], focal_px: float, eye, rot: np.ndarray, width: int = W, height: int = H):
    """Exact z-depth (H, W) and camera-frame normals facing the camera (H, W, 3) of a scene of boxes."""
    u = np.arange(width) - width / 2.0
    v = np.arange(height) - height / 2.0
    rays_c = np.stack(np.broadcast_arrays(u[None, :] / focal_px, v[:, None] / focal_px, np.ones((1, 1))), -1)
    rays_w = rays_c @ rot.T
    eye = np.asarray(eye, float)
    best_t = np.full((height, width), np.inf)
    best_n = np.zeros((height, width, 3))
    for box in boxes:
        r = _yaw(box.yaw_deg)
        o = (eye - np.asarray(box.centre)) @ r  # into the box frame
        d = rays_w @ r
        half = np.asarray(box.size) / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - o) / d
            t2 = (half - o) / d
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        t_enter, t_exit = tmin.max(-1), tmax.min(-1)
        if box.inside:
            t = t_exit
            axis = tmax.argmin(-1)
        else:
            t = np.where((t_enter <= t_exit) & (t_enter > 0), t_enter, np.inf)
            axis = tmin.argmax(-1)
        n_local = np.zeros((height, width, 3))
        np.put_along_axis(n_local, axis[..., None], 1.0, axis=-1)
        n_world = n_local @ r.T
        hit = t < best_t
        best_t[hit] = t[hit]
        best_n[hit] = n_world[hit]
    depth = best_t  # rays have z = 1 in the camera frame, so t is the z-depth
    normal = best_n @ rot  # world -> camera
    facing = np.sum(normal * rays_c, -1) > 0
    normal[facing] *= -1
    return depth.astype(np.float32), normal.astype(np.float32)


def focal_for_lens(mm_35: float, width: int = W, height: int = H) -> float:
    """Focal length (px) of a 35 mm equivalent lens, diagonal convention."""
    return mm_35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


ROOM = [
    Box((0.0, -1.5, 0.0), (8.0, 3.0, 10.0), inside=True),  # floor at y = 0 (y down), ceiling at y = -3
    Box((1.0, -0.5, 1.0), (1.2, 1.0, 0.8), yaw_deg=30.0),
    Box((-1.5, -0.4, 2.5), (0.8, 0.8, 0.8), yaw_deg=-20.0),
    Box((2.0, -0.9, 3.0), (1.0, 1.8, 0.6), yaw_deg=50.0),
]


def room_view(lens_mm: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A room corner with boxes, framed so that the lens sees oblique walls, floor and box faces."""
    focal = focal_for_lens(lens_mm)
    if lens_mm >= 50:  # telephoto: a rotated box and the floor behind it, from afar
        eye, target = (-2.0, -1.6, -4.0), (1.0, -0.5, 1.0)
    else:
        eye, target = (-2.5, -1.6, -4.0), (2.5, -0.8, 3.5)
    depth, normal = render(ROOM, focal, eye, look_at(eye, target))
    return depth, normal, focal


def street_view(lens_mm: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Ground plane with rotated building blocks."""
    focal = focal_for_lens(lens_mm)
    scene = [
        Box((0.0, 0.5, 0.0), (200.0, 1.0, 200.0)),  # ground, top face at y = 0
        Box((-8.0, -6.0, 30.0), (10.0, 12.0, 20.0), yaw_deg=35.0),
        Box((9.0, -4.0, 25.0), (8.0, 8.0, 12.0), yaw_deg=-25.0),
        Box((1.0, -10.0, 60.0), (14.0, 20.0, 14.0), yaw_deg=10.0),
    ]
    eye = (0.0, -1.7, 0.0)
    target = (0.0, -3.0, 30.0) if lens_mm < 50 else (-6.0, -4.0, 28.0)
    depth, normal = render(scene, focal, eye, look_at(eye, target))
    return depth, normal, focal


def wall_view(lens_mm: float = 26.0) -> tuple[np.ndarray, np.ndarray, float]:
    """A fronto-parallel wall filling the view."""
    focal = focal_for_lens(lens_mm)
    eye = (0.0, -1.5, 0.0)
    depth, normal = render(
        [Box((0.0, -1.5, 3.5), (40.0, 40.0, 1.0))], focal, eye, look_at(eye, (0.0, -1.5, 3.0))
    )
    return depth, normal, focal


# ------------------------------------------------------------------------------------------------- noise
SEEDS = range(12)
DEPTH_NOISE = ("smooth", "gaussian-field", "iid", "smooth+iid")


def smooth_field(shape: tuple[int, int], std: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field of standard deviation ``std``: four random waves, 0.3-2 cycles per image side."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    field = np.zeros(shape)
    for _ in range(4):
        freq = rng.uniform(0.3, 2.0)  # cycles per image side
        angle = rng.uniform(0, 2 * math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        field += np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    return std * field / field.std()


def gaussian_field(shape: tuple[int, int], std: float, rng: np.random.Generator) -> np.ndarray:
    """White noise blurred by a Gaussian of 1/8 of the longer image side, scaled to standard deviation std."""
    sigma = max(shape) / 8.0
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    transfer = np.exp(-2.0 * math.pi**2 * sigma**2 * (fx * fx + fy * fy))  # periodic Gaussian blur
    field = np.fft.irfft2(np.fft.rfft2(rng.normal(size=shape)) * transfer, s=shape)
    return std * field / field.std()


def noisy_depth(depth: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``depth * (1 + e)`` with 3 % depth noise of ``kind`` (see the module docstring)."""
    if kind == "smooth":
        e = smooth_field(depth.shape, 0.03, rng)
    elif kind == "gaussian-field":
        e = gaussian_field(depth.shape, 0.03, rng)
    elif kind == "iid":
        e = rng.normal(0.0, 0.03, depth.shape)
    elif kind == "smooth+iid":
        e = smooth_field(depth.shape, 0.03, rng) + rng.normal(0.0, 0.01, depth.shape)
    else:
        raise ValueError(kind)
    return (depth * (1.0 + e)).astype(np.float32)


def noisy_normals(normal: np.ndarray, sigma_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Perturb unit normals by an isotropic tangent-plane Gaussian of ``sigma_deg`` RMS angle (NaN stays)."""
    valid = np.isfinite(normal).all(axis=-1, keepdims=True)
    normal = np.where(valid, normal, 0.0)
    sigma = math.radians(sigma_deg) / math.sqrt(2.0)  # per tangent axis
    noise = rng.normal(0.0, sigma, normal.shape)
    noise -= np.sum(noise * normal, -1, keepdims=True) * normal  # tangent to the sphere
    out = normal + noise
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / np.linalg.norm(out, axis=-1, keepdims=True)
    return np.where(valid, out, np.nan).astype(np.float32)


def calibrate(depth_true, normal, focal_true, *, assumed=None, cx=None, cy=None, **kwargs) -> SelfCalResult:
    """Run the method on the depth the model would report at an assumed focal length."""
    h, w = depth_true.shape
    assumed = assumed if assumed is not None else focal_for_lens(26.0, w, h) * 1.3
    depth_assumed = depth_true * (assumed / focal_true)
    return self_calibrate(
        depth_assumed,
        normal,
        width=w,
        height=h,
        cx=w / 2.0 if cx is None else cx,
        cy=h / 2.0 if cy is None else cy,
        assumed_focal_px=assumed,
        **kwargs,
    )


@functools.cache
def sample_view(name: str) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """metrocli.synth's view ``name`` at half size: (depth, 0 = no hit; normals, NaN = none; fx; cx; cy)."""
    from metrocli.synth.samples import SAMPLE_VIEWS, render_view

    (view,) = [v for v in SAMPLE_VIEWS if v.name == name]
    _, r = render_view(view, scale=0.5, supersample=1)
    hit = r.depth_m > 0
    depth = np.where(hit, r.depth_m, 0.0).astype(np.float32)
    normal = np.where(hit[..., None], r.normal, np.nan).astype(np.float32)
    k = r.intrinsics
    return depth, normal, k.fx, k.cx, k.cy


def scene(view: str) -> tuple[np.ndarray, np.ndarray, float, float | None, float | None]:
    """``"room-13"``-style analytic views or metrocli.synth sample names -> (depth, normal, fx, cx, cy)."""
    if "-" in view:
        kind, lens = view.split("-")
        depth, normal, focal = VIEWS[kind](float(lens))
        return depth, normal, focal, None, None
    return sample_view(view)


@functools.cache
def noisy_results(view: str, kind: str) -> tuple[tuple[float, float, bool], ...]:
    """(relative focal error, relative uncertainty, fallback) for every seed of :data:`SEEDS`."""
    depth_true, normal_true, focal, cx, cy = scene(view)
    out = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        depth = noisy_depth(depth_true, kind, rng)
        normal = noisy_normals(normal_true, 3.0, rng)
        result = calibrate(depth, normal, focal, cx=cx, cy=cy)
        out.append((result.estimate_px / focal - 1.0, result.uncertainty_px / focal, result.fallback))
    return tuple(out)


# ------------------------------------------------------------------------------------------------- tests
VIEWS = {"room": room_view, "street": street_view}


@pytest.mark.parametrize("lens_mm", [13.0, 26.0, 77.0])
@pytest.mark.parametrize("view", ["room", "street"])
def test_exact_depth_and_normals_recover_focal_within_2_percent(view: str, lens_mm: float) -> None:
    depth, normal, focal = VIEWS[view](lens_mm)
    result = calibrate(depth, normal, focal)
    assert not result.fallback, result.warning
    assert result.warning is None
    assert result.focal_source == "self-calibrated"
    assert abs(result.focal_px / focal - 1) < 0.02, (result.focal_px, focal)
    assert 0 < result.uncertainty_px < 0.03 * focal
    assert result.n_pixels > 1000
    assert result.fov_deg == pytest.approx(math.degrees(2 * math.atan(W / (2 * result.focal_px))))


@pytest.mark.parametrize("assumed", [300.0, 1000.0, 3000.0])
def test_result_does_not_depend_on_assumed_focal(assumed: float) -> None:
    depth, normal, focal = room_view(26.0)
    result = calibrate(depth, normal, focal, assumed=assumed)
    assert abs(result.focal_px / focal - 1) < 0.02


ANALYTIC = [f"{kind}-{lens}" for kind in ("room", "street") for lens in (13, 26, 77)]
#: metrocli.synth's views: main lens (room_01), telephoto (room_03, street_03), ultra-wide (street_02).
SAMPLES = ["room_01", "room_03", "street_02", "street_03"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("view", "kind"),
    # the synth sample views with the hardest (smooth) depth error only
    [(view, kind) for view in ANALYTIC for kind in DEPTH_NOISE] + [(view, "smooth") for view in SAMPLES],
)
def test_model_like_noise_within_5_percent_for_every_seed(view: str, kind: str) -> None:
    """Acceptance 2: 3 % depth noise and 3 degrees of normal noise, all of seeds 0..11 within 5 %."""
    results = noisy_results(view, kind)
    errors = [round(err * 100, 2) for err, _, _ in results]
    assert not any(fallback for _, _, fallback in results), errors
    assert max(abs(e) for e in errors) < 5.0, errors


@pytest.mark.parametrize("kind", ["smooth", "iid"])
@pytest.mark.parametrize("view", [*ANALYTIC, "room_03", "street_03"])
def test_uncertainty_covers_the_error(view: str, kind: str) -> None:
    """The reported one-sigma uncertainty is honest: the error is within 2 sigma for at least 11 of 12 seeds
    and within 3 sigma for all, and the uncertainty stays informative (below 3.5 %)."""
    results = noisy_results(view, kind)
    z = [abs(err) / sigma for err, sigma, _ in results]
    assert sum(v <= 2.0 for v in z) >= len(z) - 1, z
    assert max(z) <= 3.0, z
    assert all(0.0 < sigma < 0.035 for _, sigma, _ in results), results


def test_normal_noise_alone_gives_no_bias() -> None:
    depth, normal_true, focal = room_view(26.0)
    errors = []
    for seed in SEEDS:
        normal = noisy_normals(normal_true, 3.0, np.random.default_rng(seed))
        errors.append(calibrate(depth, normal, focal).focal_px / focal - 1)
    assert max(abs(e) for e in errors) < 0.01, errors


def test_fronto_parallel_wall_is_flat_and_falls_back() -> None:
    depth, normal, focal = wall_view()
    assumed = 900.0
    result = calibrate(depth, normal, focal, assumed=assumed)
    assert result.objective_flat
    assert result.fallback
    assert result.focal_px == assumed
    assert result.focal_source == "default"
    assert result.warning is not None and "flat" in result.warning
    assert not math.isfinite(result.uncertainty_px)
    assert result.leverage < 0.01
    assert check_focal(focal, result) == (pytest.approx(float("nan"), nan_ok=True), False)


def test_fronto_parallel_wall_with_noise_is_flat() -> None:
    rng = np.random.default_rng(3)
    depth, normal, focal = wall_view()
    depth = depth * (1.0 + smooth_field(depth.shape, 0.03, rng))
    normal = noisy_normals(normal, 3.0, rng)
    result = calibrate(depth, normal, focal, fallback_focal_px=777.0)
    assert result.objective_flat and result.fallback
    assert result.focal_px == 777.0


def test_samples_cover_fov_range_and_minimum_is_near_truth() -> None:
    depth, normal, focal = room_view(26.0)
    result = calibrate(depth, normal, focal, fov_range_deg=(30.0, 100.0))
    focals = np.array([f for f, _ in result.samples])
    values = np.array([v for _, v in result.samples])
    assert np.all(np.diff(focals) > 0)
    fovs = 2 * np.degrees(np.arctan(W / (2 * focals)))
    assert fovs[0] == pytest.approx(100.0) and fovs[-1] == pytest.approx(30.0)
    assert abs(focals[np.argmin(values)] / focal - 1) < 0.05
    assert values.max() > 10 * values.min()


def test_optimum_outside_fov_range_falls_back_with_warning() -> None:
    depth, normal, focal = room_view(13.0)  # about 100 degrees horizontal FOV
    result = calibrate(depth, normal, focal, fov_range_deg=(20.0, 60.0))
    assert result.fallback and not result.objective_flat
    assert "edge" in result.warning


def test_confidence_weights_ignore_corrupted_region() -> None:
    rng = np.random.default_rng(5)
    depth, normal, focal = room_view(26.0)
    bad = np.zeros(depth.shape, bool)
    bad[:, : W // 3] = True
    normal = normal.copy()
    normal[bad] = noisy_normals(normal[bad], 40.0, rng)
    conf = np.where(bad, 0.0, 1.0).astype(np.float32)
    result = calibrate(depth, normal, focal, confidence=conf)
    assert abs(result.focal_px / focal - 1) < 0.02


def test_lower_resolution_maps_of_the_same_image() -> None:
    depth, normal, focal = room_view(26.0)  # 640 x 480, treat as a 2x downscale of a 1280 x 960 photo
    assumed = 1200.0
    result = self_calibrate(
        depth * (assumed / (2 * focal)),
        normal,
        width=2 * W,
        height=2 * H,
        cx=W,
        cy=H,
        assumed_focal_px=assumed,
    )
    assert abs(result.focal_px / (2 * focal) - 1) < 0.02


def test_too_few_pixels_falls_back() -> None:
    depth = np.zeros((40, 50), np.float32)
    normal = np.full((40, 50, 3), np.nan, np.float32)
    result = self_calibrate(depth, normal, width=50, height=40, cx=25, cy=20, assumed_focal_px=60.0)
    assert result.fallback and result.objective_flat and result.n_pixels == 0
    assert "usable pixels" in result.warning


def test_bad_shapes_raise_depth_map_error() -> None:
    with pytest.raises(DepthMapError):
        self_calibrate(
            np.ones((10, 10)), np.ones((10, 11, 3)), width=10, height=10, cx=5, cy=5, assumed_focal_px=10
        )
    with pytest.raises(DepthMapError):
        self_calibrate(
            np.ones((10, 20)), np.ones((10, 20, 3)), width=10, height=10, cx=5, cy=5, assumed_focal_px=10
        )


def test_check_focal_flags_disagreement_beyond_10_percent() -> None:
    depth, normal, focal = room_view(26.0)
    result = calibrate(depth, normal, focal)
    ratio, off = check_focal(focal, result)
    assert abs(ratio) < 0.02 and not off
    ratio, off = check_focal(focal * 1.25, result)
    assert ratio == pytest.approx(1 / 1.25 - 1, abs=0.02) and off
    ratio, off = check_focal(focal * 0.85, result)
    assert ratio > 0.1 and off


@pytest.mark.parametrize("name", ["room_01", "room_02", "room_03", "street_02", "street_03"])
def test_synth_sample_views_exact_within_2_percent(name: str) -> None:
    """metrocli.synth's shipped views (main, ultra-wide, tele lenses) at half size, exact maps."""
    depth, normal, fx, cx, cy = sample_view(name)
    result = calibrate(depth, normal, fx, assumed=700.0, cx=cx, cy=cy)
    assert not result.fallback, result.warning
    assert abs(result.focal_px / fx - 1) < 0.02, (result.focal_px, fx)


# ------------------------------------------------------------- issue 15: the public API, trusted or not
def test_trusted_estimate_carries_its_sigma_and_no_reason() -> None:
    depth, normal, focal = room_view(26.0)
    result = calibrate(depth, normal, focal)
    assert result.trusted and result.reason is None and result.warning is None
    assert result.focal_sigma_px == result.uncertainty_px
    assert abs(result.focal_px / focal - 1) <= 2 * result.focal_sigma_px / result.focal_px
    d = result.to_dict()
    assert d["trusted"] is True and d["reason"] is None and d["focal_sigma_px"] == result.focal_sigma_px


def test_untrusted_estimate_uses_the_fallback_with_its_wide_sigma() -> None:
    depth, normal, focal = wall_view()
    result = calibrate(depth, normal, focal, fallback_focal_px=700.0)
    assert not result.trusted and result.reason == "flat"
    assert result.focal_px == 700.0
    assert result.focal_sigma_px == pytest.approx(700.0 * DEFAULT_FOCAL_SIGMA_REL)
    assert result.to_dict()["focal_sigma_px"] == pytest.approx(700.0 * DEFAULT_FOCAL_SIGMA_REL)
    stated = calibrate(depth, normal, focal, fallback_focal_px=700.0, fallback_sigma_rel=0.03)
    assert stated.focal_sigma_px == pytest.approx(21.0)
    few = self_calibrate(
        np.zeros((40, 50), np.float32),
        np.full((40, 50, 3), np.nan, np.float32),
        width=50,
        height=40,
        cx=25,
        cy=20,
        assumed_focal_px=60.0,
    )
    assert few.reason == "too-few-pixels"
    assert few.focal_sigma_px == pytest.approx(60.0 * DEFAULT_FOCAL_SIGMA_REL)


def test_public_api_takes_a_prediction() -> None:
    depth, normal, focal = room_view(26.0)
    h, w = depth.shape
    assumed = 1.3 * focal
    pred = Prediction(
        depth=(depth * (assumed / focal)).astype(np.float32),
        normal=normal,
        confidence=np.ones((h, w), np.float32),
        normal_confidence=None,
        intrinsics=centred(w, h, assumed, "default"),
        model="vit-small",
    )
    result = metrocli.self_calibrate(pred)
    assert isinstance(result, SelfCalResult)
    assert result.trusted and abs(result.focal_px / focal - 1) < 0.02
    assert 0 < result.focal_sigma_px < 0.05 * focal
    with pytest.raises(DepthMapError, match="normals"):
        metrocli.self_calibrate(Prediction(pred.depth, None, pred.confidence, None, pred.intrinsics))


# ------------------------------------------------------------- issue 15: knowing when it is wrong
def inclined_wall_view(yaw_deg: float = 40.0) -> tuple[np.ndarray, np.ndarray, float]:
    """One wall filling the view, turned by ``yaw_deg``: a single oblique plane."""
    focal = focal_for_lens(26.0)
    eye = (0.0, -1.5, 0.0)
    wall = Box((0.0, -1.5, 4.0), (60.0, 60.0, 0.5), yaw_deg=yaw_deg)
    depth, normal = render([wall], focal, eye, look_at(eye, (0.0, -1.5, 3.0)))
    return depth, normal, focal


def test_single_inclined_plane_is_not_trusted() -> None:
    depth, normal, focal = inclined_wall_view()
    rng = np.random.default_rng(2)
    result = calibrate(depth, noisy_normals(normal, 3.0, rng), focal, fallback_focal_px=700.0)
    assert result.leverage > 0.1  # oblique enough: not a flat objective by the normals' leverage
    assert result.plane_share > 0.99
    assert result.fallback and not result.trusted
    assert result.reason == "single-plane"
    assert result.focal_px == 700.0
    assert result.focal_sigma_px == pytest.approx(700.0 * DEFAULT_FOCAL_SIGMA_REL)
    assert result.warning is not None and "one plane" in result.warning and "flat" not in result.warning


def test_room_is_consistent_across_regions() -> None:
    depth, normal, focal = room_view(26.0)
    result = calibrate(depth, noisy_normals(normal, 3.0, np.random.default_rng(1)), focal)
    assert result.trusted
    assert 0 <= result.region_spread_log < 0.02 and 0 <= result.coherent_misfit_log < 0.1
    assert result.plane_share < 0.9


def test_smooth_normal_error_field_gives_no_silent_gross_error() -> None:
    """A smooth rotation of the predicted normals (the model's correlated error) makes the regions disagree:
    an estimate more than 25 % off is flagged (issue 15: no silent gross error)."""
    depth, normal, focal = street_view(26.0)
    h, w = depth.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    angle = np.radians(15.0) * np.sin(2 * math.pi * 1.2 * xx + 1.0) * np.cos(2 * math.pi * 0.9 * yy)
    c, s = np.cos(angle), np.sin(angle)  # rotate about the camera's y axis by a smooth angle field
    bent = np.stack(
        [c * normal[..., 0] + s * normal[..., 2], normal[..., 1], -s * normal[..., 0] + c * normal[..., 2]],
        -1,
    )
    result = calibrate(depth, bent.astype(np.float32), focal)
    error = abs(result.estimate_px / focal - 1)
    assert not result.trusted or error < 0.25, (error, result.reason)
    if not result.trusted:
        assert result.reason == "uncertain" and "not consistent" in result.warning


def test_a_120mm_lens_is_found_in_a_10_to_150_degree_range() -> None:
    depth, normal, focal = room_view(120.0)
    assert math.degrees(2 * math.atan(depth.shape[1] / (2 * focal))) < 20.0  # outside the 20-120 default
    assert calibrate(depth, normal, focal, fov_range_deg=(20.0, 120.0)).fallback
    result = calibrate(depth, normal, focal, fov_range_deg=(10.0, 150.0))
    assert result.trusted, result.warning
    assert abs(result.focal_px / focal - 1) < 0.02
    default = calibrate(depth, normal, focal)  # issue 15: the default range is 10-150 degrees
    assert default.trusted and abs(default.focal_px / focal - 1) < 0.02


def test_an_uncertain_estimate_is_combined_with_the_fallback_by_their_sigmas(half_tilted) -> None:
    depth, normal, focal = street_view(26.0)
    result = calibrate(depth, half_tilted(normal, 25.0), focal, fallback_focal_px=700.0)
    assert result.reason == "uncertain" and not result.trusted
    assert result.combined and not result.fallback and result.focal_source == "combined"
    assert result.warning is not None and "combined with the fallback focal length 700.0 px" in result.warning
    # between the fallback and the estimates, better known than the fallback, and honest about the truth
    assert min(result.estimate_px, result.manhattan_px) < result.focal_px < 700.0
    assert result.focal_sigma_px < 700.0 * DEFAULT_FOCAL_SIGMA_REL
    assert result.uncertainty_px == result.focal_sigma_px
    assert abs(math.log(result.focal_px / focal)) <= 2 * result.focal_sigma_px / result.focal_px
    d = result.to_dict()
    assert d["combined"] is True and d["trusted"] is False and d["focal_source"] == "combined"
    # a fallback known exactly (a user's focal length) outweighs any uncertain estimate
    exact = calibrate(
        depth, half_tilted(normal, 25.0), focal, fallback_focal_px=700.0, fallback_sigma_rel=0.0
    )
    assert exact.fallback and not exact.combined and exact.focal_px == 700.0 and exact.reason == "uncertain"
    assert "using the fallback focal length 700.0 px" in (exact.warning or "")
    assert check_focal(focal, result) == (pytest.approx(math.nan, nan_ok=True), False)


def test_a_confident_manhattan_estimate_overrules_a_plain_one_it_contradicts(half_tilted) -> None:
    """An 8 degree tilt of the normals on each half of a street view bends the plain estimate 48 % while its
    regions agree within 0.1 %; the Manhattan estimate, 73 % away from it, is used with their disagreement in
    its sigma."""
    depth, normal, focal = street_view(26.0)
    result = calibrate(depth, half_tilted(normal, 8.0), focal)
    assert result.gradient_px < 0.6 * focal  # the plain estimate alone would be a silent gross error
    assert result.trusted and result.focal_px == pytest.approx(result.manhattan_px)
    assert abs(result.focal_px / focal - 1) < 0.15
    assert abs(math.log(result.focal_px / focal)) <= 2 * result.focal_sigma_px / result.focal_px


def test_clamped_depth_is_masked() -> None:
    depth = np.full((100, 120), 4.0, np.float32)
    depth[:, :60] = np.linspace(2.0, 5.0, 60, dtype=np.float32)
    depth[:20] = 167.3  # the decoder's clamp, wherever the focal length put it
    masked = mask_clamped_depth(depth)
    assert np.isnan(masked[:20]).all()
    assert np.isnan(masked[20:22]).all()  # the upsampled transition too
    np.testing.assert_array_equal(masked[30:], depth[30:])
    no_clamp = depth[20:].copy()
    no_clamp[5, 7] = 180.0  # a single far pixel is geometry, not a clamp plateau
    np.testing.assert_array_equal(mask_clamped_depth(no_clamp), no_clamp)
    near = depth.copy()
    near[:20] = 6.0  # a near plateau is a fronto-parallel surface of exact depth
    np.testing.assert_array_equal(mask_clamped_depth(near), near)
    wall = np.full((100, 120), 80.0, np.float32)  # so is a map that is one plateau
    np.testing.assert_array_equal(mask_clamped_depth(wall), wall)


# ------------------------------------------------------------- issue 15: the Manhattan estimate
def _terms(depth: np.ndarray, normal: np.ndarray, focal: float):
    from metrocli.geometry.selfcal.terms import MAX_SAMPLES, prepare_terms

    h, w = depth.shape
    terms, _ = prepare_terms(
        depth,
        normal,
        None,
        None,
        fx=focal,
        fy=focal,
        cx=w / 2,
        cy=h / 2,
        max_samples=MAX_SAMPLES,
        f_ref=focal,
    )
    assert terms is not None
    return terms


def test_manhattan_frame_of_a_room_holds_the_floor_normal() -> None:
    from metrocli.geometry.selfcal.manhattan import manhattan_frame, snapped_terms

    eye, target = (-2.5, -1.6, -4.0), (2.5, -0.8, 3.5)
    rot = look_at(eye, target)
    depth, normal, focal = room_view(26.0)
    terms = _terms(depth, normal, focal)
    frame = manhattan_frame(terms)
    assert frame is not None
    np.testing.assert_allclose(frame.axes @ frame.axes.T, np.eye(3), atol=1e-9)
    floor_cam = rot.T @ np.array([0.0, -1.0, 0.0])  # the floor's normal (world y is down) in the camera frame
    assert np.max(np.abs(frame.axes @ floor_cam)) > math.cos(math.radians(2.0))
    assert sum(frame.axis_share) > 0.5
    snapped = snapped_terms(terms, frame)
    assert snapped.weight.size == int(frame.keep.sum())
    assert snapped.weight.sum() == pytest.approx(1.0)
    n = np.stack([snapped.px, snapped.py, snapped.pz], 1)
    assert np.all(np.abs(np.abs(n @ frame.axes.T).max(1) - 1.0) < 1e-9)  # every snapped normal is an axis
    predicted = np.stack([terms.px, terms.py, terms.pz], 1)[frame.keep]
    assert np.all(np.sum(n * predicted, 1) > math.cos(math.radians(20.0)))  # the axis nearest the prediction


def test_single_wall_has_no_manhattan_frame() -> None:
    from metrocli.geometry.selfcal.manhattan import manhattan_frame

    depth, normal, focal = inclined_wall_view()
    assert manhattan_frame(_terms(depth, normal, focal)) is None


@pytest.mark.parametrize("lens_mm", [13.0, 77.0])
def test_manhattan_estimate_is_exact_on_exact_maps(lens_mm: float) -> None:
    depth, normal, focal = room_view(lens_mm)
    result = calibrate(depth, normal, focal)
    assert math.isfinite(result.manhattan_px) and result.manhattan_sigma_log < 0.05
    assert abs(result.manhattan_px / focal - 1) < 0.02
    assert abs(result.gradient_px / focal - 1) < 0.02
    d = result.to_dict()
    assert d["manhattan_px"] == pytest.approx(result.manhattan_px)


def test_a_consistent_plain_estimate_wins_over_a_non_manhattan_scene() -> None:
    """room_view(26)'s boxes are turned by 20-50 degrees: snapping them to the room's axes moves the Manhattan
    estimate by about 10 %, but the plain estimate's regions agree closely, so it is the one used."""
    depth, normal, focal = room_view(26.0)
    result = calibrate(depth, noisy_normals(normal, 3.0, np.random.default_rng(0)), focal)
    assert abs(result.manhattan_px / focal - 1) > 0.05
    assert result.trusted and result.estimate_px == result.gradient_px
    assert abs(result.focal_px / focal - 1) < 0.02
