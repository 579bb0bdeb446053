"""Procedural textures (numpy only): albedo as a function of surface coordinates in metres.

Every pattern is ``pattern(st, seed, params) -> (N, 3) float32`` albedo in [0, 1], where ``st`` is an
(N, 2) float64 array of surface coordinates in metres (``s`` along the surface's first axis, ``t`` along its
second, for vertical surfaces ``t`` points up) and ``seed`` is an (N,) int64 array (one value per surface, so
two walls with the same material still look different). Patterns have detail down to about 1 cm (value
noise, wood grain, posters, bricks, ...) so feature detectors (SIFT/ORB) find plenty of stable keypoints,
and they are evaluated exactly at each ray hit (no texture images, no tiling repeats).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Pattern = Callable[[np.ndarray, np.ndarray, dict], np.ndarray]


def _u32(a: np.ndarray | int) -> np.ndarray:
    """Integer-valued array (float or int) -> uint32, wrapping modulo 2**32."""
    return np.asarray(a).astype(np.int64).astype(np.uint32)


def _hash_u32(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Hash of uint32 lattice coordinates and seed to float64 in [0, 1) (arithmetic modulo 2**32)."""
    with np.errstate(over="ignore"):
        h = x * np.uint32(374761393) + y * np.uint32(668265263) + s * np.uint32(2246822519)
        h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
        h = (h ^ (h >> np.uint32(16))) * np.uint32(2654435761)
        h ^= h >> np.uint32(15)
    return h * (1.0 / 4294967296.0)


def hash01(ix: np.ndarray | int, iy: np.ndarray | int, seed: np.ndarray | int) -> np.ndarray:
    """Deterministic hash of integer lattice coordinates (and a seed) to float64 in [0, 1)."""
    return _hash_u32(_u32(ix), _u32(iy), _u32(seed))


def value_noise(s: np.ndarray, t: np.ndarray, cell_m: float, seed: np.ndarray | int) -> np.ndarray:
    """Smooth value noise in [0, 1] with lattice spacing ``cell_m`` metres (float64, shape of ``s``)."""
    x = s / cell_m
    y = t / cell_m
    ix = np.floor(x)
    iy = np.floor(y)
    fx = x - ix
    fy = y - iy
    fx = fx * fx * (3.0 - 2.0 * fx)
    fy = fy * fy * (3.0 - 2.0 * fy)
    xu, yu, su = _u32(ix), _u32(iy), _u32(seed)
    one = np.uint32(1)
    with np.errstate(over="ignore"):
        x1, y1 = xu + one, yu + one
    a = _hash_u32(xu, yu, su)
    b = _hash_u32(x1, yu, su)
    c = _hash_u32(xu, y1, su)
    d = _hash_u32(x1, y1, su)
    ab = a + (b - a) * fx
    return ab + ((c + (d - c) * fx) - ab) * fy


