"""Canonical camera space transform (CSTM) and the training augmentations, in numpy + OpenCV (no torch).

Metric3D learns depth as seen by a canonical camera of focal ``F`` = 1000 px (at the model's input
resolution). A frame of focal ``f`` is mapped there in one of two ways:

* ``label``: the image is unchanged, the depth label is multiplied by ``F / fx`` (``scale`` = F / fx) and
  the intrinsics become ``(F, fy · F / fx, cx, cy)`` (official ``LabelScaleCononical``);
* ``image``: the image (and every map) is resized by ``F / f`` with f = (fx + fy) / 2, depth values are
  unchanged (``scale`` = 1), the intrinsics become ``(F, F, cx · r, cy · r)`` (official ``ResizeCanonical``).

Then (training) a random resize by r in ``resize_range`` that keeps the focal (a camera moving along its axis:
depth ÷ r, ``scale`` ÷ r), a random (training) or centred (validation) crop to the model's input size with
padding (image 0 before normalisation, depth -1, semantics -1, normals 0), a horizontal flip, colour jitter
and the official normalisation (ImageNet mean/std on 0..255 RGB).

Pixel convention: pixel ``[v, u]`` is the point (u, v) (no +0.5). A horizontal flip therefore maps
``u -> W - 1 - u`` and ``cx -> W - 1 - cx``, and negates the x component of the normals. (The official
``RandomHorizontalFlip`` writes ``cx -> W - cx`` and also ``cy -> H - cy``, both off; we do not copy that.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np

#: Focal length (px) of the canonical camera at the model's input resolution.
CANONICAL_FOCAL_PX = 1000.0
#: Official input normalisation (RGB, 0..255).
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)
#: Semantic id of sky (depth there is the far canonical value, not a measurement).
SKY_ID = 142
#: Label value of unknown depth (official ``ignore_label``).
INVALID = -1.0

CstmMode = Literal["label", "image"]


@dataclass(frozen=True)
class Frame:
    """One RGB-D frame in camera space.

    ``rgb`` (H, W, 3) uint8; ``depth`` (H, W) float32 (metres before the CSTM, canonical metres after;
    <= 0 = unknown); ``intrinsics`` (fx, fy, cx, cy) px; ``normal`` (H, W, 3) float32 camera-frame unit
    normals towards the camera, 0 = unknown; ``sem`` (H, W) int32 semantic or plane ids (142 sky, -1 none);
    ``scale``: canonical label scale accumulated so far (canonical depth = metric depth · scale);
    ``pad`` [top, bottom, left, right] padding added by the crop; ``sparse``: depth from a sparse sensor
    (resized by scattering valid points instead of nearest-neighbour sampling).
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: tuple[float, float, float, float]
    normal: np.ndarray | None = None
    sem: np.ndarray | None = None
    scale: float = 1.0
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    sparse: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations (defaults follow the official recipe where it makes sense for fine-tuning).

    ``resize_prob``/``resize_range``: random resize that keeps the focal; ``flip_prob``: horizontal flip;
    ``jitter_prob``: photometric distortion (brightness, contrast, saturation, hue); ``gray_prob``: to gray.
    """

    resize_prob: float = 0.5
    resize_range: tuple[float, float] = (0.85, 1.15)
    flip_prob: float = 0.5
    jitter_prob: float = 0.1
    gray_prob: float = 0.1


NO_AUGMENT = AugmentConfig(resize_prob=0.0, flip_prob=0.0, jitter_prob=0.0, gray_prob=0.0)


def _resize_nearest(a: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(a, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)


def _resize_sparse(depth: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a sparse depth map by moving every valid point to its nearest new pixel (no point is lost
    to nearest-neighbour sampling, none is invented)."""
    h, w = depth.shape
    out = np.zeros(size_hw, np.float32)
    v, u = np.nonzero(depth > 0)
    nv = np.clip(np.round(v * (size_hw[0] - 1) / max(h - 1, 1)).astype(int), 0, size_hw[0] - 1)
    nu = np.clip(np.round(u * (size_hw[1] - 1) / max(w - 1, 1)).astype(int), 0, size_hw[1] - 1)
    out[nv, nu] = depth[v, u]
    return out


