"""Metric3D training losses, re-derived from the official v2 recipe (``vit.raft5.small.py``) and SILog for v1.

Every function works in the canonical camera space (focal 1000 px at training resolution): ``prediction`` and
``target`` are canonical depths, ``target`` is -1 (or any value <= 1e-8) where there is no ground truth.
Shapes: depth-like maps (B, 1, H, W), normal maps (B, 3, H, W) unit vectors in the camera frame (x right,
y down, z forward) pointing towards the camera, normal outputs (B, 4, H, W) = unit normal + ``kappa``.

Each function returns the **unweighted** loss; :func:`v2_losses` applies the recipe's weights and returns the
terms under the official ``losses_dict`` key names. The numeric quirks of the official implementation are kept
on purpose (they define what the published checkpoints were trained with); each is named in the docstring.

Losses that sample randomly take their draws as an optional argument (``groups``, ``ranges``, ``crops``,
``points``) so a test can inject recorded draws; without one they draw with the given ``torch.Generator`` /
``numpy.random.Generator`` with the same distribution as the official sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Semantic id of sky pixels (Cityscapes/Mapillary convention used by the official data).
SKY_ID = 142
#: Decay of the per-iteration weights of the recurrent refinement (hard-coded 0.9 officially).
SEQUENCE_GAMMA = 0.9


def sequence_weights(n: int, gamma: float = SEQUENCE_GAMMA) -> list[float]:
    """Weights of iterations 0..n-1: ``(gamma ** (15 / (n - 1))) ** (n - 1 - i)`` (the last one weighs 1)."""
    if n == 1:
        return [1.0]
    adjusted = gamma ** (15.0 / (n - 1))
    return [adjusted ** (n - 1 - i) for i in range(n)]


def _zero(*tensors: Tensor) -> Tensor:
    """A zero that stays connected to the graph of ``tensors`` (so backward() works on an empty loss)."""
    return sum(
        (t.sum() * 0 for t in tensors), torch.zeros((), dtype=tensors[0].dtype, device=tensors[0].device)
    )


def _finite_or_zero(loss: Tensor, *tensors: Tensor) -> Tensor:
    """The official losses replace a NaN/inf value by a zero connected to the prediction."""
    return loss if bool(torch.isfinite(loss)) else _zero(*tensors)


def _pixel_grid(height: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, cols) float grids of shape (H, W) in ``like``'s dtype and device."""
    rows = torch.arange(height, dtype=like.dtype, device=like.device)
    cols = torch.arange(width, dtype=like.dtype, device=like.device)
    grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
    return grid_rows, grid_cols


# ------------------------------------------------------------------------------------------------------ VNL


def vnl_points(depth: Tensor, intrinsic: Tensor) -> Tensor:
    """(B, 1, H, W) depth -> (B, H*W, 3) points ``((u-cx)/fx * d, (v-cy)/fx * d, d)``.

    Official quirk: both x and y divide by fx. The pixel offsets are formed in the intrinsics' dtype.
    """
    b, _, h, w = depth.shape
    rows, cols = _pixel_grid(h, w, intrinsic)
    cx = intrinsic[:, 0, 2].view(b, 1, 1)
    cy = intrinsic[:, 1, 2].view(b, 1, 1)
    fx = intrinsic[:, 0, 0].view(b, 1, 1).to(depth.dtype)
    d = depth[:, 0]
    x = (cols - cx).to(depth.dtype) * d / fx
    y = (rows - cy).to(depth.dtype) * d / fx
    return torch.stack([x, y, d], dim=-1).reshape(b, h * w, 3)


def vnl_sample_groups(
    mask: Tensor, sample_ratio: float = 0.2, generator: torch.Generator | None = None
) -> Tensor:
    """(B, 3, N) flat pixel indices of N = int(H*W*ratio) point triples per sample, among ``mask`` pixels.

    Three independent permutations of the valid pixels (row-major order); index 0 pads when fewer are valid.
    """
    b, _, h, w = mask.shape
    n_groups = int(h * w * sample_ratio)
    out = torch.zeros((b, 3, n_groups), dtype=torch.long, device=mask.device)
    for i in range(b):
        valid = torch.nonzero(mask[i, 0].reshape(-1), as_tuple=False)[:, 0]
        take = min(n_groups, valid.numel())
        for k in range(3):
            perm = torch.randperm(valid.numel(), generator=generator, device="cpu").to(mask.device)
            out[i, k, :take] = valid[perm[:take]]
    return out


def _groups(points: Tensor, index: Tensor) -> Tensor:
    """(B, P, 3) points, (B, 3, N) indices -> (B, N, 3 points, 3 xyz)."""
    b = points.shape[0]
    batch = torch.arange(b, device=points.device).view(b, 1, 1)
    return points[batch, index].permute(0, 2, 1, 3)


