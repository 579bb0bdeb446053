"""Measuring real distances on one photo: photo -> depth (model or sensor) -> 3D points -> distances.

:func:`measure_photo` is what ``metro measure`` calls; :class:`MeasureSession` keeps the depth of one photo
for the interactive picker, which measures many lines on it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from metrocli.camera.focal import UNRELIABLE_SCALE
from metrocli.camera.photo import Photo
from metrocli.errors import MetroError
from metrocli.geometry.measure import (
    FOCAL_SIGMA_REL,
    PICKING_SIGMA_PX,
    Line,
    Measurement,
    check_point,
    measure_lines,
)
from metrocli.pipeline.provider import DepthMap, DepthProvider


def focal_sigma_rel(depth: DepthMap) -> float:
    """One-sigma relative error of the focal length ``depth`` is metric with: the self-calibration's own
    (or its fallback's) with ``--focal auto``, else :data:`~metrocli.geometry.measure.FOCAL_SIGMA_REL` of
    the focal source."""
    k = depth.intrinsics
    if depth.selfcal is not None:
        sc = depth.selfcal.selfcal  # a fallback carries its source's sigma (self_calibrated_prediction)
        if math.isfinite(sc.focal_sigma_px):
            return sc.focal_sigma_px / sc.focal_px
        k = depth.selfcal.photo_intrinsics
    return FOCAL_SIGMA_REL.get(str(k.focal_source), FOCAL_SIGMA_REL["default"])


def measurement_warnings(photo: Photo, depth: DepthMap) -> tuple[str, ...]:
    """The warnings that hold for the result: the photo's, with the default-focal warning replaced by the
    self-calibration's outcome under ``--focal auto`` (a trusted self-calibration makes it moot, an untrusted
    one keeps it and says why)."""
    out = list(photo.warnings)
    sc = depth.selfcal.selfcal if depth.selfcal is not None else None
    if sc is not None:
        if not sc.trusted:
            out.append(sc.warning or "self-calibration not trusted; using the photo's focal length")
        else:
            out = [w for w in out if UNRELIABLE_SCALE not in w]
    return tuple(out)


@dataclass(frozen=True)
class MeasureResult:
    """The measurements of one photo.

    Attributes:
        image: path of the photo.
        focal_px: focal length (px) of the displayed photo used for backprojection.
        focal_source: where it came from (``"exif-35mm"``, ``"user"``, ...).
        measurements: one :class:`Measurement` per line, in the order given.
        depth_source: ``"sensor"`` or the model's preset name.
        error_model: one line describing the uncertainty model.
        annotated: path of the ``--annotate`` picture, or None.
        focal_sigma_px: one-sigma uncertainty of ``focal_px`` (px), propagated into every distance.
        warnings: what holds for this result (default focal length, untrusted self-calibration, ...).
        failed: each line that could not be measured: its 1-based number among the lines given, and why.
    """

    image: str
    focal_px: float
    focal_source: str
    measurements: tuple[Measurement, ...]
    depth_source: str = ""
    error_model: str = ""
    annotated: str | None = None
    focal_sigma_px: float = 0.0
    warnings: tuple[str, ...] = ()
    failed: tuple[tuple[int, str], ...] = ()

    def to_dict(self) -> dict:
        """The ``metro measure --json`` object: image, focal_px, focal_source, focal_sigma_px, depth_source,
        error_model, warnings, measurements (each with ``sigma_m`` and its ``contributors``) and failed
        (``{"line", "error"}`` for each line not measured; empty when every line was)."""
        return {
            "image": self.image,
            "focal_px": self.focal_px,
            "focal_source": self.focal_source,
            "focal_sigma_px": self.focal_sigma_px,
            "depth_source": self.depth_source,
            "error_model": self.error_model,
            "warnings": list(self.warnings),
            "measurements": [m.to_dict() for m in self.measurements],
            "failed": [{"line": line, "error": error} for line, error in self.failed],
        }


@dataclass(frozen=True)
class MeasureSession:
    """A photo with its depth, ready to measure any number of lines."""

    photo: Photo
    depth: DepthMap

    def check(self, lines: Sequence[Line]) -> None:
        """Usage error naming the first point that is outside the photo."""
        check_lines(lines, self.photo)

    def measure(self, lines: Sequence[Line]) -> list[Measurement]:
        """Measurements of ``lines`` (displayed-photo pixels), by ``measure_lines``."""
        return measure_lines(
            self.depth.depth_m,
            self.depth.intrinsics,
            lines,
            confidence=self.depth.confidence,
            error=self.depth.error,
            focal_sigma_rel=focal_sigma_rel(self.depth),
            picking_sigma_px=PICKING_SIGMA_PX,
        )

    def measure_each(self, lines: Sequence[Line]) -> tuple[list[Measurement], list[tuple[int, MetroError]]]:
        """Measure each line on its own (the same numbers as :meth:`measure`): the measurements of the valid
        lines and, for each invalid one, its 1-based number and error (a point outside the photo or without
        valid depth), so that one bad line never loses the others."""
        done: list[Measurement] = []
        failed: list[tuple[int, MetroError]] = []
        for i, line in enumerate(lines, start=1):
            try:
                done.extend(self.measure([line]))
            except MetroError as exc:
                # measure_lines numbers the single line 1: name it by its place on the command line
                failed.append((i, type(exc)(str(exc).replace(" of line 1 ", f" of line {i} ", 1))))
        return done, failed

    def result(
        self,
        measurements: Sequence[Measurement],
        annotated: str | None = None,
        failed: Sequence[tuple[int, MetroError]] = (),
    ) -> MeasureResult:
        """The result of ``measurements``, with the lines that failed (:meth:`measure_each`'s numbers)."""
        k = self.depth.intrinsics
        return MeasureResult(
            image=str(self.photo.path),
            focal_px=float(k.fx),
            focal_source=str(k.focal_source),
            measurements=tuple(measurements),
            depth_source=self.depth.label,
            error_model=self.depth.error.description,
            annotated=annotated,
            focal_sigma_px=float(k.fx) * focal_sigma_rel(self.depth),
            warnings=measurement_warnings(self.photo, self.depth),
            failed=tuple((line, str(error)) for line, error in failed),
        )


def check_lines(lines: Sequence[Line], photo: Photo) -> None:
    """Raise :class:`~metrocli.errors.MetroUsageError` for the first end point outside ``photo``."""
    k = photo.intrinsics
    for i, (u1, v1, u2, v2) in enumerate(lines, start=1):
        check_point(u1, v1, k, f"start point of line {i}")
        check_point(u2, v2, k, f"end point of line {i}")


def open_session(
    photo_path: str | os.PathLike[str],
    provider: DepthProvider,
    *,
    lines: Sequence[Line] = (),
    partial: bool = False,
) -> MeasureSession:
    """Load the photo, check ``lines`` against its size (before any model runs), and get its depth.

    ``partial``: only fail when no line lies inside the photo (the others are reported by
    :meth:`MeasureSession.measure_each`).

    Measuring needs depth only: the model's normals are not upsampled (except for ``--focal auto``, which
    self-calibrates from them).
    """
    photo = provider.focal.load_photo(photo_path)
    if partial:
        _check_some_line(lines, photo)
    else:
        check_lines(lines, photo)
    return MeasureSession(photo, provider.provide(photo, normals=False))


def _check_some_line(lines: Sequence[Line], photo: Photo) -> None:
    """The error of the first line when no line lies inside ``photo`` (nothing to measure: no model run)."""
    for line in lines:
        try:
            check_lines([line], photo)
            return
        except MetroError:
            continue
    check_lines(lines, photo)  # the first line's own message and numbering


def measure_photo(
    photo_path: str | os.PathLike[str],
    lines: Sequence[Line],
    provider: DepthProvider,
    *,
    annotate: str | os.PathLike[str] | None = None,
) -> MeasureResult:
    """Measure the lines ``(u1, v1, u2, v2)`` (displayed-photo pixels, floats allowed) on a photo.

    Depth (and the focal length) come from ``provider`` (:mod:`metrocli.pipeline.provider`). With
    ``annotate`` a PNG of the photo with the lines and their lengths is written there (atomically).

    Raises:
        MetroUsageError: a point outside the photo (before the model runs).
        MeasurementError: a point without valid depth.
        ImageError / DepthMapError / WeightsError: unreadable inputs.
    """
    session = open_session(photo_path, provider, lines=lines)
    measurements = session.measure(lines)
    annotated = None
    if annotate is not None:
        from metrocli.io.annotate import write_annotated

        annotated = str(write_annotated(Path(annotate), session.photo.image, measurements))
    return session.result(measurements, annotated)
