"""Per-image precomputation of the self-calibration objective (see :mod:`metrocli.geometry.selfcal`).

Everything here is independent of the focal length: block-averaged inverse depth and predicted normals, box
filtered (``scipy.ndimage.uniform_filter``), their finite differences, the edge / crease / grazing masks, the
pixel weights and the basis of the smooth depth-error field. numpy + SciPy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter

from metrocli.geometry.sampling import valid_depth_mask

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

#: The leave-region-out refits (the trust check) drop one of REGION_CELLS x REGION_CELLS image regions.
REGION_CELLS = 3

#: At most this many pixels enter the objective (a deterministic random subset of the usable ones).
MAX_SAMPLES = 10_000

#: Scale of the robust (Welsch) loss on the depth-gradient residual , in units of the
#: image's median predicted gradient magnitude. The residual is absolute (not relative to each pixel's
#: gradient): a smooth depth error adds the same gradient error to every surface, and strongly inclined
#: surfaces, whose gradient changes most with the focal length, then carry the most weight.
ROBUST_GRADIENT = 2.0

#: The smooth depth-error field fitted jointly with the focal length  holds waves of
#: up to this many cycles per image side (the longer one), plus a linear ramp.
NUISANCE_MAX_CYCLES = 2.0

#: Ridge penalty on the amplitudes of the depth-error field's waves (the ramp gets a quarter of it), relative
#: to the mean squared (scaled) gradient residual. Small: the field is almost free, the penalty only keeps
#: the fit well posed where the pixels do not constrain a wave.
NUISANCE_RIDGE = 0.4

#: The depth-error field is only fitted when at least this many usable pixels per field parameter exist.
NUISANCE_MIN_PIXELS_PER_PARAM = 20

#: Predicted normals that turn by more than this across the difference stencil mark a crease (degrees).
CREASE_DEG = 15.0

#: Relative change of depth per working pixel above which a pixel is a depth edge or seen at grazing angle.
MAX_REL_GRADIENT = 0.08

#: Fewer usable pixels than this: no estimate.
MIN_PIXELS = 200

#: A pixel whose inverse depth an affine function of (u, v) fits to within this relative error lies on that
#: plane (``Terms.plane_share``; the calibration's ``SINGLE_PLANE_SHARE`` decides on one plane).
SINGLE_PLANE_REL = 0.06


@dataclass(frozen=True)
class Terms:
    """Per-pixel terms of the objective that do not depend on the focal length (float64, one per pixel)."""

    px: np.ndarray  # predicted unit normal
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray  # px*(u - cx) + py*(v - cy), pixels
    gu: np.ndarray  # measured d(log inverse depth)/du, per pixel of the input grid
    gv: np.ndarray
    inv_scale: float  # 1 / (ROBUST_GRADIENT * median predicted |g|): Welsch scale of the gradient residual
    weight: np.ndarray  # normalised to sum 1
    cluster: np.ndarray  # spatial block index of each pixel (for the uncertainty)
    f0: float  # assumed focal length, pixels of the input grid (fx)
    plane_share: float = 0.0  # share of valid pixels on the best-fitting single plane (depth geometry)
    region: np.ndarray | None = None  # image region (1/REGION_CELLS of each side) of each pixel
    basis: np.ndarray | None = None  # (2N, P) gradients (u rows, then v rows) of the depth-error field modes
    weighted_t: np.ndarray | None = None  # (P, 2N) basis.T times the pixel weights / scale^2
    gram_inv: np.ndarray | None = None  # (P, P) inverse of weighted_t @ basis + diag(penalty)
    penalty: np.ndarray | None = None  # (P,) ridge penalty per mode
    u: np.ndarray | None = None  # pixel position relative to the principal point (input pixels, square grid)
    v: np.ndarray | None = None


def _block_offsets(k: int) -> list[int]:
    """Offsets of the (at most :data:`BLOCK_SAMPLES` per axis) pixels averaged in each k-pixel block.

    Symmetric about the block centre ``(k - 1) / 2``. Large inputs are model outputs upsampled to the photo,
    smooth at the scale of a block, so a few samples per block see as much as all of them.
    """
    m = min(k, BLOCK_SAMPLES)
    return [math.floor((j + 0.5) * k / m) if m < k else j for j in range(m)]


def _block_mean(
    array: np.ndarray, k: int, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
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


def _box_filter(values: np.ndarray, size: int, full: np.ndarray | None = None) -> np.ndarray:
    """float64 mean over ``size`` x ``size`` windows (odd size, same shape; ``scipy.ndimage.uniform_filter``);
    NaN where the window has a NaN or leaves the image.

    ``full``: the windows without NaN when already known (a boolean map, from the same validity).
    """
    if size <= 1:
        return values
    valid = np.isfinite(values)
    if full is None:
        full = _full_windows(valid, size)
    means = uniform_filter(np.where(valid, values, 0.0).astype(np.float64), size, mode="constant")
    return np.where(full, means, np.nan)


def _full_windows(valid: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool: the ``size`` x ``size`` window (odd size) around the pixel lies on the image and holds
    only ``valid`` pixels (so it is False within ``size // 2`` of the border)."""
    share = uniform_filter(np.asarray(valid, np.float64), size, mode="constant", cval=0.0)
    return share > 1.0 - 0.5 / (size * size)


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