def _collinear(diffs: Tensor, eps: float, cos_threshold: float = 0.867) -> Tensor:
    """(…, 3 diffs, C) difference vectors -> (…) True where two of them are nearly parallel.

    The official test counts |cos| > threshold over the full 3x3 matrix *including* the diagonal; more than 3
    hits means an off-diagonal pair is nearly parallel.
    """
    norms = diffs.norm(dim=-1)
    energy = diffs @ diffs.transpose(-1, -2)
    cos = energy / (norms[..., :, None] * norms[..., None, :] + eps)
    hits = (cos > cos_threshold) | (cos < -cos_threshold)
    return hits.flatten(-2).sum(-1) > 3


def vnl_loss(
    prediction: Tensor,
    target: Tensor,
    mask: Tensor,
    intrinsic: Tensor,
    *,
    groups: Tensor | None = None,
    sample_ratio: float = 0.2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Virtual-normal loss: normals of random point triples, prediction vs ground truth (L1), worst 75 % kept.

    ``groups``: (B, 3, N) flat pixel indices (``v * W + u``) to use instead of :func:`vnl_sample_groups`.
    Triples are rejected on the ground truth: nearly collinear, all three differences < 5 mm along x, y and z,
    or a depth <= 1e-5. The 25 % smallest errors of the batch are dropped.
    """
    if groups is None:
        groups = vnl_sample_groups(mask, sample_ratio, generator)
    groups = groups.to(device=prediction.device, dtype=torch.long)
    gt = _groups(vnl_points(target, intrinsic), groups)
    pred = _groups(vnl_points(prediction, intrinsic), groups)

    diffs = torch.stack(
        [gt[:, :, 1] - gt[:, :, 0], gt[:, :, 2] - gt[:, :, 0], gt[:, :, 2] - gt[:, :, 1]], dim=2
    )
    near = (diffs.abs() < 0.005).any(dim=2).all(dim=-1)
    keep = (gt[..., 2] > 1e-5).all(dim=-1) & ~(near | _collinear(diffs, 1e-6))
    # Official quirk: where a predicted z is exactly 0, coordinate row k (not point k) is set to 1e-4.
    zero_z = pred[..., 2] == 0
    pred = torch.where(zero_z[:, :, None, :], torch.full_like(pred, 1e-4), pred)

    def unit_normals(g: Tensor) -> Tensor:
        n = torch.linalg.cross(g[:, :, 1] - g[:, :, 0], g[:, :, 2] - g[:, :, 0], dim=-1)
        norm = n.norm(dim=-1, keepdim=True)
        return n / (norm + (norm == 0).to(n.dtype) * 1e-6)

    err = (unit_normals(gt) - unit_normals(pred)).abs().sum(dim=-1)[keep]
    err, _ = torch.sort(err)
    err = err[int(err.numel() * 0.25) :]
    return _finite_or_zero(err.sum() / (err.numel() + 1e-6), prediction)


# ------------------------------------------------------------------------------------- GRU sequence / SILog


def gru_sequence_loss(
    predictions: Sequence[Tensor],
    target: Tensor,
    mask: Tensor,
    confidences: Sequence[Tensor] | None = None,
    gamma: float = SEQUENCE_GAMMA,
) -> Tensor:
    """Weighted L1 over the refinement iterations, plus the confidence regression of each iteration.

    Per iteration: ``L1 = Σ|P-T|·mask / (Σmask + 1e-6)`` over the batch; with confidences, the target
    confidence ``1 - |P-T|/T`` (not detached) on pixels with ``|T-P| < T`` and an L1 to the predicted one.
    (The official stereo term has weight 0 in the recipe and is left out.)
    """
    m = mask.to(target.dtype)
    loss = _zero(*predictions)
    for i, (weight, pred) in enumerate(
        zip(sequence_weights(len(predictions), gamma), predictions, strict=True)
    ):
        l1 = _finite_or_zero(((pred - target).abs() * m).sum() / (m.sum() + 1e-6), pred)
        conf = torch.zeros((), dtype=target.dtype, device=target.device)
        if confidences is not None:
            cm = ((target - pred).abs() < target) & mask
            safe_t = torch.where(cm, target, torch.ones_like(target))
            wanted = (1 - ((pred - safe_t) / safe_t).abs()) * cm
            cmf = cm.to(target.dtype)
            conf = ((confidences[i] - wanted).abs() * cmf).sum() / (cmf.sum() + 1e-6)
            conf = _finite_or_zero(conf, confidences[i])
        loss = loss + (l1 + conf) * weight
    return loss


def silog_loss(prediction: Tensor, target: Tensor, mask: Tensor, variance_focus: float = 0.5) -> Tensor:
    """Scale-invariant log loss (v1): ``mean(d²) - variance_focus · mean(d)²`` with ``d = log P - log T``."""
    if not bool(mask.any()):
        return _zero(prediction)
    d = torch.log(prediction[mask]) - torch.log(target[mask])
    n = d.numel() + 1e-6
    return (d**2).sum() / n - variance_focus * (d.sum() / n) ** 2


# ------------------------------------------------------------------------------------------------------- sky


def sky_regularization_loss(
    prediction: Tensor,
    sem_mask: Tensor,
    prediction_normal: Tensor | None = None,
    *,
    sky_id: int = SKY_ID,
    regress_depth: float = 200.0,
    sky_normal: tuple[float, float, float] = (0.0, 0.0, -1.0),
    normal_weight: float = 1.0,
) -> Tensor:
    """Pushes sky pixels to the far canonical depth (L1 to 200) and their normals towards ``sky_normal``.

    The normal term is ``Σ_sky (1 - cos)`` over sky pixels whose |cos| < 0.999, over the sky pixel count.
    """
    sky = sem_mask == sky_id
    n_sky = int(sky.sum())
    if n_sky == 0:
        return _zero(prediction)
    loss = (prediction[sky] - regress_depth).abs().sum() / (n_sky + 1e-6)
    if prediction_normal is not None:
        ref = torch.tensor(sky_normal, dtype=prediction_normal.dtype, device=prediction_normal.device)
        dot = F.cosine_similarity(prediction_normal[:, :3], ref.view(1, 3, 1, 1), dim=1)
        valid = sky[:, 0] & (dot.detach() < 0.999) & (dot.detach() > -0.999)
        loss = loss + normal_weight * ((1 - dot) * valid).sum() / (n_sky + 1e-6)
    return _finite_or_zero(loss, prediction)


# ------------------------------------------------------------------------- random normalisation (HDN, HDSN)


def _ssi_sum(
    prediction: Tensor, target: Tensor, masks: Tensor, *, masked_scale: bool, count_eps: float
) -> Tensor:
    """Σ_k Σ_{masks_k} |T'-P'| with T' = (T - median)/(scale + 1e-6), likewise P' (median of detached P).

    ``prediction``/``target`` (1, H, W) or (K, H, W) broadcast against ``masks`` (K, H, W). The median is the
    lower middle value (torch.nanmedian). ``masked_scale``: the mean absolute deviation sums over the mask
    (HDN) or over all pixels (HDSN quirk), divided by the mask's count + ``count_eps`` in both cases.
    """
    k = masks.shape[0]
    t = target.expand(k, *masks.shape[1:])
    p = prediction.expand(k, *masks.shape[1:])
    count = masks.flatten(1).sum(1).to(target.dtype) + count_eps

    def median(x: Tensor) -> Tensor:
        med = torch.where(masks, x, torch.full_like(x, float("nan"))).flatten(1).nanmedian(dim=1).values
        return torch.nan_to_num(med, nan=0.0).view(k, 1, 1)

    def normalised(x: Tensor, med: Tensor) -> Tensor:
        dev = (x - med).abs()
        if masked_scale:
            dev = dev * masks
        scale = dev.flatten(1).sum(1).view(k, 1, 1) / count.view(k, 1, 1)
        return (x - med) / (scale + 1e-6)

    t_n = normalised(t, median(t))
    p_n = normalised(p, median(p.detach()))
    return ((t_n - p_n).abs() * masks).sum()


def hdn_sample_ranges(
    target: Tensor, mask: Tensor, rng: np.random.Generator, random_num: int = 10
) -> np.ndarray:
    """(random_num, 2) depth ranges [low, high) for one sample, distributed as the official sampler's.

    Official quirk: the upper fraction is drawn from ``uniform(low_depth + 0.1, 1 - 1e-6)`` where the low
    bound is already in depth units, so it usually exceeds 1 and the ranges are open-ended at the top.
    """
    values = target[mask]
    d_max = float(values.max()) if values.numel() else 0.0
    d_min = float(values.min()) if values.numel() else 0.0
    span = d_max - d_min
    low = rng.uniform(0.0, 0.75, random_num) * span + d_min
    lo_bound = low + 0.1
    high_frac = lo_bound + (1 - 1e-6 - lo_bound) * rng.random(random_num)
    high = high_frac * span + d_min
    return np.stack([low, high], axis=1)


def hdn_random_loss(
    prediction: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    ranges: Sequence[np.ndarray] | None = None,
    random_num: int = 10,
    rng: np.random.Generator | None = None,
    enabled: Sequence[bool] | None = None,
) -> Tensor:
    """Hierarchical depth normalisation over random depth ranges: scale-and-shift-invariant L1 per range.

    ``ranges[b]``: (K, 2) [low, high) depth thresholds of sample b (else drawn by :func:`hdn_sample_ranges`).
    ``enabled[b]`` False skips a sample (official: MapillaryPSD). Normalised by the total masked pixel count.
    """
    rng = rng if rng is not None else np.random.default_rng()
    total = _zero(prediction)
    count = torch.zeros((), dtype=target.dtype, device=target.device)
    for b in range(prediction.shape[0]):
        if enabled is not None and not enabled[b]:
            continue
        t, p, m = target[b], prediction[b], mask[b]
        rb = np.asarray(ranges[b]) if ranges is not None else hdn_sample_ranges(t, m, rng, random_num)
        low = torch.as_tensor(rb[:, 0], dtype=t.dtype, device=t.device).view(-1, 1, 1)
        high = torch.as_tensor(rb[:, 1] + 1e-30, dtype=t.dtype, device=t.device).view(-1, 1, 1)
        masks = (t >= low) & (t < high) & m
        total = total + _ssi_sum(p, t, masks, masked_scale=True, count_eps=1e-6)
        count = count + masks.sum()
    return _finite_or_zero(total / (count + 1e-6), prediction)


def _choice(rng: np.random.Generator, population: int | np.ndarray, size: int) -> np.ndarray:
    """Without replacement when the population allows it (small training crops may not)."""
    n = population if isinstance(population, int) else len(population)
    return rng.choice(population, size, replace=size > n)


def hdsn_sample_crops(height: int, width: int, rng: np.random.Generator, random_num: int = 20) -> np.ndarray:
    """(random_num, 4) crop windows ``y0, y1, x0, x1`` shared by the batch (sides 1/8..1/2 of the image)."""
    ch = _choice(rng, np.arange(int(0.125 * height), int(0.5 * height)), random_num)
    cw = _choice(rng, np.arange(int(0.125 * width), int(0.5 * width)), random_num)
    y0 = _choice(rng, height - int(0.125 * height), random_num)
    x0 = _choice(rng, width - int(0.125 * width), random_num)
    return np.stack([y0, np.minimum(y0 + ch, height), x0, np.minimum(x0 + cw, width)], axis=1)


def hdsn_semantic_ids(
    sem: Tensor,
    rng: np.random.Generator | None,
    random_num: int = 20,
    sky_id: int = SKY_ID,
    min_px: int = 500,
) -> list[int]:
    """Semantic ids (> 0, not sky) covering more than ``min_px`` pixels; a random subset if there are many."""
    ids = torch.unique(sem[(sem > 0) & (sem != sky_id)])
    kept = [int(i) for i in ids if int((sem == i).sum()) > min_px]
    if len(kept) > random_num:
        rng = rng if rng is not None else np.random.default_rng()
        kept = [kept[j] for j in rng.choice(len(kept), random_num, replace=False)]
    return kept


def hdsn_random_loss(
    prediction: Tensor,
    target: Tensor,
    mask: Tensor,
    sem_mask: Tensor | None = None,
    *,
    crops: np.ndarray | None = None,
    sem_ids: Sequence[Sequence[int]] | None = None,
    random_num: int = 20,
    rng: np.random.Generator | None = None,
    enabled: Sequence[bool] | None = None,
) -> Tensor:
    """Hierarchical depth *spatial* normalisation: SSI L1 over random crops, semantic regions and the image.

    ``crops``: (K, 4) windows ``y0, y1, x0, x1`` (else :func:`hdsn_sample_crops`); ``sem_ids[b]``: semantic
    ids of sample b whose regions are added (else :func:`hdsn_semantic_ids`; when empty, region ``sem > 0``).
    Official quirk: the mean absolute deviation sums over *all* pixels (invalid ones at -1 included) and
    divides by the region's valid count.
    """
    rng = rng if rng is not None else np.random.default_rng()
    b_size, _, h, w = target.shape
    if crops is None:
        crops = hdsn_sample_crops(h, w, rng, random_num)
    crop_masks = torch.zeros((len(crops), h, w), dtype=torch.bool, device=target.device)
    for k, (y0, y1, x0, x1) in enumerate(np.asarray(crops, dtype=np.int64)):
        crop_masks[k, y0:y1, x0:x1] = True
    total = _zero(prediction)
    count = torch.zeros((), dtype=target.dtype, device=target.device)
    on = torch.ones(b_size, dtype=torch.bool, device=target.device)
    if enabled is not None:
        on = torch.as_tensor(list(enabled), dtype=torch.bool, device=target.device)
    for b in range(b_size):
        if not bool(on[b]):
            continue
        regions = [crop_masks]
        if sem_mask is not None:
            sem = sem_mask[b, 0]
            ids = list(sem_ids[b]) if sem_ids is not None else hdsn_semantic_ids(sem, rng, random_num)
            if ids:
                regions.append(torch.stack([sem == i for i in ids]))
            else:
                regions.append((sem > 0)[None])
        masks = torch.cat(regions) & mask[b]
        total = total + _ssi_sum(prediction[b], target[b], masks, masked_scale=False, count_eps=1e-10)
        count = count + masks.sum()
    whole = mask[:, 0] & on.view(-1, 1, 1)
    for b in range(b_size):
        total = total + _ssi_sum(
            prediction[b], target[b], whole[b : b + 1], masked_scale=False, count_eps=1e-10
        )
    count = count + whole.sum()
    return _finite_or_zero(total / (count + 1e-6), prediction)


# ------------------------------------------------------------------------------------------------------ PWN


def pwn_plane_ids(plane_ids: Tensor) -> list[int]:
    """Plane ids in ascending order that the official loop visits: ids != 0, and the last one is skipped when
    no pixel has id 0 (the loop runs ``len(unique) - 1`` times)."""
    unique = [int(i) for i in torch.unique(plane_ids)]
    planes = [i for i in unique if i != 0]
    return planes[: len(unique) - 1]


def pwn_sample_groups(
    plane: Tensor, sample_groups: int = 5000, generator: torch.Generator | None = None
) -> tuple[Tensor, bool]:
    """(sample_groups, 3, 2) (row, col) point triples inside one plane's (H, W) mask, and whether it is valid.

    A plane needs >= 0.6 · 3 · sample_groups pixels; below 3 · sample_groups its pixels are topped up with a
    random repeat. Invalid planes return zeros (their groups are never used).
    """
    select = 3 * sample_groups
    pts = torch.nonzero(plane, as_tuple=False)
    if pts.shape[0] < 0.6 * select:
        return torch.zeros((sample_groups, 3, 2), dtype=torch.long, device=plane.device), False
    if pts.shape[0] < select:
        rep = torch.randperm(pts.shape[0], generator=generator)[: select - pts.shape[0]].to(plane.device)
        pts = torch.cat([pts, pts[rep]])
    idx = torch.randperm(pts.shape[0], generator=generator)[:select].to(plane.device)
    return torch.stack([pts[idx[0::3]], pts[idx[1::3]], pts[idx[2::3]]], dim=1), True


def pwn_planes_loss(
    prediction: Tensor,
    intrinsic: Tensor,
    plane_ids: Tensor,
    *,
    has_planes: Sequence[bool],
    points: Sequence[Tensor] | None = None,
    sample_groups: int = 5000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pair-wise normal loss on ground-truth planes: predicted points of one plane should be coplanar.

    ``plane_ids`` (B, 1, H, W) plane-instance ids (0 = none), read only where ``has_planes[b]``.
    ``points[j]`` (P, G, 3, 2) (row, col) triples of the planes of the j-th planar sample (planes in the order
    of :func:`pwn_plane_ids`) instead of :func:`pwn_sample_groups`. Official quirk kept: the back-projection
    uses ``K^-1 @ (row, col, 1)`` (swapped pixel axes), a linear map of the true point cloud.
    """
    total = _zero(prediction)
    count = 0
    b_size, _, h, w = prediction.shape
    rows, cols = _pixel_grid(h, w, intrinsic)
    j = -1
    for b in range(b_size):
        if not has_planes[b]:
            continue
        j += 1
        ids = pwn_plane_ids(plane_ids[b, 0])
        rays = torch.linalg.inv(intrinsic[b]) @ torch.stack([rows, cols, torch.ones_like(rows)]).reshape(
            3, -1
        )
        cloud = (
            (rays.to(prediction.dtype) * prediction[b, 0].reshape(1, -1)).reshape(3, h, w).permute(1, 2, 0)
        )
        for p, plane_id in enumerate(ids):
            plane = plane_ids[b, 0] == plane_id
            plane_valid = int(plane.sum()) >= 0.6 * 3 * sample_groups
            if not plane_valid:
                continue
            if points is not None:
                pts = points[j][p].to(device=prediction.device, dtype=torch.long)
            else:
                pts, _ = pwn_sample_groups(plane, sample_groups, generator)
            g = cloud[pts[..., 0], pts[..., 1]]  # (G, 3 points, 3 xyz)
            xy = g[..., :2]
            diffs = torch.stack([xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0], xy[:, 2] - xy[:, 1]], dim=1)
            near = (diffs.abs() < 0.007).any(dim=1).all(dim=-1)
            keep = ~(_collinear(diffs, 1e-8) | near)
            if int(keep.sum()) < 2:
                total = total + 0.0 * g.sum()
                continue
            g = g[keep]
            n = torch.linalg.cross(g[:, 1] - g[:, 0], g[:, 2] - g[:, 0], dim=-1)
            n = n / (n.norm(dim=-1, keepdim=True) + 1e-8)
            n = torch.where(((n * g[:, 0]).sum(-1) > 0)[:, None], -n, n)
            mean = n.sum(0)
            mean = mean / (mean.norm() + 1e-5)
            total = total + (1.0 - (n * mean).sum(-1)).sum()
            count += n.shape[0]
    return _finite_or_zero(total / (count + 1e-6), prediction)


