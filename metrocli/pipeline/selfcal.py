"""``--focal auto``: one model forward, then the focal length from depth–normal consistency (issue 9).

The network runs once with the photo's current intrinsics (EXIF, or the default field of view); its depth
is proportional to the focal length it was given, its normals do not depend on it.
:func:`self_calibrate_prediction` searches the focal length that makes the two agree
(:mod:`metrocli.geometry.selfcal`) and :func:`apply_focal` rescales the prediction to it, without
re-running the network. Nothing here runs the model: :class:`metrocli.pipeline.provider.ModelDepth` does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from metrocli.camera.focal import UNRELIABLE_SCALE
from metrocli.camera.intrinsics import FocalSource, Intrinsics
from metrocli.errors import MetroUsageError
from metrocli.geometry.measure import FOCAL_SIGMA_REL
from metrocli.geometry.selfcal import CHECK_FOCAL_TOLERANCE, SelfCalResult, calibrate_prediction, check_focal
from metrocli.geometry.selfcal.calibrate import DEFAULT_FOV_RANGE_DEG
from metrocli.prediction import Prediction

log = logging.getLogger("metrocli.pipeline.selfcal")


def apply_focal(prediction: Prediction, focal_px: float, source: FocalSource) -> Prediction:
    """The same prediction for another focal length (px of the prediction's image), without a forward.

    Depth scales with the focal length (``depth * focal_px / prediction.intrinsics.fx``); normals and
    confidences are unchanged; ``intrinsics`` get ``fx = fy = focal_px`` and ``focal_source = source``.
    """
    if not (math.isfinite(focal_px) and focal_px > 0):
        raise MetroUsageError(f"focal length must be a positive number of pixels, got {focal_px!r}")
    factor = focal_px / prediction.intrinsics.fx
    depth = (prediction.depth * np.float32(factor)).astype(np.float32, copy=False)
    return replace(prediction, depth=depth, intrinsics=prediction.intrinsics.with_focal(focal_px, source))


def self_calibrate_prediction(
    prediction: Prediction,
    *,
    fov_range_deg: tuple[float, float] = DEFAULT_FOV_RANGE_DEG,
    fallback_focal_px: float | None = None,
    fallback_sigma_rel: float | None = None,
) -> SelfCalResult:
    """Self-calibrate the focal length of one model prediction (pixels of ``prediction``'s image).

    :func:`metrocli.geometry.selfcal.calibrate_prediction` (``metrocli.self_calibrate``) with the CLI's
    message for a model without normals. The depth is taken as computed with ``prediction.intrinsics.fx``;
    the fallback (estimate not trusted) is ``fallback_focal_px`` or that focal length, with
    ``fallback_sigma_rel`` (the default focal length's when None). Raises :class:`MetroUsageError` when the
    prediction has no predicted normals (depth-only models; sensor depth is refused earlier, see
    :func:`metrocli.pipeline.provider.check_focal_auto`).
    """
    if prediction.normal is None:
        raise MetroUsageError(
            f"--focal auto needs predicted surface normals, which model {prediction.model!r} does not "
            "provide; use a ViT model (e.g. vit-small) or give --focal-px/--fov"
        )
    return calibrate_prediction(
        prediction,
        fov_range_deg=fov_range_deg,
        fallback_focal_px=fallback_focal_px,
        fallback_sigma_rel=fallback_sigma_rel,
    )


@dataclass(frozen=True)
class FocalCalibration:
    """The outcome of ``--focal auto`` for one photo.

    Attributes:
        intrinsics: what the photo's depth is now computed with; ``focal_source`` is ``"self-calibrated"``,
            ``"combined"`` (an untrusted estimate combined with the photo's own focal length) or the photo's
            own source when the self-calibration fell back.
        selfcal: the search result (focal, uncertainty, flatness, warning).
        photo_intrinsics: the photo's intrinsics before self-calibration (EXIF, user or default).
    """

    intrinsics: Intrinsics
    selfcal: SelfCalResult
    photo_intrinsics: Intrinsics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the ``selfcal`` record of ``metro depth`` sidecars)."""
        return {
            "intrinsics": self.intrinsics.to_dict(),
            "photo_focal_px": self.photo_intrinsics.fx,
            "photo_focal_source": self.photo_intrinsics.focal_source,
            "selfcal": self.selfcal.to_dict(),
        }

    def report(self) -> dict[str, Any]:
        """Flat JSON-ready summary for per-photo records (``metro reconstruct --focal auto``).

        ``focal_px``/``focal_source`` are what the photo is reconstructed with; ``uncertainty_px`` the
        one-sigma uncertainty of a self-calibrated focal length (None after a fallback);
        ``photo_focal_px``/``photo_focal_source`` the photo's own (EXIF or default) focal length and
        ``disagreement`` the estimate relative to it (``estimate / photo - 1``; None after a fallback).
        """
        ratio, _ = check_focal(self.photo_intrinsics.fx, self.selfcal)
        sc = self.selfcal
        sigma = None if sc.fallback or not math.isfinite(sc.uncertainty_px) else sc.uncertainty_px
        return {
            "focal_px": self.intrinsics.fx,
            "focal_source": self.intrinsics.focal_source,
            "uncertainty_px": sigma,
            "estimate_px": sc.estimate_px if math.isfinite(sc.estimate_px) else None,
            "fallback": sc.fallback,
            "objective_flat": sc.objective_flat,
            "warning": sc.warning,
            "photo_focal_px": self.photo_intrinsics.fx,
            "photo_focal_source": self.photo_intrinsics.focal_source,
            "disagreement": ratio if math.isfinite(ratio) else None,
        }


@dataclass(frozen=True)
class SelfCalibrated:
    """A photo's prediction at its self-calibrated focal length (``selfcal``, ``photo_intrinsics``: see
    :class:`FocalCalibration`)."""

    prediction: Prediction
    selfcal: SelfCalResult
    photo_intrinsics: Intrinsics

    @property
    def calibration(self) -> FocalCalibration:
        """The calibration without the arrays."""
        return FocalCalibration(self.prediction.intrinsics, self.selfcal, self.photo_intrinsics)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (:meth:`FocalCalibration.to_dict`)."""
        return self.calibration.to_dict()

    def report(self) -> dict[str, Any]:
        """Flat JSON-ready summary (:meth:`FocalCalibration.report`)."""
        return self.calibration.report()


def self_calibrated_prediction(
    prediction: Prediction,
    photo_intrinsics: Intrinsics | None = None,
    *,
    fov_range_deg: tuple[float, float] = DEFAULT_FOV_RANGE_DEG,
    label: str | None = None,
) -> SelfCalibrated:
    """Self-calibrate ``prediction`` and rescale it; the fallback is ``photo_intrinsics`` (default: its own).

    Logs the self-calibration warning (flat objective, ...) on ``metrocli.pipeline.selfcal``, prefixed with
    ``label`` (e.g. the photo's name) when given.
    """
    photo_intrinsics = photo_intrinsics or prediction.intrinsics
    result = self_calibrate_prediction(
        prediction,
        fov_range_deg=fov_range_deg,
        fallback_focal_px=photo_intrinsics.fx,
        fallback_sigma_rel=FOCAL_SIGMA_REL.get(str(photo_intrinsics.focal_source)),
    )
    prefix = f"{label}: " if label else ""
    if result.warning:
        unreliable = (
            f": {UNRELIABLE_SCALE}"
            if not result.trusted and photo_intrinsics.focal_source == "default"
            else ""
        )
        log.warning("%s%s%s", prefix, result.warning, unreliable)
    else:
        log.info(
            "%sself-calibrated focal length %.1f ± %.1f px", prefix, result.focal_px, result.focal_sigma_px
        )
    if result.fallback:
        if photo_intrinsics.fx != prediction.intrinsics.fx:
            prediction = apply_focal(prediction, photo_intrinsics.fx, photo_intrinsics.focal_source)
    else:
        prediction = apply_focal(prediction, result.focal_px, result.focal_source)
    return SelfCalibrated(prediction=prediction, selfcal=result, photo_intrinsics=photo_intrinsics)


@dataclass(frozen=True)
class FocalCheck:
    """``metro info --check-focal``: the photo's focal length against the self-calibrated one.

    ``ratio`` is ``selfcal.estimate_px / photo_focal_px - 1`` (nan when the self-calibration has no
    trustworthy estimate); ``is_off`` when ``|ratio|`` exceeds ``tolerance`` (10 %).
    """

    photo_focal_px: float
    photo_focal_source: str
    selfcal: SelfCalResult
    ratio: float
    is_off: bool
    tolerance: float = CHECK_FOCAL_TOLERANCE

    @property
    def message(self) -> str:
        """One line for humans."""
        if not math.isfinite(self.ratio):
            return f"focal check: inconclusive ({self.selfcal.warning or 'no estimate'})"
        verdict = "DISAGREES" if self.is_off else "agrees"
        return (
            f"focal check: {self.photo_focal_source} focal {self.photo_focal_px:.1f} px {verdict} with the "
            f"self-calibrated {self.selfcal.estimate_px:.1f} ± {self.selfcal.uncertainty_px:.1f} px "
            f"({self.ratio:+.1%}, tolerance {self.tolerance:.0%})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "photo_focal_px": self.photo_focal_px,
            "photo_focal_source": self.photo_focal_source,
            "selfcal_focal_px": self.selfcal.estimate_px if math.isfinite(self.selfcal.estimate_px) else None,
            "selfcal": self.selfcal.to_dict(),
            "ratio": self.ratio if math.isfinite(self.ratio) else None,
            "is_off": self.is_off,
            "tolerance": self.tolerance,
        }


def focal_check(photo_intrinsics: Intrinsics, selfcal: SelfCalResult) -> FocalCheck:
    """:class:`FocalCheck` of known intrinsics against a self-calibration result."""
    ratio, is_off = check_focal(photo_intrinsics.fx, selfcal)
    return FocalCheck(
        photo_focal_px=photo_intrinsics.fx,
        photo_focal_source=photo_intrinsics.focal_source,
        selfcal=selfcal,
        ratio=ratio,
        is_off=is_off,
    )
