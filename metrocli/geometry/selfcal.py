"""Self-calibration of the focal length from depth–normal consistency (issue 9). numpy only.

Why the focal length is observable
----------------------------------
Metric3D predicts depth in a canonical camera; the metric depth of a photo taken with focal length ``f``
(pixels) is proportional to ``f``. Let ``depth0`` be the depth the model implies when the focal length is
*assumed* to be ``f0`` (:func:`self_calibrate`'s ``assumed_focal_px``). For any other focal length ``f``::

    Z_f(u, v) = depth0(u, v) * s,        s = f / f0
    X_f = (u - cx) * Z_f / f = (u - cx) * depth0 / f0 = X_0          (and Y_f = Y_0)

so the backprojected surface is the one at ``f0`` stretched by ``s`` along the optical axis. Surface normals
transform with the inverse transpose of ``diag(1, 1, s)``: the (unnormalised) normal at ``f`` is
``(s * n0x, s * n0y, n0z)`` where ``n0`` is the normal of the surface at ``f0``. This holds *exactly* for
normals computed as cross products of finite differences of the point map, because those differences are
linear in the points. The predicted normals do not depend on the focal length (Metric3D's normal head never
sees it), so the depth-derived normals agree with them only at the true ``f``.

Objective
---------
Inverse depth ``w = 1 / Z`` is affine in ``(u, v)`` on a plane, so its box-filtered central differences are
exact there. With ``g = grad(w) / w`` (per pixel, independent of ``f`` since depth scales uniformly), a plane
with normal ``n`` seen with focal ``f`` has ``g = (nx, ny) / (nx*(u - cx) + ny*(v - cy) + f*nz)``. The default
objective (``"gradient"``) is the robust (Welsch) mean of ``|g_measured - g_predicted(f) + grad(e)| / s``,
with ``g_predicted`` from the (box-averaged) predicted normals, one scale ``s`` for the image (absolute
residuals: strongly inclined surfaces, whose gradient changes most with ``f``, weigh most) and ``e`` a smooth
log-depth error field profiled out at every ``f`` (ridge least squares, see below). This is the depth–normal
angular disagreement expressed linearly in the depth noise: the plain angle between predicted and
depth-derived normals (``objective="angle"``, also available, without the error field; cost
``cos = (s*A + B) / sqrt(s^2*C + 1 - C)`` per pixel with precomputed ``A, B, C``) is biased by depth noise,
because noise inflates the tilt of the depth-derived normal (room scene at 77 mm, 3 % smooth depth error
and 3 degrees of normal noise: mean -9 %, worst -15 % over 6 seeds).

Smooth depth errors
-------------------
A network's depth error is mostly smooth: ``Z_pred = Z (1 + e(u, v))``. It shifts ``g`` by ``-grad(e)``, the
same for every surface, and on a single plane a smooth ``e`` is almost indistinguishable from a focal change
(a focal change by ``d`` looks like ``e = -d * Z / Z_axis`` on a plane that meets the optical axis at depth
``Z_axis``): at 77 mm, a 3 % error field of 2 cycles per image side tilts the depth-derived normals by tens
of degrees. Only the *relation between surfaces* pins ``f`` down: a focal change moves each plane's gradient
along its own direction (creases and occlusions break any smooth ``e``), a smooth field moves neighbouring
planes alike. So ``e`` is modelled as a linear ramp plus waves up to :data:`NUISANCE_MAX_CYCLES` cycles per
image side (half-integer wave vectors, about 50 parameters) and fitted jointly: per focal length a fixed
``P x 2N`` matrix product. On the test scenes (3 % depth noise as a smooth field, 3 degrees of normal noise,
12 seeds) this cut the worst error from 22 % (room_03, tele) to below 4 %, and made exact scenes no worse.

Precomputation (once per image): block-average to at most :data:`WORK_MAX_SIDE` pixels, box-filter, take
differences, mask edges (inverse-depth curvature), creases (predicted normals turning), grazing pixels and
zero confidence, keep at most :data:`MAX_SAMPLES` pixels. Each objective evaluation is then about fifteen
vectorised operations and two small matrix products on those pixels: a coarse log-spaced scan of the FOV
range (on at most :data:`COARSE_SAMPLES` of them) and a golden-section refinement. The uncertainty is a
cluster-robust sandwich estimate plus a 2 % floor.

Surfaces that are fronto-parallel (``n0x = n0y = 0``) or parallel to the optical axis (``n0z = 0``) carry no
information; oblique surfaces (about 45 degrees to the optical axis) carry the most. When the scene has too
little such surface the objective is flat and :func:`self_calibrate` falls back to the assumed focal length
with a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from metrocli.errors import DepthMapError

Objective = Literal["gradient", "angle"]

#: The depth map is block-averaged to at most this many pixels along its longer side before the search.
WORK_MAX_SIDE = 400
#: At most this many pixels per axis of each block are averaged when block-averaging down to WORK_MAX_SIDE.
BLOCK_SAMPLES = 3
#: Finite-difference half-step (working pixels) of the inverse-depth gradients.
DIFF_STEP = 2
#: Box filter (working pixels, odd) applied to the inverse depth before differencing.
SMOOTH_SIZE = 5
#: Pixels whose inverse-depth curvature exceeds this multiple of the image's median are edges.
CURVATURE_FACTOR = 4.0
#: The uncertainty treats pixels in blocks of 1/UNCERTAINTY_CELLS of the image side as correlated.
UNCERTAINTY_CELLS = 6
#: Relative uncertainty added in quadrature for errors the per-pixel statistics cannot see (smooth, image-wide
#: depth errors of the model); from the synthetic noise study in tests/geometry/test_selfcal.py.
UNCERTAINTY_FLOOR_REL = 0.02
#: At most this many pixels enter the objective (a deterministic random subset of the usable ones).
MAX_SAMPLES = 10_000
#: Scale of the robust (Welsch) loss on the depth-gradient residual (objective "gradient"), in units of the
#: image's median predicted gradient magnitude. The residual is absolute (not relative to each pixel's
#: gradient): a smooth depth error adds the same gradient error to every surface, and strongly inclined
#: surfaces, whose gradient changes most with the focal length, then carry the most weight.
ROBUST_GRADIENT = 2.0
#: The smooth depth-error field fitted jointly with the focal length (objective "gradient") holds waves of
#: up to this many cycles per image side (the longer one), plus a linear ramp.
NUISANCE_MAX_CYCLES = 2.0
#: Ridge penalty on the amplitudes of the depth-error field's waves (the ramp gets a quarter of it), relative
#: to the mean squared (scaled) gradient residual. Small: the field is almost free, the penalty only keeps
#: the fit well posed where the pixels do not constrain a wave.
NUISANCE_RIDGE = 0.4
#: The depth-error field is only fitted when at least this many usable pixels per field parameter exist.
NUISANCE_MIN_PIXELS_PER_PARAM = 20
#: The coarse scan uses at most this many pixels (a regular subset); the refinement uses all of them.
COARSE_SAMPLES = 2_500
#: Scale of the robust (Welsch) loss on the angle between predicted and depth-derived normals ("angle").
ROBUST_ANGLE_DEG = 12.0
#: Predicted normals that turn by more than this across the difference stencil mark a crease (degrees).
CREASE_DEG = 15.0
#: Relative change of depth per working pixel above which a pixel is a depth edge or seen at grazing angle.
MAX_REL_GRADIENT = 0.08
#: Objective is "flat" when a 10 % change of focal length turns the usable normals by less than
#: ``0.1 * FLAT_LEVERAGE`` radians (RMS), i.e. the scene has almost no oblique surface.
FLAT_LEVERAGE = 0.1
#: ... or when the estimated relative uncertainty of the focal length exceeds this.
FLAT_REL_UNCERTAINTY = 0.25
#: Fewer usable pixels than this: no estimate.
MIN_PIXELS = 200
#: Number of log-spaced focal lengths of the coarse scan over the FOV range.
COARSE_STEPS = 48
#: Relative disagreement above which :func:`check_focal` reports the EXIF focal length as off.
CHECK_FOCAL_TOLERANCE = 0.10


@dataclass(frozen=True)
class SelfCalResult:
    """The outcome of :func:`self_calibrate`; all focal lengths in pixels of the ``width`` x ``height`` image.

    Attributes:
        focal_px: the self-calibrated focal length (px); the fallback focal length when ``fallback``.
        uncertainty_px: one-sigma uncertainty of ``focal_px`` (px), from the curvature of the objective and
            the spread of per-pixel slopes (cluster-robust sandwich estimate) plus a 2 % floor; ``inf``
            when there is no estimate.
        fov_deg: horizontal field of view (degrees) of ``focal_px``.
        objective_flat: the objective barely depends on the focal length (e.g. a fronto-parallel wall) or too
            few pixels were usable: no trustworthy estimate.
        fallback: ``focal_px`` is the fallback focal length, not an estimate (flat objective, too few pixels,
            or optimum at the edge of the FOV range).
        estimate_px: the minimiser of the objective even when it was not trusted (px); nan without pixels.
        samples: ``(focal_px, objective)`` pairs of the coarse scan, ascending focal length (diagnostics).
        n_pixels: number of pixels that entered the objective.
        leverage: RMS rate (radians per unit of ``log f``) at which the depth-derived normals turn with the
            focal length: about 0.5 for surfaces at 45 degrees, 0 for a fronto-parallel wall.
        warning: a one-line explanation when the estimate is not trusted, else None.
    """

    focal_px: float
    uncertainty_px: float
    fov_deg: float
    objective_flat: bool
    fallback: bool
    estimate_px: float
    samples: tuple[tuple[float, float], ...]
    n_pixels: int
    leverage: float
    warning: str | None = None

    @property
    def focal_source(self) -> str:
        """``"self-calibrated"``, or ``"default"`` when the result is the fallback."""
        return "default" if self.fallback else "self-calibrated"

    def to_dict(self) -> dict:
        """JSON-ready summary (without the curve samples)."""
        return {
            "focal_px": self.focal_px,
            "uncertainty_px": self.uncertainty_px if math.isfinite(self.uncertainty_px) else None,
            "fov_deg": self.fov_deg,
            "objective_flat": self.objective_flat,
            "fallback": self.fallback,
            "estimate_px": self.estimate_px if math.isfinite(self.estimate_px) else None,
            "n_pixels": self.n_pixels,
            "leverage": self.leverage,
            "focal_source": self.focal_source,
            "warning": self.warning,
        }


@dataclass(frozen=True)
class _Terms:
    """Per-pixel terms of the objective that do not depend on the focal length (float64, one per pixel)."""

    px: np.ndarray  # predicted unit normal
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray  # px*(u - cx) + py*(v - cy), pixels
    gu: np.ndarray  # measured d(log inverse depth)/du, per pixel of the input grid
    gv: np.ndarray
    inv_scale: float  # 1 / (ROBUST_GRADIENT * median predicted |g|): Welsch scale of the gradient residual
    a: np.ndarray  # angle objective: n0x*px + n0y*py with n0 the depth-derived unit normal at f0
    b: np.ndarray  # n0z*pz
    c: np.ndarray  # n0x^2 + n0y^2 (n0z^2 = 1 - c)
    weight: np.ndarray  # normalised to sum 1
    cluster: np.ndarray  # spatial block index of each pixel (for the uncertainty)
    f0: float  # assumed focal length, pixels of the input grid (fx)
    basis: np.ndarray | None = None  # (2N, P) gradients (u rows, then v rows) of the depth-error field modes
    weighted_t: np.ndarray | None = None  # (P, 2N) basis.T times the pixel weights / scale^2
    gram_inv: np.ndarray | None = None  # (P, P) inverse of weighted_t @ basis + diag(penalty)
    penalty: np.ndarray | None = None  # (P,) ridge penalty per mode


def _block_offsets(k: int) -> list[int]:
    """Offsets of the (at most :data:`BLOCK_SAMPLES` per axis) pixels averaged in each k-pixel block.

    Symmetric about the block centre ``(k - 1) / 2``. Large inputs are model outputs upsampled to the photo,
    smooth at the scale of a block, so a few samples per block see as much as all of them.
    """
    m = min(k, BLOCK_SAMPLES)
    return [math.floor((j + 0.5) * k / m) if m < k else j for j in range(m)]


def _block_mean(array: np.ndarray, k: int, transform=None) -> np.ndarray:
    """float32 mean over k x k blocks of an (H, W) array (cropped to a multiple of k); NaN propagates.

    Averages the pixels at :func:`_block_offsets` of each block (all of them when ``k <= BLOCK_SAMPLES``),
    after applying ``transform`` to them (e.g. inverse depth) when given.
    """
    if k == 1:
        out = array if transform is None else transform(array)
        return out.astype(np.float32, copy=False)
    h, w = array.shape[0] // k, array.shape[1] // k
    offsets = _block_offsets(k)
    out = np.zeros((h, w), np.float32)
    for i in offsets:  # strided adds: much faster than reshape(...).mean(axis=(1, 3))
        for j in offsets:
            view = array[i : h * k : k, j : w * k : k]
            out += view if transform is None else transform(view)
    out *= 1.0 / len(offsets) ** 2
    return out


def _window_sum(a: np.ndarray, size: int) -> np.ndarray:
    """float64 sums over ``size`` x ``size`` windows (odd), NaN within ``size // 2`` of the border."""
    r = size // 2
    c = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    np.cumsum(a, axis=0, out=c[1:, 1:])
    np.cumsum(c[1:, 1:], axis=1, out=c[1:, 1:])
    out = np.full(a.shape, np.nan)
    out[r:-r, r:-r] = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    return out


