"""The self-calibration objective at one focal length, its uncertainty and leverage (numpy only).

See :mod:`metrocli.geometry.selfcal` for the model; the per-pixel terms come from
:func:`metrocli.geometry.selfcal.terms.prepare_terms`.
"""

from __future__ import annotations

import math

import numpy as np

from metrocli.geometry.selfcal.terms import Terms


def residuals(terms: Terms, log_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Scaled depth-gradient residuals ``(du, dv)`` at ``f = f0 * exp(log_scale)`` after the best smooth
    depth-error field, the camera-facing mask and the field's ridge penalty."""
    f = terms.f0 * math.exp(log_scale)
    den = terms.e + f * terms.pz  # (p . ray) * f: negative for a plane that faces the camera
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_den = 1.0 / den
    facing = den < 0
    du = np.where(facing, terms.gu - terms.px * inv_den, 0.0)
    dv = np.where(facing, terms.gv - terms.py * inv_den, 0.0)
    penalty = 0.0
    if (
        terms.basis is not None
        and terms.weighted_t is not None
        and terms.gram_inv is not None
        and terms.penalty is not None
    ):
        # Profile out the smooth depth-error field: its best gradient field at this focal length.
        n = du.size
        coef = terms.gram_inv @ (terms.weighted_t @ np.concatenate([du, dv]))
        fitted = terms.basis @ coef
        du, dv = du - fitted[:n], dv - fitted[n:]
        penalty = float(np.sum(terms.penalty * coef * coef))
    return du * terms.inv_scale, dv * terms.inv_scale, facing, penalty


def per_pixel_loss(terms: Terms, log_scale: float) -> np.ndarray:
    """Robust (Welsch) per-pixel loss of the depth-gradient residual at focal ``f = f0 * exp(log_scale)``."""
    du, dv, facing, penalty = residuals(terms, log_scale)
    loss = -np.expm1(-(du * du + dv * dv))
    # The ridge penalty, spread evenly over the pixels (the weights sum to 1).
    return np.where(facing, loss, 1.0) + penalty


def coherent_misfit_log(terms: Terms, x: float) -> float:
    """The focal error (in ``log f``) that the spatially coherent part of the misfit at ``x`` could cause.

    The scaled residuals are averaged over the spatial blocks of ``terms.cluster`` (per-pixel noise averages
    out there; a smooth error of the predicted normals does not) and compared with how fast the predicted
    gradients move with ``log f``: RMS block-mean residual / RMS sensitivity.
    """
    du, dv, facing, _ = residuals(terms, x)
    f = terms.f0 * math.exp(x)
    den = terms.e + f * terms.pz
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(facing, -f * terms.pz / (den * den), 0.0) * terms.inv_scale
    ju, jv = terms.px * k, terms.py * k  # d(du, dv) / d(log f)
    w = terms.weight * (du * du + dv * dv < 4.0)  # inliers of the robust loss
    n = int(terms.cluster.max()) + 1
    wc = np.bincount(terms.cluster, weights=w, minlength=n)
    keep = wc > 0
    mu = np.bincount(terms.cluster, weights=w * du, minlength=n)[keep] / wc[keep]
    mv = np.bincount(terms.cluster, weights=w * dv, minlength=n)[keep] / wc[keep]
    share = wc[keep] / wc[keep].sum()
    misfit = math.sqrt(float(np.sum(share * (mu * mu + mv * mv))))
    sens = math.sqrt(float(np.sum(w * (ju * ju + jv * jv)) / max(float(w.sum()), 1e-300)))
    return misfit / sens if sens > 0 else math.inf


def mean_loss(terms: Terms, log_scale: float) -> float:
    """The objective: weighted mean robust loss at ``log(f / f0)``."""
    return float(np.sum(terms.weight * per_pixel_loss(terms, log_scale)))


def _derivatives(terms: Terms, x: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel weighted first and second derivatives of the loss in ``log f`` at ``x`` (central
    differences)."""
    lm = per_pixel_loss(terms, x - eps)
    l0 = per_pixel_loss(terms, x)
    lp = per_pixel_loss(terms, x + eps)
    return terms.weight * (lp - lm) / (2 * eps), terms.weight * (lp - 2 * l0 + lm) / (eps * eps)


def uncertainty_log(terms: Terms, x: float, eps: float = 0.01) -> float:
    """Cluster-robust sandwich estimate of the standard deviation of ``log f`` at the optimum ``x``."""
    slope, curv = _derivatives(terms, x, eps)
    hess = float(np.sum(curv))
    if not hess > 0:
        return math.inf
    per_cluster = np.bincount(terms.cluster, weights=slope)
    return math.sqrt(float(np.sum(per_cluster * per_cluster))) / hess


def region_jackknife_log(terms: Terms, x: float, eps: float = 0.01) -> float:
    """Jackknife standard deviation of ``log f`` over leave-one-region-out refits, each linearised (one Newton
    step from ``x``: ``x_r = x + S_r / (H - H_r)``, ``S_r`` and ``H_r`` the region's share of the slope and
    curvature); ``inf`` with fewer than 3 regions or a refit without curvature.

    Errors correlated across the image (a smooth normal error field) pull a whole region one way, so the
    refits disagree; a region that holds most of the evidence on its own (a near-degenerate view) too.
    """
    if terms.region is None:
        return math.inf
    slope, curv = _derivatives(terms, x, eps)
    n_regions = int(terms.region.max()) + 1
    s_r = np.bincount(terms.region, weights=slope, minlength=n_regions)
    h_r = np.bincount(terms.region, weights=curv, minlength=n_regions)
    present = np.bincount(terms.region, minlength=n_regions) > 0
    s_r, h_r = s_r[present], h_r[present]
    n = s_r.size
    rest = float(np.sum(curv)) - h_r
    if n < 3 or not np.all(rest > 0):
        return math.inf
    moves = s_r / rest
    return math.sqrt((n - 1) / n * float(np.sum((moves - moves.mean()) ** 2)))


def normal_leverage(terms: Terms) -> float:
    """Weighted RMS of |sin(t) cos(t)|, t the predicted normal's angle to the optical axis: the rate (rad per
    unit of log f) at which the depth-derived normals turn with the focal length, near the solution."""
    sin2 = terms.px**2 + terms.py**2
    return math.sqrt(float(np.sum(terms.weight * sin2 * terms.pz**2)))