def prepare_terms(
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
) -> tuple[Terms | None, int]:
    """Precompute the objective's terms; intrinsics in pixels of ``depth``'s grid. -> (terms, n_usable)."""
    height, width = depth.shape
    k = max(1, math.ceil(max(height, width) / WORK_MAX_SIDE))

    def inverse(d: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(valid_depth_mask(d, max_depth_m=math.inf), 1.0 / d, np.nan).astype(np.float32)

    # Inverse depth is affine in (u, v) on a plane, so block means, box filters and central differences of it
    # are exact on planes: smoothing costs no bias there.
    inv = _box_filter(_block_mean(depth, k, inverse), SMOOTH_SIZE)
    # Predicted normals are constant on a plane: averaging them over the same window removes i.i.d. noise,
    # which would otherwise bias the (non-linear in the normal) predicted depth gradient.
    pxw, pyw, pzw = (_block_mean(normal[..., i], k) for i in range(3))
    full = _full_windows(np.isfinite(pxw + pyw + pzw), SMOOTH_SIZE)
    pxw, pyw, pzw = (_box_filter(a, SMOOTH_SIZE, full) for a in (pxw, pyw, pzw))
    weight_map: np.ndarray | float = 1.0
    for conf in (confidence, normal_confidence):
        if conf is not None:
            weight_map = weight_map * _normalised_weight(_block_mean(conf, k))
    hw, ww = inv.shape
    weight = np.broadcast_to(np.asarray(weight_map, np.float32), (hw, ww))
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
    plane_share = _single_plane_share(ic, uu, vv, np.isfinite(ic) & np.isfinite(curv))
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
    w = wc.ravel()[idx].astype(np.float64)
    w /= w.sum()
    # Spatial clusters of 1/UNCERTAINTY_CELLS of the image side, for the cluster-robust uncertainty.
    cell = max(1, max(hw, ww) // UNCERTAINTY_CELLS)
    cluster = (rows // cell) * (ww // cell + 1) + cols // cell
    region = np.minimum(rows * REGION_CELLS // (hw - 2 * h), REGION_CELLS - 1) * REGION_CELLS + np.minimum(
        cols * REGION_CELLS // (ww - 2 * h), REGION_CELLS - 1
    )
    terms = Terms(
        px=ppx,
        py=ppy,
        pz=ppz,
        e=ppx * u_s + ppy * v_s,
        gu=gu_s,
        gv=gv_s,
        inv_scale=1.0 / scale,
        weight=w,
        cluster=cluster,
        f0=fx,
        plane_share=plane_share,
        region=region,
        u=u_s,
        v=v_s,
    )
    if terms.weight.size >= NUISANCE_MIN_PIXELS_PER_PARAM * len(_nuisance_modes()):
        side = float(max(hw, ww) * k)  # the longer image side, input pixels
        terms = _with_nuisance(terms, u_s / side, v_s / side, side)
    return terms, n_usable


def _single_plane_share(inv: np.ndarray, uu: np.ndarray, vv: np.ndarray, usable: np.ndarray) -> float:
    """Share of the ``usable`` (valid) pixels whose inverse depth ``inv`` lies within :data:`SINGLE_PLANE_REL`
    of one affine function of ``(u, v)`` (one plane), fitted by least squares, refitted to the pixels it fits.

    Independent of the focal length and of the predicted normals: a single plane (one wall, the floor) leaves
    the focal length unobservable however the normals are predicted.
    """
    rows, cols = np.nonzero(usable)
    if rows.size > 20_000:
        pick = np.linspace(0, rows.size - 1, 20_000).astype(np.int64)
        rows, cols = rows[pick], cols[pick]
    w = inv[rows, cols].astype(np.float64)
    a = np.stack([uu[cols], vv[rows], np.ones(rows.size)], axis=1) * (1.0 / w[:, None])
    keep = np.ones(rows.size, bool)
    share = 0.0
    for _ in range(3):  # fit relative residuals; refit on the inliers
        if keep.sum() < 3:
            break
        coef, *_ = np.linalg.lstsq(a[keep], np.ones(int(keep.sum())), rcond=None)
        rel = np.abs(a @ coef - 1.0)
        inliers = rel < SINGLE_PLANE_REL
        share = float(inliers.mean())
        keep = rel < np.percentile(rel, 60)  # the best-fitting part, so a dominant plane is found
    return share


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


def _with_nuisance(terms: Terms, un: np.ndarray, vn: np.ndarray, side: float) -> Terms:
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


def _project(terms: Terms) -> Terms:
    """``terms`` with the ridge least-squares matrices of its nuisance basis for its weights."""
    assert terms.basis is not None and terms.penalty is not None
    w2 = np.concatenate([terms.weight, terms.weight]) * terms.inv_scale**2
    weighted_t = terms.basis.T * w2
    gram_inv = np.linalg.inv(weighted_t @ terms.basis + np.diag(terms.penalty))
    return replace(terms, weighted_t=weighted_t, gram_inv=gram_inv)


def subset(terms: Terms, max_pixels: int) -> Terms:
    """A regular subset of at most about ``max_pixels`` pixels of ``terms`` (weights renormalised)."""
    n = terms.weight.size
    step = n // max_pixels
    if step < 2 or n // step < 4 * MIN_PIXELS:
        return terms
    return select(terms, np.arange(0, n, step))


def select(terms: Terms, index: np.ndarray) -> Terms:
    """The pixels ``index`` (indices or a boolean mask) of ``terms``, weights renormalised."""
    n = terms.weight.size
    index = np.flatnonzero(index) if index.dtype == bool else index
    weight = terms.weight[index]
    per_pixel = ("px", "py", "pz", "e", "gu", "gv", "cluster", "region", "u", "v")
    picked: dict[str, Any] = {
        name: None if getattr(terms, name) is None else getattr(terms, name)[index] for name in per_pixel
    }
    out = replace(terms, **picked, weight=weight / weight.sum())
    if terms.basis is None:
        return out
    return _project(replace(out, basis=terms.basis[np.concatenate([index, index + n])]))
