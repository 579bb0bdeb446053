"""Standard metric-depth and surface-normal error metrics (numpy only).

Depth metrics follow the usual monocular-depth protocol (Eigen et al.; as used by Metric3D's zero-shot
tables): over pixels whose ground truth lies in ``(min_depth_m, max_depth_m)`` (optionally inside the
Eigen/Garg crop, :func:`crop_mask`), the prediction is clipped to ``[min_depth_m, max_depth_m]`` and

- ``abs_rel``  = mean(|p − g| / g)
- ``sq_rel``   = mean((p − g)² / g)
- ``rmse``     = sqrt(mean((p − g)²))                (metres)
- ``rmse_log`` = sqrt(mean((ln p − ln g)²))
- ``log10``    = mean(|log10 p − log10 g|)
- ``delta1/2/3`` = fraction with max(p/g, g/p) < 1.25, 1.25², 1.25³

Normal metrics: the angle (degrees) between predicted and ground-truth unit normals over pixels where the
ground truth is finite and non-zero: ``mean_deg``, ``median_deg``, ``rmse_deg`` and the fraction within
11.25°, 22.5° and 30°.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

DEPTH_METRICS: tuple[str, ...] = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "delta1",
    "delta2",
    "delta3",
)
NORMAL_METRICS: tuple[str, ...] = (
    "mean_deg",
    "median_deg",
    "rmse_deg",
    "within_11_25",
    "within_22_5",
    "within_30",
)
#: Metrics where higher is better (the others: lower is better).
HIGHER_IS_BETTER = frozenset({"delta1", "delta2", "delta3", "within_11_25", "within_22_5", "within_30"})


Crop = Literal["none", "eigen", "garg"]


def crop_mask(shape: tuple[int, int], crop: Crop) -> np.ndarray:
    """(H, W) bool evaluation region of the standard protocols.

    - ``eigen``: NYUv2's Eigen crop, rows 45-470 and columns 41-600 of a 480 x 640 frame (scaled to other
      sizes);
    - ``garg``: KITTI's Garg crop, rows 40.8 %-99.2 % and columns 3.6 %-96.4 % of the frame;
    - ``none``: everything.
    """
    h, w = shape
    mask = np.zeros((h, w), bool)
    if crop == "none":
        mask[:] = True
    elif crop == "eigen":
        mask[round(45 * h / 480) : round(471 * h / 480), round(41 * w / 640) : round(601 * w / 640)] = True
    elif crop == "garg":
        mask[int(0.40810811 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True
    else:
        raise ValueError(f"unknown crop {crop!r}; choose none, eigen or garg")
    return mask


def depth_eval_mask(gt_m: np.ndarray, min_depth_m: float, max_depth_m: float) -> np.ndarray:
    """(H, W) bool: ground truth finite and strictly inside ``(min_depth_m, max_depth_m)``."""
    gt_m = np.asarray(gt_m, dtype=np.float64)
    return np.isfinite(gt_m) & (gt_m > min_depth_m) & (gt_m < max_depth_m)


def depth_metrics(
    pred_m: np.ndarray,
    gt_m: np.ndarray,
    *,
    min_depth_m: float = 1e-3,
    max_depth_m: float = 80.0,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Depth errors of ``pred_m`` against ``gt_m`` (both (H, W) metres, same shape); see the module docstring.

    ``mask`` (optional (H, W) bool) further restricts the evaluated pixels. Returns every metric of
    :data:`DEPTH_METRICS` plus ``valid_pixels``; all metrics are NaN when no pixel is valid. Non-finite
    predictions count as ``min_depth_m`` after clipping.
    """
    pred = np.asarray(pred_m, dtype=np.float64)
    gt = np.asarray(gt_m, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if not (0 <= min_depth_m < max_depth_m):
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth_m}, {max_depth_m}")
    valid = depth_eval_mask(gt, min_depth_m, max_depth_m)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    n = int(np.count_nonzero(valid))
    if n == 0:
        return {**dict.fromkeys(DEPTH_METRICS, math.nan), "valid_pixels": 0}
    g = gt[valid]
    p = np.nan_to_num(pred[valid], nan=min_depth_m, posinf=max_depth_m, neginf=min_depth_m)
    p = np.clip(p, max(min_depth_m, 1e-6), max_depth_m)
    diff = p - g
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "valid_pixels": n,
    }


def angular_error_deg(pred_normal: np.ndarray, gt_normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel angle (degrees) between two (H, W, 3) normal maps, and the (H, W) bool mask where it is
    defined (both finite and non-zero; vectors need not be unit length)."""
    p = np.asarray(pred_normal, dtype=np.float64)
    g = np.asarray(gt_normal, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[2] != 3:
        raise ValueError(f"normal maps must both be (H, W, 3), got {p.shape} and {g.shape}")
    p0 = np.nan_to_num(p, nan=0.0, posinf=0.0, neginf=0.0)
    g0 = np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
    np_len = np.linalg.norm(p0, axis=2)
    ng_len = np.linalg.norm(g0, axis=2)
    valid = np.isfinite(p).all(axis=2) & np.isfinite(g).all(axis=2) & (np_len > 1e-6) & (ng_len > 1e-6)
    cos = np.einsum("hwc,hwc->hw", p0, g0) / np.where(valid, np_len * ng_len, 1.0)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return np.where(valid, angle, np.nan), valid


def normal_metrics(
    pred_normal: np.ndarray, gt_normal: np.ndarray, *, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Angular errors of (H, W, 3) predicted normals against ground truth; see the module docstring.

    Returns every metric of :data:`NORMAL_METRICS` (fractions in [0, 1]) plus ``valid_pixels``.
    """
    angle, valid = angular_error_deg(pred_normal, gt_normal)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    a = angle[valid]
    if a.size == 0:
        return {**dict.fromkeys(NORMAL_METRICS, math.nan), "valid_pixels": 0}
    return {
        "mean_deg": float(np.mean(a)),
        "median_deg": float(np.median(a)),
        "rmse_deg": float(np.sqrt(np.mean(a**2))),
        "within_11_25": float(np.mean(a < 11.25)),
        "within_22_5": float(np.mean(a < 22.5)),
        "within_30": float(np.mean(a < 30.0)),
        "valid_pixels": int(a.size),
    }


def mean_metrics(rows: Iterable[Mapping[str, float]], keys: Iterable[str]) -> dict[str, float]:
    """Per-key mean over samples (each sample weighs the same, as in the usual protocol), ignoring NaNs
    (samples without valid pixels). NaN where no sample has the key."""
    rows = list(rows)
    out = {}
    for key in keys:
        values = [float(r[key]) for r in rows if key in r and math.isfinite(float(r[key]))]
        out[key] = float(np.mean(values)) if values else math.nan
    return out
