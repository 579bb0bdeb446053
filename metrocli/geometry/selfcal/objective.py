"""The self-calibration objective at one focal length, its uncertainty and leverage (numpy only).

See :mod:`metrocli.geometry.selfcal` for the model; the per-pixel terms come from
:func:`metrocli.geometry.selfcal.terms.prepare_terms`.
"""

from __future__ import annotations

import math

import numpy as np

from metrocli.geometry.selfcal.terms import Terms


def per_pixel_loss(terms: Terms, log_scale: float) -> np.ndarray:
    """Robust (Welsch) per-pixel loss of the depth-gradient residual at focal ``f = f0 * exp(log_scale)``."""
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
    du, dv = du * terms.inv_scale, dv * terms.inv_scale
    loss = -np.expm1(-(du * du + dv * dv))
    # The ridge penalty, spread evenly over the pixels (the weights sum to 1).
    return np.where(facing, loss, 1.0) + penalty


def mean_loss(terms: Terms, log_scale: float) -> float:
    """The objective: weighted mean robust loss at ``log(f / f0)``."""
    return float(np.sum(terms.weight * per_pixel_loss(terms, log_scale)))


def uncertainty_log(terms: Terms, x: float, eps: float = 0.01) -> float:
    """Cluster-robust sandwich estimate of the standard deviation of ``log f`` at the optimum ``x``."""
    lm = per_pixel_loss(terms, x - eps)
    l0 = per_pixel_loss(terms, x)
    lp = per_pixel_loss(terms, x + eps)
    slope = terms.weight * (lp - lm) / (2 * eps)
    hess = float(np.sum(terms.weight * (lp - 2 * l0 + lm)) / (eps * eps))
    if not hess > 0:
        return math.inf
    per_cluster = np.bincount(terms.cluster, weights=slope)
    return math.sqrt(float(np.sum(per_cluster * per_cluster))) / hess


def normal_leverage(terms: Terms) -> float:
    """Weighted RMS of |sin(t) cos(t)|, t the predicted normal's angle to the optical axis: the rate (rad per
    unit of log f) at which the depth-derived normals turn with the focal length, near the solution."""
    sin2 = terms.px**2 + terms.py**2
    return math.sqrt(float(np.sum(terms.weight * sin2 * terms.pz**2)))
