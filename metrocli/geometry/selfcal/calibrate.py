"""Self-calibration of a photo's focal length: the search over the FOV range and the EXIF cross-check.

See :mod:`metrocli.geometry.selfcal` for the method. numpy + SciPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from metrocli.camera.intrinsics import FocalSource, focal_from_fov
from metrocli.errors import DepthMapError
from metrocli.geometry.measure import FOCAL_SIGMA_REL
from metrocli.geometry.selfcal.manhattan import manhattan_frame, snapped_terms
from metrocli.geometry.selfcal.objective import (
    coherent_misfit_log,
    mean_loss,
    normal_leverage,
    region_jackknife_log,
    uncertainty_log,
)
from metrocli.geometry.selfcal.terms import MAX_SAMPLES, MIN_PIXELS, Terms, prepare_terms, subset

if TYPE_CHECKING:
    from metrocli.prediction import Prediction

#: Horizontal field of view range (degrees) searched by default: a 120 mm equivalent across a portrait photo's
#: short side is about 11 degrees, a 13 mm one across a landscape photo's long side about 108 degrees. Outside
#: :data:`PLAIN_FOV_RANGE_DEG` an estimate needs the Manhattan estimate's confirmation.
DEFAULT_FOV_RANGE_DEG = (10.0, 150.0)

#: Outside this horizontal field of view range (degrees) an estimate is trusted only when the Manhattan
#: estimate confirms it: with random (seeded) weights the plain objective finds a confident 12.75 degrees.
PLAIN_FOV_RANGE_DEG = (20.0, 120.0)

#: The Manhattan estimate (:mod:`.manhattan`) is used when its uncertainty (sandwich and leave-region-out
#: spread together, ``log f``) is below this ...
MAX_MANHATTAN_SIGMA_LOG = 0.10

#: ... when it is within MAX_CUE_DISAGREEMENT_LOG of a consistent plain estimate, or below this whatever
#: the plain estimate says (it is closer to the truth in 95 % of the disagreements on the benchmark) ...
MAX_MANHATTAN_ALONE_SIGMA_LOG = 0.05

#: Share of the disagreement with a consistent plain estimate added (in quadrature) to its uncertainty.
DISAGREEMENT_SIGMA_SHARE = 0.5

#: ... and it is within this of the plain estimate (``log f``); further apart, neither is trusted.
MAX_CUE_DISAGREEMENT_LOG = 0.20

#: The plain estimate is used without the Manhattan one when its leave-region-out spread and coherent misfit
#: (``log f``) are below these (iid normal noise, issue 9's scenes); a scene without a Manhattan frame needs
#: them too.
STRONG_REGION_SPREAD_LOG = 0.03
STRONG_COHERENT_MISFIT_LOG = 0.10

#: Metric3D clamps its metric depth here (metres); clamped pixels carry no geometry.
MODEL_MAX_DEPTH_M = 300.0

#: Relative one-sigma uncertainty (of ``log f``) of the 65 degree default focal length, the fallback's unless
#: the caller states another: 13 to 120 mm equivalent lenses lie within 2 sigma of it.
DEFAULT_FOCAL_SIGMA_REL = FOCAL_SIGMA_REL["default"]

#: An estimate is not trusted when leave-one-region-out refits (3 x 3 regions) spread by more than this
#: (standard deviation of ``log f``): the regions of the image disagree (correlated normal errors, or one
#: region holding most of the evidence).
MAX_REGION_SPREAD_LOG = 0.10

#: ... or when the spatially coherent misfit at the optimum could move ``log f`` by more than this
#: (:func:`~.objective.coherent_misfit_log`: block-mean residuals over the sensitivity to the focal length).
MAX_COHERENT_MISFIT_LOG = 0.30

#: An estimate is not trusted when at least this share of the valid depth lies on one plane (the depth
#: geometry, not the predicted normals: one wall, a bare floor).
SINGLE_PLANE_SHARE = 0.99

#: Depth within this relative distance of the largest depth in the map, covering at least
#: :data:`CLAMP_MIN_SHARE` of the valid pixels, is the model's clamp (sky), not geometry ...
CLAMP_REL = 2e-3
CLAMP_MIN_SHARE = 0.002

#: ... and only when that largest depth is at least this far (metres): the decoder's canonical clamp (200 m at
#: 1000 px) lands at 60 m or more for any network input focal length above 300 px, while a constant depth
#: nearer than this is a fronto-parallel surface (a plateau that covers almost all of the map is one too).
CLAMP_MIN_DEPTH_M = 30.0
CLAMP_MAX_SHARE = 0.98

#: An estimate not trusted for being ``"uncertain"`` (its regions or its two cues disagree) is still evidence:
#: it is combined with the fallback focal length, taken as a prior with the fallback's own sigma, by inverse
#: variance in ``log f``. The estimate's sigma is its data's own (the Manhattan estimate's sandwich and
#: leave-region-out spread and its disagreement with the plain one; else the plain one's sandwich,
#: leave-region-out spread and coherent misfit; with this floor) times this factor, because it was not
#: trusted. bench_selfcal_honest (seed 1): median focal error 14.2 -> 8.9 % with 2-sigma coverage 92.5 %
#: (benchmarks/README.md).
UNTRUSTED_SIGMA_FACTOR = 2.0
UNTRUSTED_SIGMA_FLOOR_LOG = 0.05

#: Why an estimate is not trusted (``SelfCalResult.reason``).
UntrustedReason = Literal["too-few-pixels", "flat", "single-plane", "uncertain", "range-edge"]

#: Relative uncertainty added in quadrature for errors the per-pixel statistics cannot see (smooth, image-wide
#: depth errors of the model); from the synthetic noise study in tests/geometry/test_selfcal.py.
UNCERTAINTY_FLOOR_REL = 0.02

#: The coarse scan uses at most this many pixels (a regular subset); the refinement uses all of them.
COARSE_SAMPLES = 2_500

#: Objective is "flat" when a 10 % change of focal length turns the usable normals by less than
#: ``0.1 * FLAT_LEVERAGE`` radians (RMS), i.e. the scene has almost no oblique surface.
FLAT_LEVERAGE = 0.1

#: ... or when the estimated relative uncertainty of the focal length exceeds this.
FLAT_REL_UNCERTAINTY = 0.25

#: Number of log-spaced focal lengths of the coarse scan over the FOV range.
COARSE_STEPS = 48

#: Relative disagreement above which :func:`check_focal` reports the EXIF focal length as off.
CHECK_FOCAL_TOLERANCE = 0.10


@dataclass(frozen=True)
class SelfCalResult:
    """The outcome of :func:`self_calibrate`; all focal lengths in pixels of the ``width`` x ``height`` image.

    Attributes:
        focal_px: the self-calibrated focal length (px); the fallback focal length when ``fallback``; the
            fallback and the untrusted estimate combined (:data:`UNTRUSTED_SIGMA_FACTOR`) when ``combined``.
        uncertainty_px: one-sigma uncertainty of ``focal_px`` (px), from the curvature of the objective and
            the spread of per-pixel slopes (cluster-robust sandwich estimate) plus a 2 % floor (the
            combination's when ``combined``); ``inf`` when ``focal_px`` is the fallback.
        fov_deg: horizontal field of view (degrees) of ``focal_px``.
        objective_flat: the objective barely depends on the focal length (e.g. a fronto-parallel wall) or too
            few pixels were usable: no trustworthy estimate.
        fallback: ``focal_px`` is the fallback focal length, not an estimate (flat objective, too few pixels,
            one plane, optimum at the edge of the FOV range, or an uncertain estimate the fallback outweighs
            completely, e.g. a ``user`` focal length).
        combined: ``focal_px`` is an untrusted (``"uncertain"``) estimate combined with the fallback by their
            uncertainties: neither trusted nor the fallback.
        estimate_px: the minimiser of the objective even when it was not trusted (px); nan without pixels.
        samples: ``(focal_px, objective)`` pairs of the coarse scan, ascending focal length (diagnostics).
        n_pixels: number of pixels that entered the objective.
        leverage: RMS rate (radians per unit of ``log f``) at which the depth-derived normals turn with the
            focal length: about 0.5 for surfaces at 45 degrees, 0 for a fronto-parallel wall.
        warning: a one-line explanation when the estimate is not trusted, else None.
        reason: why the estimate is not trusted (``"too-few-pixels"``, ``"flat"``, ``"single-plane"``,
            ``"uncertain"``, ``"range-edge"``), None when it is.
        focal_sigma_px: one-sigma uncertainty (px) of the returned ``focal_px``: ``uncertainty_px`` when
            trusted or combined, else the fallback's own (:data:`DEFAULT_FOCAL_SIGMA_REL` of it unless the
            caller states another).
        plane_share: share of the valid depth on one plane (depth geometry); near 1: one wall or floor.
        region_spread_log: standard deviation of ``log f`` over leave-one-region-out refits (nan without an
            estimate).
        coherent_misfit_log: the ``log f`` error the spatially coherent misfit could cause (nan without an
            estimate).
        gradient_px: the plain estimate (predicted normals; px, nan without an estimate).
        manhattan_px: the estimate with Manhattan-snapped normals (:mod:`.manhattan`; px), nan when the scene
            has no Manhattan frame; ``manhattan_sigma_log`` its one-sigma uncertainty (``log f``: sandwich and
            leave-region-out spread together; inf without it). ``estimate_px`` is the one of the two that was
            used (the plain one when neither was).
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
    reason: UntrustedReason | None = None
    focal_sigma_px: float = math.inf
    plane_share: float = 0.0
    region_spread_log: float = math.nan
    coherent_misfit_log: float = math.nan
    gradient_px: float = math.nan
    manhattan_px: float = math.nan
    manhattan_sigma_log: float = math.inf
    combined: bool = False

    @property
    def trusted(self) -> bool:
        """The estimate is trusted and used (``focal_px`` is the estimate, neither the fallback nor a
        combination with it)."""
        return self.reason is None

    @property
    def focal_source(self) -> FocalSource:
        """``"self-calibrated"``, ``"combined"`` (an untrusted estimate combined with the fallback), or
        ``"default"`` when the result is the fallback."""
        if self.fallback:
            return "default"
        return "combined" if self.combined else "self-calibrated"

    def to_dict(self) -> dict:
        """JSON-ready summary (without the curve samples)."""
        return {
            "focal_px": self.focal_px,
            "uncertainty_px": self.uncertainty_px if math.isfinite(self.uncertainty_px) else None,
            "fov_deg": self.fov_deg,
            "objective_flat": self.objective_flat,
            "fallback": self.fallback,
            "combined": self.combined,
            "estimate_px": self.estimate_px if math.isfinite(self.estimate_px) else None,
            "n_pixels": self.n_pixels,
            "leverage": self.leverage,
            "focal_source": self.focal_source,
            "focal_sigma_px": self.focal_sigma_px if math.isfinite(self.focal_sigma_px) else None,
            "trusted": self.trusted,
            "reason": self.reason,
            "plane_share": self.plane_share,
            "region_spread_log": _finite_or_none(self.region_spread_log),
            "coherent_misfit_log": _finite_or_none(self.coherent_misfit_log),
            "gradient_px": _finite_or_none(self.gradient_px),
            "manhattan_px": _finite_or_none(self.manhattan_px),
            "manhattan_sigma_log": _finite_or_none(self.manhattan_sigma_log),
            "warning": self.warning,
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _refine(terms: Terms, lo: float, hi: float, xatol: float = 1e-4) -> float:
    """Minimum of the objective over ``[lo, hi]`` (log-scale units; bounded Brent search, SciPy)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda x: mean_loss(terms, float(x)), bounds=(lo, hi), method="bounded", options={"xatol": xatol}
    )
    return float(res.x)


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
    fov_range_deg: tuple[float, float] = DEFAULT_FOV_RANGE_DEG,
    fallback_focal_px: float | None = None,
    fallback_sigma_rel: float | None = None,
    max_samples: int = MAX_SAMPLES,
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
        fallback_sigma_rel: relative one-sigma uncertainty of the fallback focal length (the result's
            ``focal_sigma_px`` when not trusted); :data:`DEFAULT_FOCAL_SIGMA_REL` when None.
        max_samples: at most this many pixels enter the objective.
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
    sigma_rel = DEFAULT_FOCAL_SIGMA_REL if fallback_sigma_rel is None else fallback_sigma_rel
    fallback_sigma = fallback * sigma_rel
    f_lo, f_hi = focal_from_fov(width, hi_deg), focal_from_fov(width, lo_deg)

    depth = mask_clamped_depth(depth)
    terms, n_usable = prepare_terms(
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
            reason="too-few-pixels",
            focal_sigma_px=fallback_sigma,
        )

    log_f0 = math.log(assumed_focal_px)
    grid = np.linspace(math.log(f_lo), math.log(f_hi), COARSE_STEPS)
    step = grid[1] - grid[0]
    x, values = _search(terms, grid, log_f0)
    x_gradient = x
    estimate = math.exp(x + log_f0)
    sigma_log = uncertainty_log(terms, x)
    spread = region_jackknife_log(terms, x)
    misfit = coherent_misfit_log(terms, x)
    leverage = normal_leverage(terms)
    rel_sigma = (
        math.hypot(math.expm1(sigma_log), UNCERTAINTY_FLOOR_REL) if math.isfinite(sigma_log) else math.inf
    )
    samples = tuple((float(math.exp(g)), float(val)) for g, val in zip(grid, values, strict=True))
    manhattan = _manhattan(terms, grid, log_f0)

    def edge(xx: float) -> bool:
        return (xx + log_f0) - grid[0] < 0.5 * step or grid[-1] - (xx + log_f0) < 0.5 * step

    at_edge = edge(x)
    # At the edge of the range the objective is not at a minimum, so its curvature says nothing there.
    flat = leverage < FLAT_LEVERAGE or (not at_edge and not rel_sigma <= FLAT_REL_UNCERTAINTY)
    plain_lo, plain_hi = (math.log(focal_from_fov(width, a)) for a in PLAIN_FOV_RANGE_DEG[::-1])
    reason: UntrustedReason | None = None
    warning = None
    m_sigma = math.hypot(manhattan[1], manhattan[2]) if manhattan is not None else math.inf
    disagree = abs(manhattan[0] - x) if manhattan is not None else math.nan
    consistent = not at_edge and spread <= MAX_REGION_SPREAD_LOG and misfit <= MAX_COHERENT_MISFIT_LOG
    strong = consistent and spread <= STRONG_REGION_SPREAD_LOG and misfit <= STRONG_COHERENT_MISFIT_LOG
    manhattan_x = manhattan[0] if manhattan is not None else math.nan
    m_ok = manhattan is not None and not edge(manhattan_x) and m_sigma <= MAX_MANHATTAN_SIGMA_LOG
    confirmed = m_ok and disagree <= MAX_CUE_DISAGREEMENT_LOG
    in_plain = plain_lo <= x + log_f0 <= plain_hi
    # A confident Manhattan estimate far from a strong plain one: a smooth normal error shared by large parts
    # of the image (a tilt) can bend the plain estimate while its regions still agree.
    contradicted = m_ok and m_sigma <= MAX_MANHATTAN_ALONE_SIGMA_LOG and disagree > MAX_CUE_DISAGREEMENT_LOG
    if flat:
        reason = "flat"
        warning = (
            f"the objective is flat (leverage {leverage:.3f}, relative uncertainty {rel_sigma:.0%}): the "
            "scene has too few oblique surfaces"
        )
    elif terms.plane_share >= SINGLE_PLANE_SHARE:
        reason = "single-plane"
        warning = (
            f"{terms.plane_share:.0%} of the depth lies on one plane: the focal length is not observable"
        )
    elif strong and (in_plain or confirmed) and not contradicted:
        pass  # the plain estimate: its regions agree closely (its normals' errors are not correlated)
    elif m_ok and (m_sigma <= MAX_MANHATTAN_ALONE_SIGMA_LOG or confirmed):
        # The Manhattan estimate: confirmed by the plain estimate, or confident on its own (it is closer to
        # the truth in 95 % of the benchmark's disagreements).
        x = manhattan_x
        estimate = math.exp(x + log_f0)
        share = DISAGREEMENT_SIGMA_SHARE * disagree if consistent else 0.0
        rel_sigma = math.hypot(math.expm1(m_sigma), share, UNCERTAINTY_FLOOR_REL)
    elif m_ok:
        reason = "uncertain"
        warning = (
            f"the estimate {estimate:.1f} px and the Manhattan estimate {math.exp(manhattan_x + log_f0):.1f} "
            f"px are not consistent ({math.expm1(disagree):.0%} apart)"
        )
    elif at_edge:
        reason = "range-edge"
        warning = (
            f"the best focal length {estimate:.1f} px lies at the edge of the {lo_deg:g}-{hi_deg:g} degree "
            "FOV range"
        )
    elif not consistent:
        reason = "uncertain"
        warning = (
            f"the estimate {estimate:.1f} px is not consistent across the image (regions disagree by "
            f"{math.expm1(spread):.0%}, coherent misfit worth {math.expm1(misfit):.0%} of the focal length)"
        )
    elif not in_plain:
        reason = "range-edge"
        warning = (
            f"the estimate {estimate:.1f} px lies outside {PLAIN_FOV_RANGE_DEG[0]:g}-"
            f"{PLAIN_FOV_RANGE_DEG[1]:g} degrees and no Manhattan estimate confirms it"
        )
    else:
        reason = "uncertain"
        warning = (
            f"the estimate {estimate:.1f} px is only loosely consistent across the image (regions "
            f"disagree by {math.expm1(spread):.0%}, coherent misfit worth {math.expm1(misfit):.0%}"
            " of the focal length) "
            "and the scene has no Manhattan frame to confirm it"
        )
    combined = None
    if reason == "uncertain":
        if manhattan is not None and not edge(manhattan_x) and math.isfinite(m_sigma):
            cue = (manhattan_x, math.hypot(m_sigma, disagree, UNTRUSTED_SIGMA_FLOOR_LOG))
        else:
            cue = (x_gradient, math.hypot(sigma_log, spread, misfit, UNTRUSTED_SIGMA_FLOOR_LOG))
        combined = _combine(
            (math.log(fallback) - log_f0, sigma_rel), (cue[0], UNTRUSTED_SIGMA_FACTOR * cue[1])
        )
    use_fallback = reason is not None and combined is None
    if combined is not None:
        focal = math.exp(combined[0] + log_f0)
        focal_sigma = focal * combined[1]
        note = (
            f"combined with the fallback focal length {fallback:.1f} px (± {sigma_rel:.0%}) by their "
            f"uncertainties: {focal:.1f} ± {focal_sigma:.1f} px"
        )
    else:
        focal = fallback if use_fallback else estimate
        focal_sigma = fallback_sigma if use_fallback else estimate * rel_sigma
        note = f"using the fallback focal length {fallback:.1f} px"
    return SelfCalResult(
        focal_px=focal,
        uncertainty_px=math.inf if use_fallback else focal_sigma,
        fov_deg=_fov_deg(width, focal),
        objective_flat=flat,
        fallback=use_fallback,
        estimate_px=estimate,
        samples=samples,
        n_pixels=int(terms.weight.size),
        leverage=leverage,
        warning=f"self-calibration: {warning}; {note}" if warning else None,
        reason=reason,
        focal_sigma_px=focal_sigma,
        plane_share=terms.plane_share,
        region_spread_log=spread,
        coherent_misfit_log=misfit,
        gradient_px=math.exp(x_gradient + log_f0),
        manhattan_px=math.exp(manhattan[0] + log_f0) if manhattan is not None else math.nan,
        manhattan_sigma_log=m_sigma,
        combined=combined is not None,
    )


def _combine(prior: tuple[float, float], cue: tuple[float, float]) -> tuple[float, float] | None:
    """Inverse-variance combination of two ``(log f, sigma_log)`` values; None when either sigma is not
    positive and finite (a ``user`` fallback of sigma 0 outweighs any estimate: the fallback is used)."""
    (x0, s0), (x1, s1) = prior, cue
    if not (0 < s0 < math.inf and 0 < s1 < math.inf):
        return None
    w0, w1 = 1.0 / s0**2, 1.0 / s1**2
    return (w0 * x0 + w1 * x1) / (w0 + w1), 1.0 / math.sqrt(w0 + w1)


def _search(terms: Terms, grid: np.ndarray, log_f0: float) -> tuple[float, np.ndarray]:
    """Minimum of the objective (``log(f / f0)``) over ``grid`` (``log f``): a coarse scan on a subset of the
    pixels (cheap), then a bounded Brent search on all of them within two steps of its best. -> (x, values)"""
    coarse = subset(terms, COARSE_SAMPLES)
    values = np.array([mean_loss(coarse, g - log_f0) for g in grid])
    best = int(np.argmin(values))
    lo = grid[max(best - 2, 0)] - log_f0
    hi = grid[min(best + 2, len(grid) - 1)] - log_f0
    return _refine(terms, lo, hi), values


def _manhattan(terms: Terms, grid: np.ndarray, log_f0: float) -> tuple[float, float, float] | None:
    """The objective's minimum with Manhattan-snapped normals (:mod:`.manhattan`): ``(x, sigma_log,
    region_spread_log)``, or None when the scene has no Manhattan frame."""
    frame = manhattan_frame(terms)
    if frame is None:
        return None
    snapped = snapped_terms(terms, frame)
    if snapped.weight.size < MIN_PIXELS:
        return None
    x, _ = _search(snapped, grid, log_f0)
    return x, uncertainty_log(snapped, x), region_jackknife_log(snapped, x)


def mask_clamped_depth(depth: np.ndarray) -> np.ndarray:
    """``depth`` with the model's far clamp (sky) set to NaN: the largest depth of the map (at least
    :data:`CLAMP_MIN_DEPTH_M`) when :data:`CLAMP_MIN_SHARE` to :data:`CLAMP_MAX_SHARE` of the valid pixels sit
    within :data:`CLAMP_REL` of it (the decoder clamps its canonical depth, which lands anywhere once rescaled
    to the photo's focal length), dilated by a few pixels (the upsampled transition to the clamp is no
    geometry either)."""
    from scipy.ndimage import binary_dilation

    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return depth
    top = float(np.max(depth[valid]))
    if top < CLAMP_MIN_DEPTH_M:
        return depth
    clamped = valid & (depth >= top * (1.0 - CLAMP_REL))
    if not CLAMP_MIN_SHARE * valid.sum() <= clamped.sum() <= CLAMP_MAX_SHARE * valid.sum():
        return depth
    grow = max(1, math.ceil(max(depth.shape) / 400))
    clamped = binary_dilation(clamped, iterations=2 * grow)
    return np.where(clamped, np.nan, depth).astype(np.float32, copy=False)


def calibrate_prediction(
    prediction: Prediction,
    *,
    fov_range_deg: tuple[float, float] = DEFAULT_FOV_RANGE_DEG,
    fallback_focal_px: float | None = None,
    fallback_sigma_rel: float | None = None,
    max_depth_m: float | None = MODEL_MAX_DEPTH_M,
) -> SelfCalResult:
    """Self-calibrate the focal length of one model prediction: ``metrocli.self_calibrate`` (stable API).

    Args:
        prediction: a :class:`~metrocli.prediction.Prediction`: depth (metres, computed with
            ``prediction.intrinsics.fx``), predicted normals, confidence, normal confidence and the
            intrinsics at the photo's resolution.
        fov_range_deg: horizontal field of view range searched (degrees).
        fallback_focal_px: focal length (px) returned when the estimate is not trusted (default: the
            prediction's own).
        fallback_sigma_rel: relative one-sigma uncertainty of that fallback (default
            :data:`DEFAULT_FOCAL_SIGMA_REL`, the 65 degree default's).
        max_depth_m: depth at or beyond this is invalid (default: Metric3D's metric clamp,
            :data:`MODEL_MAX_DEPTH_M`); None keeps all depth.

    Returns:
        :class:`SelfCalResult`: ``focal_px`` and ``focal_sigma_px`` (what to use), ``trusted`` and, when not,
        ``reason`` and ``warning``; ``estimate_px`` is the minimiser even when it is not trusted.

    Raises:
        DepthMapError: the prediction has no normals (a depth-only model), or inconsistent maps.
    """
    if prediction.normal is None:
        raise DepthMapError("self-calibration needs predicted surface normals; this prediction has none")
    intr = prediction.intrinsics
    return self_calibrate(
        prediction.depth,
        prediction.normal,
        width=intr.width,
        height=intr.height,
        cx=intr.cx,
        cy=intr.cy,
        assumed_focal_px=intr.fx,
        confidence=prediction.confidence,
        normal_confidence=prediction.normal_confidence,
        fov_range_deg=fov_range_deg,
        fallback_focal_px=fallback_focal_px,
        fallback_sigma_rel=fallback_sigma_rel,
        max_depth_m=max_depth_m,
    )


def check_focal(
    exif_focal_px: float, selfcal: SelfCalResult, *, tolerance: float = CHECK_FOCAL_TOLERANCE
) -> tuple[float, bool]:
    """Cross-check an EXIF focal length against a self-calibration.

    Returns ``(disagreement_ratio, is_off)``: ``disagreement_ratio = selfcal.estimate_px / exif_focal_px - 1``
    (signed; +0.2 = the image looks 20 % more telephoto than EXIF says) and ``is_off`` when its magnitude
    exceeds ``tolerance`` (10 %) *and* the self-calibration is trusted. An untrusted one gives
    ``(nan, False)``: nothing can be said.
    """
    if not (math.isfinite(exif_focal_px) and exif_focal_px > 0):
        raise DepthMapError(f"EXIF focal length must be positive, got {exif_focal_px!r} px")
    if not selfcal.trusted or not math.isfinite(selfcal.estimate_px):
        return math.nan, False
    ratio = selfcal.estimate_px / exif_focal_px - 1.0
    return ratio, abs(ratio) > tolerance