# -------------------------------------------------------------------------------------- normals (NLL, DeNo)


def normal_branch_loss(
    normal_outputs: Sequence[Tensor], normal: Tensor, mask: Tensor, gamma: float = SEQUENCE_GAMMA
) -> Tensor:
    """Angular von-Mises NLL of each iteration's normal + kappa against GT normals, sequence-weighted.

    Per iteration, over GT pixels with 0.999 > cos > -0.999 (nearly perfect pixels are excluded):
    ``mean(-log(kappa² + 1) + kappa · acos(cos) + log(1 + exp(-π kappa)))``. Fewer than 10 GT pixels -> 0.
    """
    gt_mask = ~torch.all(normal == 0, dim=1, keepdim=True) & mask
    if int(gt_mask.sum()) < 10:
        return _zero(*normal_outputs)
    loss = _zero(*normal_outputs)
    for weight, out in zip(sequence_weights(len(normal_outputs), gamma), normal_outputs, strict=True):
        dot = F.cosine_similarity(out[:, :3], normal, dim=1)
        valid = gt_mask[:, 0] & (dot.detach() < 0.999) & (dot.detach() > -0.999)
        d, kappa = dot[valid], out[:, 3][valid]
        nll = -torch.log(kappa**2 + 1) + kappa * torch.acos(d) + torch.log(1 + torch.exp(-kappa * math.pi))
        loss = loss + _finite_or_zero(nll.mean(), out) * weight
    return loss