def fbm(s: np.ndarray, t: np.ndarray, cell_m: float, seed: np.ndarray | int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of ``octaves`` value-noise layers (each half the cell size), normalised to [0, 1]."""
    total = np.zeros_like(s, dtype=np.float64)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += amp * value_noise(s, t, cell_m / (2**k), np.asarray(seed) + 101 * k)
        norm += amp
        amp *= 0.5
    return total / norm


def dots(
    s: np.ndarray, t: np.ndarray, cell_m: float, seed: np.ndarray | int, prob: float = 0.35
) -> np.ndarray:
    """Sparse random dots (float in [0, 1]: 1 inside a dot, soft edge), at most one per ``cell_m`` cell.

    Each cell holds a dot with probability ``prob``, of random radius (0.12-0.4 cells) and position: blob-like
    features that differ everywhere, so feature descriptors stay distinctive.
    """
    ix, iy = np.floor(s / cell_m), np.floor(t / cell_m)
    present = hash01(ix, iy, np.asarray(seed) + 51) < prob
    r = 0.12 + 0.28 * hash01(ix, iy, np.asarray(seed) + 52)
    cx = r + (1 - 2 * r) * hash01(ix, iy, np.asarray(seed) + 53)
    cy = r + (1 - 2 * r) * hash01(ix, iy, np.asarray(seed) + 54)
    d = np.hypot(s / cell_m - ix - cx, t / cell_m - iy - cy) / r
    return np.where(present, np.clip((1.0 - d) * 4.0, 0.0, 1.0), 0.0)


def _rgb(colour: tuple[float, float, float], n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, dtype=np.float64), (n, 3)).copy()


def _palette_pick(palette: np.ndarray, u01: np.ndarray) -> np.ndarray:
    return palette[np.minimum((u01 * len(palette)).astype(np.int64), len(palette) - 1)]


_POSTER_PALETTE = np.array(
    [
        (0.85, 0.20, 0.15),
        (0.95, 0.75, 0.10),
        (0.15, 0.35, 0.75),
        (0.10, 0.55, 0.30),
        (0.95, 0.95, 0.92),
        (0.10, 0.10, 0.12),
        (0.90, 0.50, 0.60),
        (0.40, 0.20, 0.55),
        (0.20, 0.70, 0.80),
    ]
)


def poster(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """A busy printed poster: nested random colour blocks, circles and noise (strong corners everywhere)."""
    s, t = st[:, 0], st[:, 1]
    cell = params.get("cell_m", 0.07)
    big = _palette_pick(_POSTER_PALETTE, hash01(np.floor(s / (3 * cell)), np.floor(t / (3 * cell)), seed + 7))
    small_ix, small_iy = np.floor(s / cell), np.floor(t / cell)
    small = _palette_pick(_POSTER_PALETTE, hash01(small_ix, small_iy, seed + 11))
    use_small = hash01(small_ix, small_iy, seed + 13) < 0.45
    out = np.where(use_small[:, None], small, big)
    # A circle in some cells.
    fx = s / cell - small_ix - 0.5
    fy = t / cell - small_iy - 0.5
    circ = (fx * fx + fy * fy < 0.12) & (hash01(small_ix, small_iy, seed + 17) < 0.35)
    out = np.where(circ[:, None], _palette_pick(_POSTER_PALETTE, hash01(small_ix, small_iy, seed + 19)), out)
    out *= (0.85 + 0.3 * fbm(s, t, 0.02, seed + 23, 2))[:, None]
    return out


def plaster_wall(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Painted plaster with mottling, plus posters/pictures placed pseudo-randomly on a 1.3 x 1.1 m grid."""
    s, t = st[:, 0], st[:, 1]
    n = len(s)
    base = _rgb(params.get("colour", (0.80, 0.76, 0.68)), n)
    mott = fbm(s, t, 0.25, seed, 3)
    fine = value_noise(s, t, 0.006, seed + 3)
    spots = dots(s, t, 0.05, seed, 0.3)
    tone = 0.5 + 0.5 * hash01(np.floor(s / 0.05), np.floor(t / 0.05), seed + 5)
    out = base * (0.72 + 0.4 * mott + 0.12 * fine - 0.32 * spots * tone)[:, None]
    # Posters: one per grid cell with probability p, random size and offset inside the cell.
    cw, ch = params.get("poster_grid_m", (1.3, 1.1))
    ci, cj = np.floor(s / cw), np.floor((t - 0.6) / ch)
    present = (hash01(ci, cj, seed + 31) < params.get("poster_prob", 0.75)) & (cj >= 0) & (cj <= 0)
    pw = 0.45 + 0.4 * hash01(ci, cj, seed + 37)
    ph = 0.45 + 0.35 * hash01(ci, cj, seed + 41)
    x0 = ci * cw + (cw - pw) * hash01(ci, cj, seed + 43)
    y0 = 0.6 + cj * ch + (ch - ph) * hash01(ci, cj, seed + 47)
    inside = present & (s >= x0) & (s < x0 + pw) & (t >= y0) & (t < y0 + ph)
    if inside.any():
        frame = inside & ((s < x0 + 0.02) | (s > x0 + pw - 0.02) | (t < y0 + 0.02) | (t > y0 + ph - 0.02))
        pst = np.stack([s[inside] - x0[inside], t[inside] - y0[inside]], axis=1)
        pseed = (seed[inside] * 7919 + (ci[inside] * 31 + cj[inside]).astype(np.int64)).astype(np.int64)
        out[inside] = poster(pst, pseed, params)
        out[frame] = (0.12, 0.10, 0.09)
    # Skirting board along the floor.
    skirt = t < params.get("skirting_m", 0.08)
    out[skirt] = _rgb((0.93, 0.92, 0.88), int(skirt.sum())) * (0.9 + 0.1 * fine[skirt])[:, None]
    return out


def wood(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Wooden planks along ``s`` (width ``plank_m``) with per-plank tint, grain lines and dark joints."""
    s, t = st[:, 0], st[:, 1]
    plank = params.get("plank_m", 0.14)
    length = params.get("plank_len_m", 1.2)
    row = np.floor(t / plank)
    offset = hash01(row, 0, seed + 5) * length
    col = np.floor((s + offset) / length)
    tint = 0.75 + 0.45 * hash01(row, col, seed + 9)
    warp = fbm(s, t, 0.3, seed + 13, 2)
    grain = 0.5 + 0.5 * np.sin(t * 160.0 + warp * 18.0 + hash01(row, col, seed) * 6.0)
    fine = value_noise(s * 0.25, t * 3.0, 0.004, seed + 17)
    light = np.asarray(params.get("light", (0.72, 0.52, 0.32)))
    dark = np.asarray(params.get("dark", (0.45, 0.28, 0.15)))
    w = 0.55 * grain + 0.3 * fine + 0.15 * warp
    out = (light + (dark - light) * w[:, None]) * tint[:, None]
    knots = dots(s * 0.35, t, 0.05, seed + 21, 0.15)
    out *= (1.0 - 0.45 * knots)[:, None]
    joint = ((t / plank - row) < 0.04) | (((s + offset) / length - col) < 0.004)
    out[joint] *= 0.45
    return out


def painted(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Painted furniture panels: a colour with soft noise, door grooves every ``panel_m`` and round knobs."""
    s, t = st[:, 0], st[:, 1]
    n = len(s)
    base = _rgb(params.get("colour", (0.25, 0.42, 0.55)), n)
    out = base * (0.80 + 0.25 * fbm(s, t, 0.08, seed, 3) + 0.08 * value_noise(s, t, 0.005, seed + 1))[:, None]
    out *= (1.0 - 0.3 * dots(s, t, 0.04, seed + 3, 0.3))[:, None]
    panel = params.get("panel_m", 0.45)
    ps, pt = s / panel, t / (panel * 1.3)
    groove = ((ps - np.floor(ps)) < 0.02) | ((pt - np.floor(pt)) < 0.015)
    out[groove] *= 0.35
    ks = (ps - np.floor(ps) - 0.85) * panel
    kt = (pt - np.floor(pt) - 0.5) * panel * 1.3
    knob = ks * ks + kt * kt < 0.018**2
    out[knob] = (0.85, 0.78, 0.45)
    return out


def cardboard(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Brown cardboard with fibres, printed labels (bar-code stripes and blocks) and packing tape."""
    s, t = st[:, 0], st[:, 1]
    n = len(s)
    base = _rgb(params.get("colour", (0.66, 0.50, 0.32)), n)
    out = (
        base
        * (0.85 + 0.2 * fbm(s, t, 0.04, seed, 3) + 0.1 * value_noise(s * 4.0, t, 0.01, seed + 2))[:, None]
    )
    out *= (1.0 - 0.35 * dots(s, t, 0.03, seed + 3, 0.35))[:, None]
    # A label: a white rectangle with bar-code stripes and text-like blocks.
    lx0, ly0 = 0.03 + 0.02 * hash01(seed, 1, 3), 0.03 + 0.02 * hash01(seed, 2, 3)
    label = (s > lx0) & (s < lx0 + 0.12) & (t > ly0) & (t < ly0 + 0.08)
    bars = hash01(np.floor(s / 0.004), 0, seed + 5) < 0.5
    text = hash01(np.floor(s / 0.012), np.floor(t / 0.008), seed + 7) < 0.4
    inlabel = np.where(t < ly0 + 0.035, bars, text)
    out[label] = 0.92
    out[label & inlabel] = 0.08
    tape = np.abs(s - params.get("tape_s_m", 0.15)) < 0.025
    out[tape & ~label] = out[tape & ~label] * 0.6 + np.array([0.35, 0.30, 0.20])
    return out


def ceiling(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Off-white ceiling tiles (0.6 m) with speckle."""
    s, t = st[:, 0], st[:, 1]
    n = len(s)
    out = _rgb((0.88, 0.88, 0.86), n) * (0.85 + 0.15 * value_noise(s, t, 0.008, seed))[:, None]
    out *= (1.0 - 0.35 * dots(s, t, 0.04, seed, 0.3))[:, None]
    grid = ((s / 0.6) % 1.0 < 0.02) | ((t / 0.6) % 1.0 < 0.02)
    out[grid] *= 0.6
    return out


def asphalt(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Asphalt: grey speckle, patches, dark grit and dashed white lane markings along s."""
    s, t = st[:, 0], st[:, 1]
    n = len(s)
    speck = value_noise(s, t, 0.012, seed)
    grit = value_noise(s, t, 0.004, seed + 1)
    patch = fbm(s, t, 0.8, seed + 2, 3)
    out = _rgb((0.30, 0.30, 0.31), n) * (0.6 + 0.35 * speck + 0.25 * grit + 0.3 * patch)[:, None]
    lane_t = params.get("lane_t_m")
    if lane_t is not None:
        dash = (np.abs(t - lane_t) < 0.06) & ((s % 3.0) < 1.5)
        out[dash] = 0.85 + 0.1 * grit[dash, None]
    return out


def concrete(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Light concrete with stains and joints every ``joint_m`` along s (slabs when ``slab_m`` is set)."""
    s, t = st[:, 0], st[:, 1]
    n = len(s)
    out = _rgb(params.get("colour", (0.70, 0.69, 0.66)), n)
    out *= (0.75 + 0.2 * fbm(s, t, 0.2, seed, 3) + 0.12 * value_noise(s, t, 0.005, seed + 1))[:, None]
    joint_m = params.get("joint_m", 1.0)
    joints = (s / joint_m) % 1.0 < 0.012
    slab = params.get("slab_m")
    if slab is not None:
        joints |= (t / slab) % 1.0 < 0.02
    out[joints] *= 0.5
    return out


def brick(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Brick façade (bricks 0.215 x 0.065 m, mortar) with dark framed windows on a grid."""
    s, t = st[:, 0], st[:, 1]
    bw, bh = 0.225, 0.075
    row = np.floor(t / bh)
    col = np.floor(s / bw + 0.5 * (row % 2))
    tint = hash01(col, row, seed)
    red = (
        np.array([0.55, 0.22, 0.14])
        + (np.array([0.72, 0.42, 0.28]) - np.array([0.55, 0.22, 0.14])) * tint[:, None]
    )
    out = red * (0.8 + 0.3 * value_noise(s, t, 0.01, seed + 3))[:, None]
    fu = s / bw + 0.5 * (row % 2) - col
    fv = t / bh - row
    mortar = (fu < 0.05) | (fv < 0.13)
    out[mortar] = (
        np.array([0.75, 0.73, 0.68]) * (0.9 + 0.1 * value_noise(s[mortar], t[mortar], 0.01, 5))[:, None]
    )
    # Windows: 1.2 x 1.5 m every 3 m, rows every 3.2 m starting at 1.0 m (ground-floor shop window lower).
    wi, wj = np.floor(s / 3.0), np.floor((t - 0.9) / 3.2)
    ws, wt = s - wi * 3.0 - 0.9, t - 0.9 - wj * 3.2
    win = (ws > 0) & (ws < 1.2) & (wt > 0) & (wt < 1.6) & (wj >= 0)
    frame = win & ((ws < 0.06) | (ws > 1.14) | (wt < 0.06) | (wt > 1.54) | (np.abs(ws - 0.6) < 0.03))
    glass = win & ~frame
    refl = fbm(s[glass] * 0.5, t[glass], 0.3, seed[glass] + 9, 2)
    out[glass] = np.array([0.10, 0.14, 0.20]) + 0.35 * refl[:, None] * np.array([0.6, 0.75, 0.9])
    out[frame] = (0.90, 0.90, 0.88)
    return out


def car_paint(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Car body: glossy paint with panel lines, a dark window band (``window_t_m``) and dark wheel discs."""
    s, t = st[:, 0], st[:, 1]
    n = len(s)
    out = _rgb(params.get("colour", (0.70, 0.10, 0.10)), n)
    out *= (0.85 + 0.2 * fbm(s, t, 0.15, seed, 2) + 0.06 * value_noise(s, t, 0.006, seed + 1))[:, None]
    if params.get("side", True):
        lo, hi = params.get("window_t_m", (0.95, 1.4))
        win = (t > lo) & (t < hi) & (s > 0.5) & (s < params.get("length_m", 4.5) - 0.6)
        pillar = win & (np.abs(s - params.get("length_m", 4.5) * 0.5) < 0.05)
        refl = fbm(s[win], t[win], 0.2, seed[win] + 3, 2)
        out[win] = np.array([0.08, 0.10, 0.13]) + 0.4 * refl[:, None]
        out[pillar] = (0.05, 0.05, 0.05)
        panel = (np.abs(s - params.get("length_m", 4.5) * 0.45) < 0.006) & (t < lo) & (t > 0.3)
        out[panel] *= 0.3
        for wheel_s in params.get("wheels_s_m", ()):
            d2 = (s - wheel_s) ** 2 + (t - 0.33) ** 2
            tyre = d2 < 0.33**2
            rim = d2 < 0.18**2
            out[tyre] = np.array([0.06, 0.06, 0.06]) + 0.05 * value_noise(s[tyre], t[tyre], 0.01, 3)[:, None]
            out[rim] = (
                np.array([0.6, 0.6, 0.62]) * (0.7 + 0.3 * value_noise(s[rim], t[rim], 0.01, 4))[:, None]
            )
    if params.get("end", False):
        w = params.get("width_m", 1.8)
        win = (t > 0.95) & (t < 1.38) & (s > 0.15) & (s < w - 0.15)
        out[win] = np.array([0.08, 0.10, 0.13]) + 0.4 * fbm(s[win], t[win], 0.2, seed[win] + 3, 2)[:, None]
        plate = (np.abs(s - w / 2) < 0.26) & (t > 0.42) & (t < 0.54)
        glyph = hash01(np.floor((s - w / 2) / 0.035), np.floor(t / 0.03), seed + 5) < 0.5
        inner = plate & (np.abs(s - w / 2) < 0.23) & (t > 0.445) & (t < 0.515)
        out[plate] = 0.92
        out[inner & glyph] = 0.05
        lamp = ((s < 0.3) | (s > w - 0.3)) & (s > 0.05) & (s < w - 0.05) & (t > 0.72) & (t < 0.88)
        out[lamp] = np.array([0.9, 0.35, 0.1]) * (0.8 + 0.2 * value_noise(s[lamp], t[lamp], 0.01, 6))[:, None]
        bumper = t < 0.3
        out[bumper] = out[bumper] * 0.25 + 0.05
    return out


def checker(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """A regular checkerboard of ``cell_m`` squares in two colours (periodic: every corner looks alike)."""
    s, t = st[:, 0], st[:, 1]
    cell = params.get("cell_m", 0.2)
    odd = ((np.floor(s / cell) + np.floor(t / cell)) % 2).astype(bool)
    a = np.asarray(params.get("colour", (0.85, 0.85, 0.82)))
    b = np.asarray(params.get("colour2", (0.25, 0.25, 0.28)))
    out = np.where(odd[:, None], b, a)
    return out * (0.97 + 0.03 * value_noise(s, t, 0.05, seed))[:, None]


def tiles(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Square tiles of ``tile_m`` with thin dark grout lines, all the same colour (periodic)."""
    s, t = st[:, 0], st[:, 1]
    tile = params.get("tile_m", 0.2)
    fs, ft = s / tile - np.floor(s / tile), t / tile - np.floor(t / tile)
    grout = (fs < 0.03) | (ft < 0.03)
    base = _rgb(params.get("colour", (0.88, 0.88, 0.86)), len(s))
    out = base * (0.97 + 0.03 * value_noise(s, t, 0.05, seed))[:, None]
    out[grout] = np.asarray(params.get("grout", (0.35, 0.34, 0.32)))
    return out


def plain(st: np.ndarray, seed: np.ndarray, params: dict) -> np.ndarray:
    """Plain paint: one colour with a faint, large-scale mottling (almost no features)."""
    s, t = st[:, 0], st[:, 1]
    base = _rgb(params.get("colour", (0.80, 0.78, 0.72)), len(s))
    return base * (0.96 + 0.06 * fbm(s, t, 0.6, seed, 2))[:, None]


PATTERNS: dict[str, Pattern] = {
    "poster": poster,
    "plaster_wall": plaster_wall,
    "wood": wood,
    "painted": painted,
    "cardboard": cardboard,
    "ceiling": ceiling,
    "asphalt": asphalt,
    "concrete": concrete,
    "brick": brick,
    "car_paint": car_paint,
    "checker": checker,
    "tiles": tiles,
    "plain": plain,
}


@dataclass(frozen=True)
class Material:
    """A named procedural material: ``pattern`` (a key of :data:`PATTERNS`) with its parameters."""

    name: str
    pattern: str
    params: dict = field(default_factory=dict)

    def albedo(self, st: np.ndarray, seed: np.ndarray) -> np.ndarray:
        """(N, 3) float32 albedo in [0, 1] at surface coordinates ``st`` (N, 2) metres, per-point ``seed``."""
        if len(st) == 0:
            return np.zeros((0, 3), np.float32)
        out = PATTERNS[self.pattern](np.asarray(st, np.float64), np.asarray(seed, np.int64), self.params)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