def resize_frame(frame: Frame, ratio: float) -> Frame:
    """Every map resized by ``ratio`` (image bilinear, labels nearest), principal point scaled with it.

    The focal and depth values are *not* changed here; callers decide what the resize means.
    """
    h, w = frame.depth.shape
    size = (int(h * ratio + 0.5), int(w * ratio + 0.5))
    fx, fy, cx, cy = frame.intrinsics
    rgb = cv2.resize(frame.rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    depth = _resize_sparse(frame.depth, size) if frame.sparse else _resize_nearest(frame.depth, size)
    normal = None if frame.normal is None else _resize_nearest(frame.normal, size)
    sem = None if frame.sem is None else _resize_nearest(frame.sem, size)
    return replace(
        frame, rgb=rgb, depth=depth, normal=normal, sem=sem, intrinsics=(fx, fy, cx * ratio, cy * ratio)
    )


def to_canonical(frame: Frame, mode: CstmMode = "label", focal_px: float = CANONICAL_FOCAL_PX) -> Frame:
    """Map a metric frame into the canonical camera (see the module docstring for the two modes)."""
    fx, fy, cx, cy = frame.intrinsics
    if mode == "label":
        s = focal_px / fx
        depth = np.where(frame.depth > 0, frame.depth * s, frame.depth).astype(np.float32)
        return replace(frame, depth=depth, intrinsics=(focal_px, fy * s, cx, cy), scale=frame.scale * s)
    if mode == "image":
        r = focal_px / ((fx + fy) / 2.0)
        out = resize_frame(frame, r)
        return replace(out, intrinsics=(focal_px, focal_px, out.intrinsics[2], out.intrinsics[3]))
    raise ValueError(f"unknown CSTM mode {mode!r}")


def random_resize(frame: Frame, ratio: float) -> Frame:
    """Zoom by ``ratio`` keeping the focal: objects appear ``ratio`` times larger, so depth ÷ ratio."""
    if ratio == 1.0:
        return frame
    out = resize_frame(frame, ratio)
    depth = np.where(out.depth > 0, out.depth / ratio, out.depth).astype(np.float32)
    return replace(out, depth=depth, scale=frame.scale / ratio)


def crop_or_pad(frame: Frame, size_hw: tuple[int, int], offset: tuple[int, int] | None = None) -> Frame:
    """Crop to ``size_hw`` at ``offset`` (y, x) in the padded frame (None = centred); pads first when smaller.

    Padding is split evenly (the extra pixel at the bottom/right): image 0, depth -1, semantics -1, normals 0.
    """
    h, w = frame.depth.shape
    ch, cw = size_hw
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    top, left = ph // 2, pw // 2
    pad = (top, ph - top, left, pw - left)

    def padded(a: np.ndarray | None, value: float) -> np.ndarray | None:
        if a is None or (ph == 0 and pw == 0):
            return a
        widths = ((pad[0], pad[1]), (pad[2], pad[3])) + ((0, 0),) * (a.ndim - 2)
        return np.pad(a, widths, constant_values=value)

    rgb, depth = padded(frame.rgb, 0), padded(frame.depth, INVALID)
    normal, sem = padded(frame.normal, 0.0), padded(frame.sem, -1)
    assert rgb is not None and depth is not None
    y0, x0 = offset if offset is not None else ((h + ph - ch) // 2, (w + pw - cw) // 2)

    def cut(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[y0 : y0 + ch, x0 : x0 + cw])

    fx, fy, cx, cy = frame.intrinsics
    cut_rgb, cut_depth = cut(rgb), cut(depth)
    assert cut_rgb is not None and cut_depth is not None
    return replace(
        frame,
        rgb=cut_rgb,
        depth=cut_depth,
        normal=cut(normal),
        sem=cut(sem),
        intrinsics=(fx, fy, cx + left - x0, cy + top - y0),
        pad=pad,
    )


def random_crop_offset(
    shape_hw: tuple[int, int], size_hw: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int]:
    """Uniform (y, x) crop offset in the (padded) frame."""
    h, w = max(shape_hw[0], size_hw[0]), max(shape_hw[1], size_hw[1])
    return int(rng.integers(0, h - size_hw[0] + 1)), int(rng.integers(0, w - size_hw[1] + 1))


def hflip(frame: Frame) -> Frame:
    """Mirror left-right: ``cx -> W - 1 - cx``, normal x negated, padding left/right swapped."""
    w = frame.depth.shape[1]
    fx, fy, cx, cy = frame.intrinsics
    normal = None
    if frame.normal is not None:
        normal = frame.normal[:, ::-1].copy()
        normal[..., 0] *= -1
    top, bottom, left, right = frame.pad
    return replace(
        frame,
        rgb=frame.rgb[:, ::-1].copy(),
        depth=frame.depth[:, ::-1].copy(),
        normal=normal,
        sem=None if frame.sem is None else frame.sem[:, ::-1].copy(),
        intrinsics=(fx, fy, w - 1 - cx, cy),
        pad=(top, bottom, right, left),
    )


def colour_jitter(rgb: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Photometric distortion: random brightness (±32), contrast and saturation (×0.5..1.5), hue (±18°),
    each with probability ``jitter_prob``; gray with probability ``gray_prob``."""
    img = rgb.astype(np.float32)
    if rng.random() < cfg.jitter_prob:
        img += rng.uniform(-32, 32)
    if rng.random() < cfg.jitter_prob:
        img *= rng.uniform(0.5, 1.5)
    img = np.clip(img, 0, 255)
    sat, hue = rng.random() < cfg.jitter_prob, rng.random() < cfg.jitter_prob
    if sat or hue:
        hsv = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        if sat:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
        if hue:
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-9, 9)) % 180  # OpenCV hue is degrees / 2
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < cfg.gray_prob:
        img = np.repeat(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    return np.clip(img, 0, 255).astype(np.uint8)


def normalise_image(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ``(x - mean) / std`` (official ``Normalize``)."""
    mean = np.asarray(MEAN_RGB, np.float32)
    std = np.asarray(STD_RGB, np.float32)
    return np.ascontiguousarray(((rgb.astype(np.float32) - mean) / std).transpose(2, 0, 1))


def prepare(
    frame: Frame,
    size_hw: tuple[int, int],
    *,
    mode: CstmMode = "label",
    focal_px: float = CANONICAL_FOCAL_PX,
    augment: AugmentConfig | None = None,
    rng: np.random.Generator | None = None,
) -> Frame:
    """The full training (``augment`` given) or validation (None: centred crop, nothing random) transform.

    Order as the official pipeline: CSTM, random resize, crop/pad, flip, colour jitter. Depth that is
    unknown, sky (``sem == 142``) or padding ends as -1; the result's ``depth`` is the canonical target.
    """
    rng = rng if rng is not None else np.random.default_rng()
    out = to_canonical(frame, mode, focal_px)
    if augment is not None and rng.random() < augment.resize_prob:
        out = random_resize(out, float(rng.uniform(*augment.resize_range)))
    offset = random_crop_offset(out.depth.shape, size_hw, rng) if augment is not None else None
    out = crop_or_pad(out, size_hw, offset)
    if augment is not None and rng.random() < augment.flip_prob:
        out = hflip(out)
    if augment is not None:
        out = replace(out, rgb=colour_jitter(out.rgb, rng, augment))
    depth = np.where(out.depth > 1e-6, out.depth, INVALID).astype(np.float32)
    if out.sem is not None:
        depth[out.sem == SKY_ID] = INVALID
    return replace(out, depth=depth)
