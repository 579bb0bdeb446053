"""Metric distances between two pixels of a depth map, with an uncertainty.

Each end point ``(u, v)`` gets its depth by edge-aware sub-pixel sampling
(:func:`metrocli.geometry.sampling.sample_depth`) and is backprojected to the camera frame; the distance is
the Euclidean distance of the two 3D points.

Uncertainty model (:class:`ErrorModel`), one standard deviation of the distance:

- ``scale_rel``: a relative error of the metric *scale* shared by the whole depth map (fully correlated
  between the two points). A common scale factor ``s`` scales the distance by ``s``, so it contributes
  ``scale_rel * d``. Monocular metric depth is dominated by this term.
- ``local_rel``: an independent relative depth error of each point at the image's median confidence,
  ``sigma_z = local_rel * z / c`` where ``c = clip(confidence / median confidence, 0.1, 1)`` (points less
  confident than typical get proportionally larger errors; more confident ones are not trusted more).
- ``quantum_m``: depth quantisation of sensor maps (a 16-bit millimetre PNG has 1 mm steps), an
  independent uniform error per point: ``sigma_z = quantum_m / sqrt(12)``.

Independent depth errors move each point along its viewing ray; they propagate to the distance through
``∂d/∂z_i = ±(P1 - P2) · r_i / d`` (``r_i`` the ray with unit z).

Two more terms come from :func:`measure_lines`'s arguments (issue 15):

- ``focal_sigma_rel``: one-sigma relative error of the focal length (by its source: :data:`FOCAL_SIGMA_REL`,
  or a self-calibration's own). It is propagated through the geometry of the two points, not added: model
  depth is proportional to the focal length it was computed with (``Z ∝ f``, ``X, Y`` unchanged), so a
  focal error ``δ`` (of ``log f``) changes the distance by ``δ · Δz² / d``; sensor depth is fixed and the
  lateral coordinates scale with ``1 / f``: ``-δ · (Δx² + Δy²) / d``.
- ``picking_sigma_px``: one-sigma error of each end point's pixel coordinates (sub-pixel picking), per axis;
  propagated by central differences of the distance (the depth re-sampled at the moved pixel).

All terms are independent and add in quadrature; :attr:`Measurement.contributors` lists each one's sigma
(metres).

The model's default (:data:`MODEL_ERROR`) states Metric3D v2's zero-shot accuracy: published AbsRel on
NYUv2 / KITTI is about 0.05–0.09 for the ViT models, taken as a 5 % scale error plus 2 % local error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MeasurementError, MetroUsageError
from metrocli.geometry.backproject import backproject_pixels
from metrocli.geometry.sampling import (
    DEFAULT_MAX_DEPTH_M,
    DEFAULT_MAX_REL_JUMP,
    inside_image,
    sample_depth,
    sample_map,
    valid_depth_mask,
)


@dataclass(frozen=True)
class ErrorModel:
    """Depth error model of a depth source (see the module docstring). All relative values are fractions."""

    scale_rel: float = 0.0
    local_rel: float = 0.0
    quantum_m: float = 0.0
    description: str = ""
    #: ``"model"``: depth proportional to the focal length it was computed with (Metric3D's canonical
    #: depth times ``f / 1000``); ``"sensor"``: depth measured, independent of the focal length.
    kind: Literal["model", "sensor"] = "sensor"


#: Stated error of Metric3D v2 metric depth (5 % scale, 2 % local at median confidence).
MODEL_ERROR = ErrorModel(
    scale_rel=0.05,
    local_rel=0.02,
    description="model: 5% metric scale error + 2% per-point error (Metric3D v2 zero-shot AbsRel 0.05-0.09)",
    kind="model",
)


def sensor_error(quantum_m: float, noise_rel: float = 0.0) -> ErrorModel:
    """Error model of sensor depth quantised in steps of ``quantum_m`` metres (0 for float maps), with an
    optional depth-proportional noise ``noise_rel`` (e.g. 0.01 for a phone LiDAR's ~1 % at a few metres)."""
    noise = f" + {noise_rel:.1%} depth noise" if noise_rel > 0 else ""
    return ErrorModel(
        local_rel=float(noise_rel),
        quantum_m=float(quantum_m),
        description=f"sensor: quantisation {quantum_m * 1000:g} mm{noise}",
        kind="sensor",
    )


#: One-sigma relative error of the focal length by its source (fractions of ``f``; see ``metro info``).
#: ``user``: as stated. ``exif-focal-plane``: FocalLength rounded to 0.1 mm on 4-9 mm phone lenses (uniform
#: +-0.05 mm: 0.3-0.7 %). ``exif-35mm``: the 35 mm equivalent is rounded to 1 mm and its diagonal convention
#: varies between makers (~3 %). ``sensor-table``: the table's sensor width against crops and binning (~5 %).
#: ``default``: the 65 degree default covers 13-120 mm equivalent lenses within 2 sigma (of ``log f``).
#: ``self-calibrated``: the self-calibration's own sigma, passed by the caller.
FOCAL_SIGMA_REL: dict[str, float] = {
    "user": 0.0,
    "exif-focal-plane": 0.005,
    "exif-35mm": 0.03,
    "sensor-table": 0.05,
    "default": 0.75,
}

#: Default one-sigma error (px, per axis) of a picked end point: a numeric ``--line`` is exact to about half
#: a pixel of the photo the user read it from.
PICKING_SIGMA_PX = 0.5

#: A moved end point whose depth differs by more than this fraction has crossed a depth edge (the picking
#: term then holds the end point's depth).
PICKING_MAX_REL_JUMP = 0.05


@dataclass(frozen=True)
class Measurement:
    """One measured line. Pixels in the displayed photo; points in metres in the camera frame."""

    from_px: tuple[float, float]
    to_px: tuple[float, float]
    from_m: tuple[float, float, float]
    to_m: tuple[float, float, float]
    distance_m: float
    uncertainty_m: float
    #: One-sigma contribution (m) of each error term that is not zero: ``focal``, ``depth_scale``,
    #: ``depth_local``, ``quantisation``, ``picking``; they add in quadrature to ``uncertainty_m``.
    contributors: dict[str, float] = field(default_factory=dict)

    @property
    def sigma_m(self) -> float:
        """Alias of :attr:`uncertainty_m` (one sigma, metres)."""
        return self.uncertainty_m

    def to_dict(self) -> dict:
        """JSON-ready dict with the keys of ``metro measure --json``: end points, ``distance_m``,
        ``uncertainty_m`` and its alias ``sigma_m`` (one sigma, metres), and ``contributors`` (each error
        term's sigma in metres, largest first; they add in quadrature to ``sigma_m``)."""
        return {
            "from_px": list(self.from_px),
            "to_px": list(self.to_px),
            "from_m": list(self.from_m),
            "to_m": list(self.to_m),
            "distance_m": self.distance_m,
            "uncertainty_m": self.uncertainty_m,
            "sigma_m": self.uncertainty_m,
            "contributors": dict(sorted(self.contributors.items(), key=lambda kv: -kv[1])),
        }


Line = tuple[float, float, float, float]


def _fmt(u: float, v: float) -> str:
    return f"({u:g}, {v:g})"


def check_point(u: float, v: float, intrinsics: Intrinsics, label: str = "point") -> None:
    """Raise :class:`MetroUsageError` (exit 2) naming the point when ``(u, v)`` is not on the image."""
    if not bool(inside_image(u, v, intrinsics.width, intrinsics.height)):
        raise MetroUsageError(
            f"{label} {_fmt(u, v)} is outside the {intrinsics.width}x{intrinsics.height} image "
            f"(u must be in 0..{intrinsics.width - 1}, v in 0..{intrinsics.height - 1})"
        )


#: Pixels of the regular grid on which the reference (median) confidence of a map is taken.
REFERENCE_GRID_PIXELS = 1_000_000


def measure_lines(
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    lines: Sequence[Line],
    *,
    confidence: np.ndarray | None = None,
    error: ErrorModel = ErrorModel(),
    focal_sigma_rel: float = 0.0,
    picking_sigma_px: float = 0.0,
    max_rel_jump: float = DEFAULT_MAX_REL_JUMP,
    max_depth_m: float = DEFAULT_MAX_DEPTH_M,
) -> list[Measurement]:
    """Measure each line ``(u1, v1, u2, v2)`` (displayed-photo pixels) on a depth map.

    Args:
        depth_m: (H, W) metres; 0, NaN, inf or ``>= max_depth_m`` (sky) is "no depth".
        intrinsics: intrinsics of this H x W image.
        lines: pixel coordinates of the end points.
        confidence: (H, W) model confidence for the ``local_rel`` term, or None (confidence 1 everywhere).
        error: the depth error model (its ``kind`` says how a focal error propagates).
        focal_sigma_rel: one-sigma relative error of the focal length (e.g. ``FOCAL_SIGMA_REL[source]``).
        picking_sigma_px: one-sigma error of each end point's pixel coordinates, per axis.
    Raises:
        MetroUsageError: an end point is outside the image (exit 2).
        MeasurementError: an end point has no valid depth (exit 1).
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(f"depth map shape {depth.shape} does not match the intrinsics")
    for i, (u1, v1, u2, v2) in enumerate(lines, start=1):
        check_point(u1, v1, intrinsics, f"start point of line {i}")
        check_point(u2, v2, intrinsics, f"end point of line {i}")
    conf_ref = None
    if confidence is not None:
        # The median confidence over valid pixels, on a regular grid of at most ~1 MP: the maps are network
        # outputs upsampled to the photo, so a 12 MP map has the median of its grid (and costs 1/12).
        step = max(1, math.ceil(math.sqrt(depth.size / REFERENCE_GRID_PIXELS)))
        grid_depth, grid_conf = depth[::step, ::step], np.asarray(confidence)[::step, ::step]
        valid = valid_depth_mask(grid_depth, max_depth_m) & np.isfinite(grid_conf)
        conf_ref = float(np.median(grid_conf[valid])) if valid.any() else None
    out = []
    for i, (u1, v1, u2, v2) in enumerate(lines, start=1):
        us = np.array([u1, u2], dtype=np.float64)
        vs = np.array([v1, v2], dtype=np.float64)
        z = sample_depth(depth, us, vs, max_rel_jump=max_rel_jump, max_depth_m=max_depth_m)
        for k, which in enumerate(("start", "end")):
            if not np.isfinite(z[k]):
                raise MeasurementError(
                    f"{which} point of line {i} {_fmt(us[k], vs[k])} has no valid depth (0, NaN or sky)"
                )
        p = backproject_pixels(us, vs, z, intrinsics)
        diff = p[0] - p[1]
        d = float(np.linalg.norm(diff))
        terms: dict[str, float] = {"depth_scale": error.scale_rel * d}
        var_q = np.full(2, error.quantum_m / np.sqrt(12.0)) ** 2
        var_l = np.zeros(2)
        if error.local_rel > 0:
            c = np.ones(2)
            if confidence is not None and conf_ref and conf_ref > 0:
                c = np.clip(sample_map(confidence, us, vs).astype(np.float64) / conf_ref, 0.1, 1.0)
                c = np.where(np.isfinite(c), c, 0.1)
            var_l = (error.local_rel * z / c) ** 2
        if d > 0:
            rays = p / z[:, None]
            grad2 = np.array([diff @ rays[0], -(diff @ rays[1])]) ** 2 / d**2
        else:
            grad2 = np.ones(2)
        terms["quantisation"] = math.sqrt(float(np.sum(grad2 * var_q)))
        terms["depth_local"] = math.sqrt(float(np.sum(grad2 * var_l)))
        if focal_sigma_rel > 0 and d > 0:
            # Model depth scales with f (Δz scales); sensor depth is fixed (Δx, Δy scale with 1/f).
            moved = diff[2] ** 2 if error.kind == "model" else diff[0] ** 2 + diff[1] ** 2
            terms["focal"] = focal_sigma_rel * float(moved) / d
        if picking_sigma_px > 0:
            terms["picking"] = picking_sigma_px * _picking_gradient_norm(
                depth, intrinsics, us, vs, z, max_rel_jump, max_depth_m
            )
        contributors = {k: v for k, v in terms.items() if v > 0}
        var = sum(v * v for v in contributors.values())
        out.append(
            Measurement(
                from_px=(float(u1), float(v1)),
                to_px=(float(u2), float(v2)),
                from_m=(float(p[0, 0]), float(p[0, 1]), float(p[0, 2])),
                to_m=(float(p[1, 0]), float(p[1, 1]), float(p[1, 2])),
                distance_m=d,
                uncertainty_m=float(np.sqrt(var)),
                contributors=contributors,
            )
        )
    return out


def _picking_gradient_norm(
    depth: np.ndarray,
    intrinsics: Intrinsics,
    us: np.ndarray,
    vs: np.ndarray,
    z: np.ndarray,
    max_rel_jump: float,
    max_depth_m: float,
    step_px: float = 0.5,
) -> float:
    """Norm of the gradient of the distance with respect to the four pixel coordinates (m per px), by central
    differences with the depth re-sampled at the moved pixels (held at the end point's depth where a moved
    pixel has none or lands across a depth edge: slipping off a surface is a blunder, not picking noise)."""
    grads = []
    for k in range(2):
        for axis in range(2):
            ends = []
            for sign in (-1.0, 1.0):
                u, v = us.copy(), vs.copy()
                (u if axis == 0 else v)[k] += sign * step_px
                zz = sample_depth(depth, u, v, max_rel_jump=max_rel_jump, max_depth_m=max_depth_m)
                zz = np.where(np.isfinite(zz) & (np.abs(zz - z) <= PICKING_MAX_REL_JUMP * z), zz, z)
                p = backproject_pixels(u, v, zz, intrinsics)
                ends.append(float(np.linalg.norm(p[0] - p[1])))
            grads.append((ends[1] - ends[0]) / (2 * step_px))
    return math.sqrt(sum(g * g for g in grads))