def _towards_camera(n: Tensor, xyz: Tensor) -> Tensor:
    return torch.where(((n * xyz).sum(1, keepdim=True) > 0), -n, n)


def _soft_normalise(n: Tensor) -> Tensor:
    return n / (torch.sqrt((n**2).sum(1, keepdim=True) + 1e-4) + 1e-8)


def depth_to_normal(
    depth: Tensor, intrinsic: Tensor, valid: Tensor, z_scale: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Surface normals of a depth map as the official ``Depth2Normal`` computes them (5x5 stencil).

    Points ``d · K^-1 (u, v, 1)`` with z divided by ``z_scale[b]`` (the canonical label scale, so x, y stay
    canonical). Two cross products (offsets 1 and 2, the inner one asymmetric ``u-1`` vs ``u+2``), each
    oriented towards the camera and normalised, averaged. Returns ((B, 3, H, W) normals, zero where a stencil
    end falls outside ``valid`` or the zero padding; (B, 1, H, W) mask = that and ``valid`` at the centre).
    """
    b, _, h, w = depth.shape
    rows, cols = _pixel_grid(h, w, intrinsic)
    rays = torch.linalg.inv(intrinsic) @ torch.stack([cols, rows, torch.ones_like(rows)]).reshape(1, 3, -1)
    xyz = (rays.to(depth.dtype) * depth.reshape(b, 1, -1)).reshape(b, 3, h, w)
    if z_scale is not None:
        zs = z_scale.to(torch.float32).to(depth.dtype).view(b, 1, 1)
        xyz = torch.cat([xyz[:, :2], xyz[:, 2:] / zs[:, None]], dim=1)
    pad = F.pad(xyz, (2, 2, 2, 2))
    vpad = F.pad(valid.to(torch.bool), (2, 2, 2, 2))

    def at(t: Tensor, dv: int, du: int) -> Tensor:
        return t[:, :, 2 + dv : 2 + dv + h, 2 + du : 2 + du + w]

    n1 = torch.linalg.cross(at(pad, 0, -1) - at(pad, 0, 2), at(pad, -1, 0) - at(pad, 2, 0), dim=1)
    n2 = torch.linalg.cross(at(pad, 0, -2) - at(pad, 0, 2), at(pad, -2, 0) - at(pad, 2, 0), dim=1)
    n1 = _soft_normalise(_towards_camera(n1, xyz))
    n2 = _soft_normalise(_towards_camera(n2, xyz))
    n = _towards_camera(_soft_normalise(n1 + n2), xyz)
    stencil = at(vpad, 0, -2) & at(vpad, 0, 2) & at(vpad, -2, 0) & at(vpad, 2, 0)
    n = n * stencil
    return n, stencil & valid.to(torch.bool)


def _top_fraction(score: Tensor, valid: Tensor, ratio: float) -> Tensor:
    """(B, 1, H, W) mask of the int(ratio·H·W) highest ``score`` pixels per sample (invalid ones: -1e4)."""
    b, _, h, w = score.shape
    s = torch.where(valid, score, torch.full_like(score, -1e4)).reshape(b, -1)
    idx = torch.sort(s, dim=1, descending=True, stable=True).indices[:, : int(ratio * h * w)]
    out = torch.zeros_like(s, dtype=torch.bool)
    out.scatter_(1, idx, True)
    return out.view(b, 1, h, w)


def pad_mask(pad: Tensor, height: int, width: int) -> Tensor:
    """(B, 4) [top, bottom, left, right] padding -> (B, 1, H, W) True inside the real image."""
    out = torch.zeros((pad.shape[0], 1, height, width), dtype=torch.bool, device=pad.device)
    for b, (top, bottom, left, right) in enumerate(pad.tolist()):
        out[b, :, top : height - bottom, left : width - right] = True
    return out


def deno_consistency_loss(
    prediction: Tensor,
    confidence: Tensor,
    prediction_normal: Tensor,
    intrinsic: Tensor,
    pad: Tensor,
    scale: Tensor,
    sample_weight: Tensor,
    sampling_ratio: float = 0.7,
) -> Tensor:
    """Depth-normal consistency ('CEL'): predicted normals vs normals of the detached predicted depth.

    Compared on pixels among the ``sampling_ratio`` most confident in *both* kappa and depth confidence, with
    confidence > 0.5 and a full stencil inside the un-padded image. ``sample_weight[b]``: 1 for data with
    normal GT, 2 otherwise. Official quirk: the mean runs over all B·H·W pixels, pixels outside the mask
    contributing their constant weight. (The official code also overwrites kappa/confidence in place.)
    """
    b, _, h, w = prediction.shape
    inside = pad_mask(pad, h, w)
    normal, valid = depth_to_normal(prediction.detach(), intrinsic, inside, scale)
    kappa = prediction_normal[:, 3:4].detach()
    conf = confidence.detach()
    top_n = _top_fraction(kappa, valid, sampling_ratio)
    top_d = _top_fraction(conf, valid, sampling_ratio)
    use = ~torch.all(normal == 0, dim=1, keepdim=True) & valid & top_n & top_d & (conf > 0.5)
    if int(use.sum()) < 10:
        return _zero(prediction_normal)
    dot = F.cosine_similarity(prediction_normal[:, :3], normal, dim=1)
    v = use[:, 0] & (dot.detach() < 0.999) & (dot.detach() > -0.999)
    per_px = (1 - dot * v) * sample_weight.to(dot.dtype).view(b, 1, 1)
    return _finite_or_zero(per_px.mean(), prediction_normal)


# ------------------------------------------------------------------------------------------------ the recipe


#: Data types each v2 loss supervises (the official defaults; ``branch_loss`` zeroes the mask elsewhere).
DATA_TYPES: dict[str, frozenset[str]] = {
    "VNLoss": frozenset({"sfm", "stereo", "lidar", "denselidar", "denselidar_nometric", "denselidar_syn"}),
    "GRUSequenceLoss": frozenset({"lidar", "denselidar", "stereo", "denselidar_syn"}),
    "HDNRandomLoss": frozenset(
        {"sfm", "stereo", "lidar", "denselidar", "denselidar_nometric", "denselidar_syn"}
    ),
    "HDSNRandomLoss": frozenset(
        {"sfm", "stereo", "lidar", "denselidar", "denselidar_nometric", "denselidar_syn"}
    ),
    "NormalBranchLoss": frozenset({"sfm", "stereo", "denselidar", "denselidar_syn"}),
    "SilogLoss": frozenset({"stereo", "lidar"}),
}


@dataclass(frozen=True)
class LossWeights:
    """Weights of the v2 recipe (``vit.raft5.small.py``); ``silog`` is the v1 loss (0 = off in v2)."""

    vnl: float = 1.0
    gru: float = 0.5
    sky: float = 0.001
    hdn: float = 0.5
    hdsn: float = 0.5
    pwn: float = 1.0
    normal: float = 1.0
    deno: float = 0.01
    silog: float = 0.0
    pwn_sample_groups: int = 5000


@dataclass(frozen=True)
class Supervision:
    """One batch of canonical-space supervision (what the official data dict carries to the losses).

    ``target`` (B,1,H,W) canonical depth, <= 1e-8 where unknown; ``intrinsic`` (B,3,3) canonical intrinsics;
    ``sem_mask`` (B,1,H,W) int (plane ids where ``has_planes``, else semantic ids with sky 142, -1 padding);
    ``normal`` (B,3,H,W) GT normals (0 = none); ``pad`` (B,4) [top, bottom, left, right]; ``scale`` (B,)
    label scale f_c/f; ``data_type`` per sample ('lidar', 'denselidar', ...); ``has_planes`` per sample;
    ``deno_weight`` (B,) 1 for data with normal GT else 2; ``enabled`` per sample for HDN/HDSN.
    """

    target: Tensor
    intrinsic: Tensor
    sem_mask: Tensor
    normal: Tensor
    pad: Tensor
    scale: Tensor
    data_type: tuple[str, ...]
    has_planes: tuple[bool, ...]
    deno_weight: Tensor
    enabled: tuple[bool, ...] = field(default=())


@dataclass(frozen=True)
class Draws:
    """Injected random draws (tests); any field left None is drawn from the generators."""

    vnl_groups: Tensor | None = None
    hdn_ranges: Sequence[np.ndarray] | None = None
    hdsn_crops: np.ndarray | None = None
    hdsn_sem_ids: Sequence[Sequence[int]] | None = None
    pwn_points: Sequence[Tensor] | None = None


def _typed_mask(mask: Tensor, data_type: Sequence[str], kind: str) -> Tensor:
    allowed = DATA_TYPES[kind]
    on = torch.tensor([t in allowed for t in data_type], dtype=torch.bool, device=mask.device)
    return mask & on.view(-1, 1, 1, 1)


def v2_losses(
    predictions: Sequence[Tensor],
    confidences: Sequence[Tensor],
    normal_outputs: Sequence[Tensor],
    sup: Supervision,
    *,
    weights: LossWeights = LossWeights(),
    draws: Draws = Draws(),
    generator: torch.Generator | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, Tensor]:
    """All weighted v2 loss terms under the official ``losses_dict`` keys (``decode_*``, ``gru_{i}_*``).

    ``predictions`` / ``confidences`` / ``normal_outputs``: the per-iteration decoder outputs (the last one is
    the final prediction). Terms with weight 0 are left out. The total is ``sum(result.values())``.
    """
    rng = rng if rng is not None else np.random.default_rng()
    pred, conf, pred_n = predictions[-1], confidences[-1], normal_outputs[-1]
    mask = sup.target > 1e-8
    dt = sup.data_type
    enabled = sup.enabled or None
    out: dict[str, Tensor] = {}
    if weights.vnl:
        m = _typed_mask(mask, dt, "VNLoss")
        out["decode_VNLoss"] = weights.vnl * vnl_loss(
            pred, sup.target, m, sup.intrinsic, groups=draws.vnl_groups, generator=generator
        )
    if weights.gru:
        m = _typed_mask(mask, dt, "GRUSequenceLoss")
        out["decode_GRUSequenceLoss"] = weights.gru * gru_sequence_loss(
            predictions, sup.target, m, confidences
        )
    if weights.sky:
        out["decode_SkyRegularizationLoss"] = weights.sky * sky_regularization_loss(
            pred, sup.sem_mask, pred_n
        )
    if weights.hdn:
        m = _typed_mask(mask, dt, "HDNRandomLoss")
        out["decode_HDNRandomLoss"] = weights.hdn * hdn_random_loss(
            pred, sup.target, m, ranges=draws.hdn_ranges, rng=rng, enabled=enabled
        )
    if weights.hdsn:
        m = _typed_mask(mask, dt, "HDSNRandomLoss")
        out["decode_HDSNRandomLoss"] = weights.hdsn * hdsn_random_loss(
            pred,
            sup.target,
            m,
            sup.sem_mask,
            crops=draws.hdsn_crops,
            sem_ids=draws.hdsn_sem_ids,
            rng=rng,
            enabled=enabled,
        )
    if weights.pwn:
        out["decode_PWNPlanesLoss"] = weights.pwn * pwn_planes_loss(
            pred,
            sup.intrinsic,
            sup.sem_mask,
            has_planes=sup.has_planes,
            points=draws.pwn_points,
            sample_groups=weights.pwn_sample_groups,
            generator=generator,
        )
    if weights.normal:
        m = _typed_mask(mask, dt, "NormalBranchLoss")
        out["decode_NormalBranchLoss"] = weights.normal * normal_branch_loss(normal_outputs, sup.normal, m)
    if weights.deno:
        out["decode_DeNoConsistencyLoss"] = weights.deno * deno_consistency_loss(
            pred, conf, pred_n, sup.intrinsic, sup.pad, sup.scale, sup.deno_weight
        )
    if weights.silog:
        m = _typed_mask(mask, dt, "SilogLoss")
        out["decode_SilogLoss"] = weights.silog * silog_loss(pred, sup.target, m)
    if weights.sky:
        n = len(predictions)
        for i, w_i in enumerate(sequence_weights(n)[:-1]):
            term = sky_regularization_loss(predictions[i], sup.sem_mask, normal_outputs[i])
            out[f"gru_{i}_SkyRegularizationLoss"] = weights.sky * term * w_i
    return out
