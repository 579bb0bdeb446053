"""The ``--annotate`` picture: the photo with each measured line and its length, ready to share.

Each line is drawn anti-aliased (rendered supersampled, then downsampled) in its own colour over a dark
halo, so it reads on bright and dark backgrounds; its ends get round markers, and its length ("1.234 m
± 0.062 m": one unit for the whole picture, value and uncertainty alike) sits in a rounded label box with
a dark translucent background beside the line's middle, kept inside the picture. Line width, marker and
font size scale with the photo's size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metrocli.atomic import atomic_path
from metrocli.geometry.measure import Measurement
from metrocli.io.units import LengthUnit, format_with_uncertainty, picture_unit

#: Line colours, cycled (bright, distinct, readable on dark halos).
PALETTE = ((255, 214, 10), (0, 224, 255), (255, 92, 138), (120, 255, 120), (255, 150, 40), (190, 140, 255))
_FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    "DejaVuSans-Bold.ttf",
)
_MAX_SUPERSAMPLED_PIXELS = 24_000_000


def format_distance(distance_m: float) -> str:
    """``"1.234 m"`` from 1 m up, ``"82.4 cm"`` below."""
    if distance_m >= 1.0:
        return f"{distance_m:.3f} m"
    return f"{distance_m * 100:.1f} cm"


def format_uncertainty(uncertainty_m: float) -> str:
    """``"6.2 cm"``, or ``"0.4 mm"`` below 1 cm."""
    if uncertainty_m >= 0.01:
        return f"{uncertainty_m * 100:.1f} cm"
    return f"{uncertainty_m * 1000:.1f} mm"


def label_text(m: Measurement, unit: LengthUnit | None = None) -> str:
    """The label of one measurement: ``"1.234 m ± 6.2 cm"``; with a ``unit`` both in it:
    ``"1.234 m ± 0.062 m"``."""
    if unit is not None:
        return format_with_uncertainty(m.distance_m, m.uncertainty_m, unit)
    return f"{format_distance(m.distance_m)} ± {format_uncertainty(m.uncertainty_m)}"


def _font(size: int):
    from PIL import ImageFont

    for name in _FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _draw_line_aa(base, p1, p2, colour, width: float, marker_r: float) -> None:
    """Draw the halo, the line and the end markers of one measurement, supersampled, onto RGBA ``base``."""
    from PIL import Image, ImageDraw

    pad = marker_r + width * 2 + 4
    x0 = max(0, math.floor(min(p1[0], p2[0]) - pad))
    y0 = max(0, math.floor(min(p1[1], p2[1]) - pad))
    x1 = min(base.width, math.ceil(max(p1[0], p2[0]) + pad) + 1)
    y1 = min(base.height, math.ceil(max(p1[1], p2[1]) + pad) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    area = (x1 - x0) * (y1 - y0)
    ss = int(max(1, min(4, math.floor(math.sqrt(_MAX_SUPERSAMPLED_PIXELS / area)))))
    layer = Image.new("RGBA", ((x1 - x0) * ss, (y1 - y0) * ss), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)

    def xy(p):
        return ((p[0] + 0.5 - x0) * ss, (p[1] + 0.5 - y0) * ss)

    a, b = xy(p1), xy(p2)
    halo = (0, 0, 0, 150)
    draw.line([a, b], fill=halo, width=max(1, round((width + 2.5 * max(1.0, width / 3)) * ss)))
    r_halo = (marker_r + max(1.5, width / 2)) * ss
    for c in (a, b):
        draw.ellipse([c[0] - r_halo, c[1] - r_halo, c[0] + r_halo, c[1] + r_halo], fill=halo)
    draw.line([a, b], fill=(*colour, 255), width=max(1, round(width * ss)))
    r = marker_r * ss
    r_in = max(1.0, marker_r * 0.45) * ss
    for c in (a, b):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=(*colour, 255))
        draw.ellipse([c[0] - r_in, c[1] - r_in, c[0] + r_in, c[1] + r_in], fill=(20, 20, 20, 255))
    if ss > 1:
        layer = layer.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
    base.alpha_composite(layer, (x0, y0))


def _label_candidates(
    m: Measurement, text_w: float, text_h: float, pad: float, offset: float, size: tuple[int, int]
) -> list[tuple[float, float, float, float]]:
    """Label boxes ``(x, y, w, h)`` beside the line's middle, best first: above the line (or left of a
    vertical one), then below, then farther out; all kept inside the picture."""
    (u1, v1), (u2, v2) = m.from_px, m.to_px
    mx, my = (u1 + u2) / 2 + 0.5, (v1 + v2) / 2 + 0.5
    dx, dy = u2 - u1, v2 - v1
    length = math.hypot(dx, dy)
    nx, ny = (-dy / length, dx / length) if length > 0 else (0.0, -1.0)
    if ny > 0 or (ny == 0 and nx > 0):
        nx, ny = -nx, -ny
    bw, bh = text_w + 2 * pad, text_h + 2 * pad
    tx, ty = (dx / length, dy / length) if length > 0 else (1.0, 0.0)
    out = []
    for extra in (0.0, 1.0, 2.0, 3.0, 4.5, 6.0):
        for along in (0.0, -0.25, 0.25):
            for side in (1.0, -1.0):
                # push the box centre out along the normal far enough that the box clears the line
                reach = offset + 0.5 * (abs(nx) * bw + abs(ny) * bh) + extra * (bh + pad)
                cx = mx + side * nx * reach + along * length * tx
                cy = my + side * ny * reach + along * length * ty
                x = min(max(cx - bw / 2, 2), size[0] - bw - 2)
                y = min(max(cy - bh / 2, 2), size[1] - bh - 2)
                out.append((x, y, bw, bh))
    return out


def _place_label(
    candidates: list[tuple[float, float, float, float]],
    placed: list[tuple[float, float, float, float]],
    segments: list[np.ndarray],
    gap: float,
) -> tuple[float, float, float, float]:
    """The first candidate that overlaps no placed label and covers no line; else the least bad one."""
    best, best_cost = candidates[0], math.inf
    for rank, c in enumerate(candidates):
        x, y, w, h = c
        overlap = sum(
            max(0.0, min(x + w + gap, p[0] + p[2]) - max(x - gap, p[0]))
            * max(0.0, min(y + h + gap, p[1] + p[3]) - max(y - gap, p[1]))
            for p in placed
        )
        covered = sum(
            int(np.count_nonzero((s[:, 0] >= x) & (s[:, 0] <= x + w) & (s[:, 1] >= y) & (s[:, 1] <= y + h)))
            for s in segments
        )
        cost = overlap + covered * h * 4 + rank * 1e-3
        if cost < best_cost:
            best, best_cost = c, cost
        if overlap == 0 and covered == 0:
            return c
    return best


def annotate_image(rgb: np.ndarray, measurements: Sequence[Measurement], unit: LengthUnit | None = None):
    """A PIL RGB image of the photo (H, W, 3) uint8 with every measurement drawn and labelled, all in
    ``unit`` (default :func:`~metrocli.io.units.picture_unit`: metres, or centimetres when every length is
    shorter than 1 m)."""
    from PIL import Image, ImageDraw

    unit = unit or picture_unit(m.distance_m for m in measurements)

    base = Image.fromarray(np.asarray(rgb, dtype=np.uint8)[..., :3], "RGB").convert("RGBA")
    w, h = base.size
    scale = max(w, h) / 1000.0
    width = max(2.0, 3.0 * scale)
    marker_r = max(4.0, 6.5 * scale)
    font_size = max(12, round(24 * scale))
    font = _font(font_size)
    for i, m in enumerate(measurements):
        colour = PALETTE[i % len(PALETTE)]
        _draw_line_aa(base, m.from_px, m.to_px, colour, width, marker_r)
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    pad = max(4.0, font_size * 0.4)
    placed: list[tuple[float, float, float, float]] = []
    # points along every line (and its end markers' extent) that labels should not cover
    t = np.linspace(0.0, 1.0, 64)[:, None]
    segments = [
        np.asarray(m.from_px) + 0.5 + t * (np.asarray(m.to_px) - np.asarray(m.from_px)) for m in measurements
    ]
    labels = []
    for i, m in enumerate(measurements):
        text = label_text(m, unit)
        if len(measurements) > 1:
            text = f"{i + 1}: {text}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        candidates = _label_candidates(m, right - left, bottom - top, pad, marker_r + width, (w, h))
        box = _place_label(candidates, placed, segments, pad)
        placed.append(box)
        labels.append((text, left, top, box))
    # leaders first (a label that had to move away points at the nearest part of its line), then the boxes
    for i, (_text, _left, _top, (x, y, bw, bh)) in enumerate(labels):
        colour = PALETTE[i % len(PALETTE)]
        seg = segments[i]
        near_box = np.stack([np.clip(seg[:, 0], x, x + bw), np.clip(seg[:, 1], y, y + bh)], axis=1)
        dist = np.linalg.norm(near_box - seg, axis=1)
        k = int(np.argmin(dist))
        if dist[k] > 2.5 * (marker_r + width):
            ends = [tuple(near_box[k]), tuple(seg[k])]
            draw.line(ends, fill=(0, 0, 0, 150), width=max(1, round(width * 1.6)))
            draw.line(ends, fill=(*colour, 255), width=max(1, round(width * 0.6)))
    for i, (text, left, top, (x, y, bw, bh)) in enumerate(labels):
        colour = PALETTE[i % len(PALETTE)]
        draw.rounded_rectangle(
            [x, y, x + bw, y + bh],
            radius=max(3, round(bh * 0.25)),
            fill=(18, 18, 22, 210),
            outline=(*colour, 255),
            width=max(1, round(width * 0.6)),
        )
        draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, 255))
    base.alpha_composite(overlay)
    return base.convert("RGB")


def write_annotated(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    measurements: Sequence[Measurement],
    unit: LengthUnit | None = None,
) -> Path:
    """Write the annotated photo (see :func:`annotate_image`) as a PNG at ``path``, atomically."""
    path = Path(path)
    image = annotate_image(rgb, measurements, unit)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=False)
    return path