def _box_filter(values: np.ndarray, size: int, full: np.ndarray | None = None) -> np.ndarray:
    """Mean over ``size`` x ``size`` windows (odd size, same shape); NaN where the window has a NaN.

    ``full``: the windows without NaN when already known (a boolean map, from the same validity).
    """
    if size <= 1:
        return values
    valid = np.isfinite(values)
    if full is None:
        full = _window_sum(valid.astype(np.float64), size) > size * size - 0.5
    sums = _window_sum(np.where(valid, values, 0.0), size)
    return np.where(full, sums * (1.0 / (size * size)), np.nan)


def _normalised_weight(values: np.ndarray | None) -> np.ndarray | float:
    """Confidence map -> weights in [0, 1] (divided by its 90th percentile); 1.0 when absent."""
    if values is None:
        return 1.0
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, np.float32)
    ref = float(np.percentile(finite, 90))
    if not ref > 0:
        return 1.0
    out = np.clip(values * (1.0 / ref), 0.0, 1.0)
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32)


def _prepare(
    depth: np.ndarray,
    normal: np.ndarray,
    confidence: np.ndarray | None,
    normal_confidence: np.ndarray | None,
    *,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    max_samples: int,
    f_ref: float,
) -> tuple[_Terms | None, int]:
    """Precompute the objective's terms; intrinsics in pixels of ``depth``'s grid. -> (terms, n_usable)."""
    height, width = depth.shape
    k = max(1, math.ceil(max(height, width) / WORK_MAX_SIDE))

    def inverse(d: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.isfinite(d) & (d > 0), 1.0 / d, np.nan).astype(np.float32)

    # Inverse depth is affine in (u, v) on a plane, so block means, box filters and central differences of it
    # are exact on planes: smoothing costs no bias there.
    inv = _box_filter(_block_mean(depth, k, inverse), SMOOTH_SIZE)
    # Predicted normals are constant on a plane: averaging them over the same window removes i.i.d. noise,
    # which would otherwise bias the (non-linear in the normal) predicted depth gradient.
    pxw, pyw, pzw = (_block_mean(normal[..., i], k) for i in range(3))
    full = _window_sum(np.isfinite(pxw + pyw + pzw).astype(np.float64), SMOOTH_SIZE) > SMOOTH_SIZE**2 - 0.5
    pxw, pyw, pzw = (_box_filter(a, SMOOTH_SIZE, full) for a in (pxw, pyw, pzw))
    weight = 1.0
    for conf in (confidence, normal_confidence):
        if conf is not None:
            weight = weight * _normalised_weight(_block_mean(conf, k))
    hw, ww = inv.shape
    weight = np.broadcast_to(np.asarray(weight, np.float32), (hw, ww))
    h = DIFF_STEP
    if hw < 2 * h + 3 or ww < 2 * h + 3:
        return None, 0

    c = (slice(h, -h), slice(h, -h))
    right, left = (slice(h, -h), slice(2 * h, None)), (slice(h, -h), slice(None, -2 * h))
    down, up = (slice(2 * h, None), slice(h, -h)), (slice(None, -2 * h), slice(h, -h))
    # Centres of the working pixels in the input grid, relative to the principal point.
    centre = float(np.mean(_block_offsets(k))) if k > 1 else 0.0
    uu = np.arange(h, ww - h, dtype=np.float64) * k + centre - cx
    vv = np.arange(h, hw - h, dtype=np.float64) * k + centre - cy

    ic = inv[c]
    with np.errstate(invalid="ignore", divide="ignore"):
        gu = (inv[right] - inv[left]) / (2 * h * k * ic)  # d log(1/Z) / du, per input pixel
        gv = (inv[down] - inv[up]) / (2 * h * k * ic) * (fy / fx)  # per pixel of a square grid (fx)
        curv = (np.abs(inv[right] + inv[left] - 2 * ic) + np.abs(inv[down] + inv[up] - 2 * ic)) / ic
    vv = vv * (fx / fy)

    pn = np.sqrt(pxw * pxw + pyw * pyw + pzw * pzw)
    with np.errstate(invalid="ignore", divide="ignore"):
        pxw, pyw, pzw = pxw / pn, pyw / pn, pzw / pn

    def dot(a: tuple[slice, slice], b: tuple[slice, slice]) -> np.ndarray:
        return pxw[a] * pxw[b] + pyw[a] * pyw[b] + pzw[a] * pzw[b]

    cos_crease = math.cos(math.radians(CREASE_DEG))
    crease_ok = (dot(right, left) > cos_crease) & (dot(down, up) > cos_crease)
    wc = weight[c]
    gmag = np.hypot(gu, gv)
    usable = (
        np.isfinite(gmag)
        & np.isfinite(curv)
        & (pn[c] > 0.5)
        & crease_ok
        & (gmag * k < MAX_REL_GRADIENT)
        & (wc > 0)
    )
    if not usable.any():
        return None, 0
    # Depth edges: curvature of the inverse depth far above its typical (noise-level) value in the image.
    curv_ref = float(np.median(curv[usable]))
    usable &= curv <= max(CURVATURE_FACTOR * curv_ref, 1e-3 * h)
    idx = np.flatnonzero(usable)
    n_usable = int(idx.size)
    if n_usable < MIN_PIXELS:
        return None, n_usable
    if idx.size > max_samples:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(idx, size=max_samples, replace=False))
    rows, cols = np.divmod(idx, ww - 2 * h)
    ppx, ppy, ppz = (a[c].ravel()[idx].astype(np.float64) for a in (pxw, pyw, pzw))
    u_s, v_s = uu[cols], vv[rows]
    gu_s, gv_s = gu.ravel()[idx].astype(np.float64), gv.ravel()[idx].astype(np.float64)
    # Residual scale: the gradient magnitude the predicted normal implies at a reference focal length
    # ``f_ref`` (middle of the search range). It must not depend on the measured gradient: weights that are
    # correlated with the depth noise bias the estimate.
    den_ref = np.minimum(ppx * u_s + ppy * v_s + f_ref * ppz, -0.05 * f_ref)
    g_ref = np.hypot(ppx, ppy) / -den_ref
    scale = max(ROBUST_GRADIENT * float(np.median(g_ref)), 1e-12)
    # Depth-derived unit normal at f0 (angle objective): -(f0*gu, f0*gv, 1 - u*gu - v*gv), facing the camera.
    n0 = -np.stack([fx * gu_s, fx * gv_s, 1.0 - u_s * gu_s - v_s * gv_s], axis=-1)
    n0 /= np.sqrt(np.sum(n0 * n0, axis=-1, keepdims=True))
    w = wc.ravel()[idx].astype(np.float64)
    w /= w.sum()
    # Spatial clusters of 1/UNCERTAINTY_CELLS of the image side, for the cluster-robust uncertainty.
    cell = max(1, max(hw, ww) // UNCERTAINTY_CELLS)
    cluster = (rows // cell) * (ww // cell + 1) + cols // cell
    terms = _Terms(
        px=ppx,
        py=ppy,
        pz=ppz,
        e=ppx * u_s + ppy * v_s,
        gu=gu_s,
        gv=gv_s,
        inv_scale=1.0 / scale,
        a=n0[:, 0] * ppx + n0[:, 1] * ppy,
        b=n0[:, 2] * ppz,
        c=n0[:, 0] ** 2 + n0[:, 1] ** 2,
        weight=w,
        cluster=cluster,
        f0=fx,
    )
    if terms.weight.size >= NUISANCE_MIN_PIXELS_PER_PARAM * len(_nuisance_modes()):
        side = float(max(hw, ww) * k)  # the longer image side, input pixels
        terms = _with_nuisance(terms, u_s / side, v_s / side, side)
    return terms, n_usable


def _nuisance_modes() -> list[tuple[float, float]]:
    """Wave vectors (cycles per image side) of the depth-error field: half-integer (a period of two image
    sides, so that waves longer than the image are represented too), one of each +-pair, ``0 < |k| <=``
    :data:`NUISANCE_MAX_CYCLES`."""
    n = round(2 * NUISANCE_MAX_CYCLES)
    return [
        (a / 2.0, b / 2.0)
        for a in range(-n, n + 1)
        for b in range(0, n + 1)
        if (b > 0 or a > 0) and a * a + b * b <= n * n
    ]


def _with_nuisance(terms: _Terms, un: np.ndarray, vn: np.ndarray, side: float) -> _Terms:
    """Add the gradients of a smooth log-depth error field ``e(u, v)`` (ramp + waves) to ``terms``.

    A multiplicative depth error ``1 + e`` changes the measured ``g = grad(1/Z) / (1/Z)`` by ``-grad(e)``;
    the objective subtracts the best (ridge least-squares) such gradient field at every focal length. ``un``,
    ``vn``: pixel positions relative to the principal point in units of the longer image side ``side``
    (input pixels); the basis columns are gradients per input pixel of modes of unit amplitude.
    """
    cols_u = [np.full(un.shape, 1.0 / side), np.zeros(un.shape)]
    cols_v = [np.zeros(un.shape), np.full(un.shape, 1.0 / side)]
    for a, b in _nuisance_modes():
        phase = (2.0 * math.pi) * (a * un + b * vn)
        for d in (np.cos(phase), -np.sin(phase)):  # d/dphase of sin and of cos
            d = d * (2.0 * math.pi / side)
            cols_u.append(a * d)
            cols_v.append(b * d)
    basis = np.concatenate([np.stack(cols_u, axis=1), np.stack(cols_v, axis=1)], axis=0)
    penalty = np.full(basis.shape[1], NUISANCE_RIDGE)
    penalty[:2] *= 0.25
    return _project(replace(terms, basis=basis, penalty=penalty))


def _project(terms: _Terms) -> _Terms:
    """``terms`` with the ridge least-squares matrices of its nuisance basis for its weights."""
    assert terms.basis is not None and terms.penalty is not None
    w2 = np.concatenate([terms.weight, terms.weight]) * terms.inv_scale**2
    weighted_t = terms.basis.T * w2
    gram_inv = np.linalg.inv(weighted_t @ terms.basis + np.diag(terms.penalty))
    return replace(terms, weighted_t=weighted_t, gram_inv=gram_inv)


def _subset(terms: _Terms, max_pixels: int) -> _Terms:
    """A regular subset of at most about ``max_pixels`` pixels of ``terms`` (weights renormalised)."""
    n = terms.weight.size
    step = n // max_pixels
    if step < 2 or n // step < 4 * MIN_PIXELS:
        return terms
    sl = slice(None, None, step)
    weight = terms.weight[sl]
    out = replace(
        terms,
        **{name: getattr(terms, name)[sl] for name in ("px", "py", "pz", "e", "gu", "gv", "a", "b", "c")},
        weight=weight / weight.sum(),
        cluster=terms.cluster[sl],
    )
    if terms.basis is None:
        return out
    keep = np.arange(n)[sl]
    return _project(replace(out, basis=terms.basis[np.concatenate([keep, keep + n])]))


def _per_pixel_loss(terms: _Terms, log_scale: float, objective: Objective) -> np.ndarray:
    """Robust per-pixel loss at focal ``f = f0 * exp(log_scale)``."""
    if objective == "angle":
        s = math.exp(log_scale)
        cos = (s * terms.a + terms.b) / np.sqrt(s * s * terms.c + (1.0 - terms.c))
        return -np.expm1(-(1.0 - cos) / (1.0 - math.cos(math.radians(ROBUST_ANGLE_DEG))))
    f = terms.f0 * math.exp(log_scale)
    den = terms.e + f * terms.pz  # (p . ray) * f: negative for a plane that faces the camera
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_den = 1.0 / den
    facing = den < 0
    du = np.where(facing, terms.gu - terms.px * inv_den, 0.0)
    dv = np.where(facing, terms.gv - terms.py * inv_den, 0.0)
    penalty = 0.0
    if terms.basis is not None and terms.weighted_t is not None and terms.gram_inv is not None:
        # Profile out the smooth depth-error field: its best gradient field at this focal length.
        n = du.size
        coef = terms.gram_inv @ (terms.weighted_t @ np.concatenate([du, dv]))
        fitted = terms.basis @ coef
        du, dv = du - fitted[:n], dv - fitted[n:]
        penalty = float(np.sum(terms.penalty * coef * coef))  # type: ignore[operator]
    du, dv = du * terms.inv_scale, dv * terms.inv_scale
    loss = -np.expm1(-(du * du + dv * dv))
    # The ridge penalty, spread evenly over the pixels (the weights sum to 1).
    return np.where(facing, loss, 1.0) + penalty


def _objective(terms: _Terms, log_scale: float, objective: Objective) -> float:
    """Weighted mean robust loss at ``log(f / f0)``."""
    return float(np.sum(terms.weight * _per_pixel_loss(terms, log_scale, objective)))


def _golden(terms: _Terms, lo: float, hi: float, objective: Objective, tol: float = 2e-4) -> float:
    """Golden-section minimum of the objective over ``[lo, hi]`` (log-scale units)."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = _objective(terms, x1, objective), _objective(terms, x2, objective)
    while hi - lo > tol:
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = _objective(terms, x1, objective)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = _objective(terms, x2, objective)
    return (lo + hi) / 2.0


def _uncertainty_log(terms: _Terms, x: float, objective: Objective, eps: float = 0.01) -> float:
    """Cluster-robust sandwich estimate of the standard deviation of ``log f`` at the optimum ``x``."""
    lm = _per_pixel_loss(terms, x - eps, objective)
    l0 = _per_pixel_loss(terms, x, objective)
    lp = _per_pixel_loss(terms, x + eps, objective)
    slope = terms.weight * (lp - lm) / (2 * eps)
    hess = float(np.sum(terms.weight * (lp - 2 * l0 + lm)) / (eps * eps))
    if not hess > 0:
        return math.inf
    per_cluster = np.bincount(terms.cluster, weights=slope)
    return math.sqrt(float(np.sum(per_cluster * per_cluster))) / hess


def _leverage(terms: _Terms) -> float:
    """Weighted RMS of |sin(t) cos(t)|, t the predicted normal's angle to the optical axis: the rate (rad per
    unit of log f) at which the depth-derived normals turn with the focal length, near the solution."""
    sin2 = terms.px**2 + terms.py**2
    return math.sqrt(float(np.sum(terms.weight * sin2 * terms.pz**2)))


def _fov_deg(width: int, focal_px: float) -> float:
    return math.degrees(2.0 * math.atan(width / (2.0 * focal_px)))


def self_calibrate(
    depth_at_assumed_focal: np.ndarray,
    normal_pred: np.ndarray,
    *,
    width: int,
    height: int,
    cx: float,
    cy: float,
    assumed_focal_px: float,
    confidence: np.ndarray | None = None,
    normal_confidence: np.ndarray | None = None,
    fov_range_deg: tuple[float, float] = (20.0, 120.0),
    fallback_focal_px: float | None = None,
    max_samples: int = MAX_SAMPLES,
    objective: Objective = "gradient",
    max_depth_m: float | None = None,
) -> SelfCalResult:
    """Estimate the focal length of a photo from its predicted depth and normals (one model forward).

    Args:
        depth_at_assumed_focal: (H, W) float, metres: the depth the model implies when the focal length is
            ``assumed_focal_px`` (e.g. ``Prediction.depth`` with ``Prediction.intrinsics.fx``). The depth for
            any other focal length ``f`` is ``depth * f / assumed_focal_px`` (Metric3D's canonical depth times
            ``f / 1000``). A canonical depth map is passed with ``assumed_focal_px`` = the canonical focal
            expressed in pixels of this image. 0, negative or non-finite = invalid.
        normal_pred: (H, W, 3) float predicted unit normals, camera frame (x right, y down, z forward), facing
            the camera; independent of the focal length. NaN = invalid.
        width, height: size (px) of the image the intrinsics refer to. The maps may have another resolution
            of the same image (a resize); they are then related to it by scaling.
        cx, cy: principal point (px of the ``width`` x ``height`` image).
        assumed_focal_px: focal length (px of the ``width`` x ``height`` image) the depth was computed with.
        confidence: optional (H, W) depth confidence (higher = better, any scale), used as weights.
        normal_confidence: optional (H, W) normal confidence (kappa), used as weights.
        fov_range_deg: plausible horizontal field of view range (degrees) that is searched.
        fallback_focal_px: focal length (px) returned when there is no trustworthy estimate;
            ``assumed_focal_px`` when None.
        max_samples: at most this many pixels enter the objective.
        objective: ``"gradient"`` (default): robust residual between the measured log-inverse-depth gradient
            and the gradient the predicted normal implies at ``f``, after removing the best smooth depth-error
            field; ``"angle"``: robust angle between the predicted and the depth-derived normals. Both vanish
            at the true ``f`` on exact data; with noisy depth the angle is biased (noise inflates the
            depth-derived tilt), the gradient residual is not.
        max_depth_m: depth at or beyond this (the model's clamp, e.g. 300 m) is treated as invalid.

    Returns:
        :class:`SelfCalResult`. A flat objective (no oblique surface), too few usable pixels or an optimum at
        the edge of ``fov_range_deg`` give ``fallback=True``, ``focal_px = fallback_focal_px`` and a warning.

    Raises:
        DepthMapError: the depth and normal maps have inconsistent shapes, or their aspect ratio differs from
            ``width`` x ``height``.
    """
    depth = np.asarray(depth_at_assumed_focal)
    normal = np.asarray(normal_pred)
    if max_depth_m is not None and depth.ndim == 2:
        depth = np.where(depth < max_depth_m * (1.0 - 1e-4), depth, np.nan)
    if depth.ndim != 2 or normal.shape != (*depth.shape, 3):
        raise DepthMapError(
            f"self-calibration needs an (H, W) depth map and (H, W, 3) normals, got {depth.shape} and "
            f"{normal.shape}"
        )
    for name, extra in (("confidence", confidence), ("normal confidence", normal_confidence)):
        if extra is not None and np.shape(extra) != depth.shape:
            raise DepthMapError(f"{name} map of shape {np.shape(extra)} does not match depth {depth.shape}")
    if not (math.isfinite(assumed_focal_px) and assumed_focal_px > 0):
        raise DepthMapError(f"assumed focal length must be positive, got {assumed_focal_px!r} px")
    lo_deg, hi_deg = sorted(fov_range_deg)
    if not (0 < lo_deg < hi_deg < 180):
        raise DepthMapError(f"FOV range must lie within (0, 180) degrees, got {fov_range_deg!r}")
    sx, sy = depth.shape[1] / width, depth.shape[0] / height
    if abs(sx / sy - 1.0) > 0.02:
        raise DepthMapError(
            f"depth map {depth.shape[1]}x{depth.shape[0]} is not a resize of the {width}x{height} image"
        )
    fallback = float(assumed_focal_px if fallback_focal_px is None else fallback_focal_px)
    f_lo = width / (2.0 * math.tan(math.radians(hi_deg) / 2.0))
    f_hi = width / (2.0 * math.tan(math.radians(lo_deg) / 2.0))

    terms, n_usable = _prepare(
        depth,
        normal,
        None if confidence is None else np.asarray(confidence, np.float32),
        None if normal_confidence is None else np.asarray(normal_confidence, np.float32),
        fx=assumed_focal_px * sx,
        fy=assumed_focal_px * sy,
        cx=cx * sx,
        cy=cy * sy,
        max_samples=max_samples,
        f_ref=math.sqrt(f_lo * f_hi) * sx,
    )
    if terms is None:
        return SelfCalResult(
            focal_px=fallback,
            uncertainty_px=math.inf,
            fov_deg=_fov_deg(width, fallback),
            objective_flat=True,
            fallback=True,
            estimate_px=math.nan,
            samples=(),
            n_pixels=n_usable,
            leverage=0.0,
            warning=(
                f"self-calibration: only {n_usable} usable pixels (need {MIN_PIXELS}); "
                f"using the fallback focal length {fallback:.1f} px"
            ),
        )

    log_f0 = math.log(assumed_focal_px)
    grid = np.linspace(math.log(f_lo), math.log(f_hi), COARSE_STEPS)
    # Coarse scan on a subset (cheap), golden section on all pixels within two steps of its best.
    coarse = _subset(terms, COARSE_SAMPLES)
    values = np.array([_objective(coarse, x - log_f0, objective) for x in grid])
    best = int(np.argmin(values))
    step = grid[1] - grid[0]
    lo = grid[max(best - 2, 0)] - log_f0
    hi = grid[min(best + 2, len(grid) - 1)] - log_f0
    x = _golden(terms, lo, hi, objective)
    estimate = math.exp(x + log_f0)
    sigma_log = _uncertainty_log(terms, x, objective)
    leverage = _leverage(terms)
    rel_sigma = (
        math.hypot(math.expm1(sigma_log), UNCERTAINTY_FLOOR_REL) if math.isfinite(sigma_log) else math.inf
    )
    samples = tuple((float(math.exp(g)), float(val)) for g, val in zip(grid, values, strict=True))

    at_edge = (x + log_f0) - grid[0] < 0.5 * step or grid[-1] - (x + log_f0) < 0.5 * step
    # At the edge of the range the objective is not at a minimum, so its curvature says nothing there.
    flat = leverage < FLAT_LEVERAGE or (not at_edge and not rel_sigma <= FLAT_REL_UNCERTAINTY)
    warning = None
    if flat:
        warning = (
            f"self-calibration: the objective is flat (leverage {leverage:.3f}, relative uncertainty "
            f"{rel_sigma:.0%}): the scene has too few oblique surfaces; using the fallback focal length "
            f"{fallback:.1f} px"
        )
    elif at_edge:
        warning = (
            f"self-calibration: the best focal length {estimate:.1f} px lies at the edge of the "
            f"{lo_deg:g}-{hi_deg:g} degree FOV range; using the fallback focal length {fallback:.1f} px"
        )
    use_fallback = warning is not None
    focal = fallback if use_fallback else estimate
    return SelfCalResult(
        focal_px=focal,
        uncertainty_px=estimate * rel_sigma if not use_fallback else math.inf,
        fov_deg=_fov_deg(width, focal),
        objective_flat=flat,
        fallback=use_fallback,
        estimate_px=estimate,
        samples=samples,
        n_pixels=int(terms.a.size),
        leverage=leverage,
        warning=warning,
    )


def check_focal(
    exif_focal_px: float, selfcal: SelfCalResult, *, tolerance: float = CHECK_FOCAL_TOLERANCE
) -> tuple[float, bool]:
    """Cross-check an EXIF focal length against a self-calibration.

    Returns ``(disagreement_ratio, is_off)``: ``disagreement_ratio = selfcal.estimate_px / exif_focal_px - 1``
    (signed; +0.2 = the image looks 20 % more telephoto than EXIF says) and ``is_off`` when its magnitude
    exceeds ``tolerance`` (10 %) *and* the self-calibration is trustworthy (not a fallback). A fallback gives
    ``(nan, False)``: nothing can be said.
    """
    if not (math.isfinite(exif_focal_px) and exif_focal_px > 0):
        raise DepthMapError(f"EXIF focal length must be positive, got {exif_focal_px!r} px")
    if selfcal.fallback or not math.isfinite(selfcal.estimate_px):
        return math.nan, False
    ratio = selfcal.estimate_px / exif_focal_px - 1.0
    return ratio, abs(ratio) > tolerance
