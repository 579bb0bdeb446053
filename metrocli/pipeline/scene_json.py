"""The records of a fused scene: the loaded views, the registration and fusion outcome, the result, and
``scene.json`` beside the mesh, which :class:`~metrocli.pipeline.multiview.MultiviewJob` writes and reads back
to resume (poses, intrinsics, focal lengths, scales, pairs, inputs and options)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.pipeline.provider import DepthMap

if TYPE_CHECKING:
    from metrocli.geometry.posegraph import MultiviewRegistration

#: Version of the scene.json layout.
SCENE_JSON_VERSION = 1


@dataclass(frozen=True)
class LoadedView:
    """One photo with its depth, ready to register."""

    path: Path
    rgb: np.ndarray
    depth: DepthMap
    orientation: int

    @property
    def intrinsics(self) -> Intrinsics:
        return self.depth.intrinsics

    @property
    def selfcal(self) -> dict[str, Any] | None:
        """The ``--focal auto`` report (:meth:`~metrocli.pipeline.selfcal.FocalCalibration.report`)."""
        return self.depth.selfcal.report() if self.depth.selfcal is not None else None


def focal_record(intrinsics: Intrinsics, selfcal: dict[str, Any] | None) -> dict[str, Any]:
    """Per-photo focal length, its source and (self-calibrated) uncertainty for the JSON outputs."""
    out: dict[str, Any] = {
        "focal_px": intrinsics.fx,
        "focal_source": intrinsics.focal_source,
        "focal_uncertainty_px": selfcal["uncertainty_px"] if selfcal else None,
    }
    if selfcal is not None:
        out["selfcal"] = selfcal
    return out


#: A registered photo whose pose is this uncertain (one sigma, ``scene.json``'s ``pose_uncertainty``) is
#: reported: at two sigma its rotation may be off by more than 2 degrees or its position by 10 cm, the bounds
#: that registration with model depth is held to (issue 16). Sensor depth gives 0.01-0.1 degrees.
LOOSE_ROTATION_DEG = 1.0
LOOSE_TRANSLATION_M = 0.05


def loose_poses(photos: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``{photo: why}`` for the ``scene.json`` photo records whose pose uncertainty is over
    :data:`LOOSE_ROTATION_DEG` or :data:`LOOSE_TRANSLATION_M`, or unknown (an infinite one is recorded as
    null; records written before the uncertainty was recorded have none and are not judged)."""
    out: dict[str, str] = {}
    for v in photos:
        if "pose_uncertainty" not in v:
            continue
        sigma = v["pose_uncertainty"] or {}
        rot, trans = sigma.get("rotation_deg"), sigma.get("translation_m")
        if rot is None or trans is None:
            out[v["photo"]] = "pose uncertainty unknown (its edges carry no information)"
        elif rot > LOOSE_ROTATION_DEG or trans > LOOSE_TRANSLATION_M:
            out[v["photo"]] = (
                f"loosely placed: rotation ± {rot:.2f}°, position ± {100 * trans:.1f} cm (1σ); "
                "distances across it may be off accordingly"
            )
    return out


@dataclass(frozen=True)
class MultiviewResult:
    """What :meth:`MultiviewJob.finish` wrote (``skipped`` when the output was already up to date)."""

    output: Path
    json_path: Path
    reference: str
    registered: tuple[str, ...]
    left_out: dict[str, str]
    scales: dict[str, float]
    n_vertices: int
    n_triangles: int
    voxel_m: float
    timings_s: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    focals: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: standard deviation of log(per-photo depth scale) over the registered photos (0 with metric depth,
    #: None when not recorded): how far the photos disagree on the metric scale
    scale_spread: float | None = None
    #: ``{photo: why}``: registered photos whose pose is uncertain (:func:`loose_poses`)
    loose: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; ``focals``: per registered photo ``focal_px``, ``focal_source``,
        ``focal_uncertainty_px`` (self-calibrated only) and, with ``focal_auto``, ``selfcal``."""
        return {
            "output": str(self.output),
            "json": str(self.json_path),
            "outputs": [str(self.output), str(self.json_path)],
            "reference": self.reference,
            "registered": list(self.registered),
            "left_out": dict(self.left_out),
            "scales": dict(self.scales),
            "n_vertices": self.n_vertices,
            "n_triangles": self.n_triangles,
            "voxel_m": self.voxel_m,
            "timings_s": dict(self.timings_s),
            "skipped": self.skipped,
            "focals": {name: dict(rec) for name, rec in self.focals.items()},
            "scale_spread": self.scale_spread,
            "loose": dict(self.loose),
        }


@dataclass(frozen=True)
class FusedScene:
    """Registration and fusion of the loaded views (what :mod:`metrocli.pipeline.scene_json` records)."""

    registration: MultiviewRegistration
    per_photo_scale: bool
    voxel_m: float
    n_vertices: int
    n_triangles: int


def fingerprint(photos: Sequence[Path]) -> list[list[Any]]:
    """Name, size and modification time of each input photo (resume: same inputs)."""
    items: list[list[Any]] = []
    for p in photos:
        st = p.stat()
        items.append([p.name, st.st_size, int(st.st_mtime)])
    return items


def _photo_record(
    view: LoadedView,
    pose: np.ndarray,
    scale: float,
    uncertainty: tuple[float, float] | None = None,
    correction: np.ndarray | None = None,
) -> dict[str, Any]:
    from metrocli.geometry.depth_correction import CORRECTION_TERMS, correction_rms

    selfcal = view.selfcal
    rot, trans = uncertainty if uncertainty is not None else (None, None)
    return {
        "photo": view.path.name,
        "pose_camera_to_reference": np.asarray(pose).round(9).tolist(),
        "intrinsics": view.intrinsics.to_dict(),
        "focal_px": view.intrinsics.fx,
        "focal_source": view.intrinsics.focal_source,
        "orientation": view.orientation,
        "scale": scale,
        "pose_uncertainty": {"rotation_deg": _finite(rot), "translation_m": _finite(trans)},
        "depth_correction": None
        if correction is None
        else {
            "coefficients": dict(zip(CORRECTION_TERMS, np.round(correction, 6).tolist(), strict=True)),
            "rms": _finite(correction_rms(correction, view.rgb.shape)),
        },
        "depth_source": view.depth.label,
        "depth_file": str(view.depth.depth_file) if view.depth.depth_file else None,
        "focal_uncertainty_px": selfcal["uncertainty_px"] if selfcal else None,
        **({"selfcal": selfcal} if selfcal is not None else {}),
    }


def _finite(value: float | None) -> float | None:
    """``value`` rounded for JSON, None when unknown or not finite."""
    return round(float(value), 6) if value is not None and np.isfinite(value) else None


def _pair_record(p: Any, names: Sequence[str]) -> dict[str, Any]:
    """One tried pair: the outcome, and for a registered one its dense verification and residual."""
    out: dict[str, Any] = {
        "a": names[p.i],
        "b": names[p.j],
        "registered": p.ok,
        "matches": p.n_matches,
        "inliers": p.n_inliers,
    }
    if not p.ok:
        out["reason"] = p.reason
        return out
    out["scale_b_over_a"] = p.scale
    for key in ("consistency", "overlap", "photometric", "residual_m"):
        if hasattr(p, key):
            out[key] = _finite(getattr(p, key))
    if getattr(p, "source", ""):
        out["source"] = p.source
    return out


def scene_doc(
    views: Sequence[LoadedView],
    fused: FusedScene,
    out_path: Path,
    left_out: dict[str, str],
    *,
    timings_s: dict[str, float],
    inputs: Sequence[Path],
    options_key: dict[str, Any],
) -> dict[str, Any]:
    """The ``scene.json`` document of a fused scene."""
    reg = fused.registration
    ref_name = views[reg.reference].path.name
    names = [v.path.name for v in views]
    return {
        "version": SCENE_JSON_VERSION,
        "mesh": out_path.name,
        "units": "metres",
        "frame": f"camera frame of {ref_name}: x right, y down, z forward (OpenCV)",
        "reference_photo": ref_name,
        "per_photo_scale": fused.per_photo_scale,
        "scale_reference": reg.scale_reference,
        "scale_meaning": "depth of the photo is multiplied by scale before fusion",
        "depth_correction_meaning": (
            "model depth: depth of the photo is also multiplied by exp(sum of coefficient * term), terms of "
            "x, y in [-1, 1] across the image's width and height: x, y, x2 = x^2 - 1/3, y2 = y^2 - 1/3, "
            "xy = x*y; rms: RMS of that exponent over the image (null: no correction)"
        ),
        "voxel_m": fused.voxel_m,
        "n_vertices": fused.n_vertices,
        "n_triangles": fused.n_triangles,
        "scale_spread": _finite(reg.scale_spread),
        "scale_spread_meaning": "standard deviation of log(scale) over the registered photos",
        "n_registered": len(reg.poses),
        "n_left_out": len(left_out),
        "partial": len(left_out) > len(reg.poses),
        "photos": [
            _photo_record(
                views[k],
                reg.poses[k],
                reg.scales[k],
                reg.pose_uncertainty.get(k),
                reg.depth_correction.get(k),
            )
            for k in sorted(reg.poses)
        ],
        "left_out": [{"photo": n, "reason": r} for n, r in sorted(left_out.items())],
        "pruned_pairs": [[names[i], names[j]] for i, j in reg.pruned],
        "pairs": [_pair_record(p, names) for p in reg.pairs],
        "timings_s": dict(timings_s),
        "inputs": fingerprint(inputs),
        "options": options_key,
    }


def result_from_doc(out_path: Path, json_path: Path, data: dict[str, Any]) -> MultiviewResult:
    """The :class:`MultiviewResult` recorded in a ``scene.json`` (``skipped``: nothing recomputed).
    KeyError/TypeError/ValueError when the document is incomplete."""
    return MultiviewResult(
        out_path,
        json_path,
        data["reference_photo"],
        tuple(v["photo"] for v in data["photos"]),
        {v["photo"]: v["reason"] for v in data["left_out"]},
        {v["photo"]: v["scale"] for v in data["photos"]},
        int(data["n_vertices"]),
        int(data["n_triangles"]),
        float(data["voxel_m"]),
        skipped=True,
        focals={
            v["photo"]: {
                "focal_px": v["focal_px"],
                "focal_source": v["focal_source"],
                "focal_uncertainty_px": v.get("focal_uncertainty_px"),
                **({"selfcal": v["selfcal"]} if "selfcal" in v else {}),
            }
            for v in data["photos"]
        },
        scale_spread=data.get("scale_spread"),
        loose=loose_poses(data["photos"]),
    )
