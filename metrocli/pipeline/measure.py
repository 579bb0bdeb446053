"""Measuring real distances on one photo: photo -> depth (model or sensor) -> 3D points -> distances.

:func:`measure_photo` is what ``metro measure`` calls; :class:`MeasureSession` keeps the depth of one photo
for the interactive picker, which measures many lines on it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from metrocli.errors import MetroUsageError
from metrocli.geometry.measure import Line, Measurement, check_point, measure_lines
from metrocli.pipeline.source import DepthSource, depth_source_for_photo


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
    """

    image: str
    focal_px: float
    focal_source: str
    measurements: tuple[Measurement, ...]
    depth_source: str = ""
    error_model: str = ""
    annotated: str | None = None

    def to_dict(self) -> dict:
        """The ``metro measure --json`` object: image, focal_px, focal_source, measurements."""
        return {
            "image": self.image,
            "focal_px": self.focal_px,
            "focal_source": self.focal_source,
            "measurements": [m.to_dict() for m in self.measurements],
        }


@dataclass(frozen=True)
class MeasureSession:
    """A photo with its depth, ready to measure any number of lines."""

    photo: Any
    source: DepthSource

    def check(self, lines: Sequence[Line]) -> None:
        """Usage error naming the first point that is outside the photo."""
        check_lines(lines, self.photo)

    def measure(self, lines: Sequence[Line]) -> list[Measurement]:
        """Measurements of ``lines`` (displayed-photo pixels), by ``measure_lines``."""
        pred = self.source.prediction
        return measure_lines(
            pred.depth,
            pred.intrinsics,
            lines,
            confidence=None if self.source.from_sensor else pred.confidence,
            error=self.source.error,
        )

    def result(self, measurements: Sequence[Measurement], annotated: str | None = None) -> MeasureResult:
        k = self.source.prediction.intrinsics
        return MeasureResult(
            image=str(self.photo.path),
            focal_px=float(k.fx),
            focal_source=str(k.focal_source),
            measurements=tuple(measurements),
            depth_source=self.source.prediction.model,
            error_model=self.source.error.description,
            annotated=annotated,
        )


def check_lines(lines: Sequence[Line], photo: Any) -> None:
    """Raise :class:`~metrocli.errors.MetroUsageError` for the first end point outside ``photo``."""
    k = photo.intrinsics
    for i, (u1, v1, u2, v2) in enumerate(lines, start=1):
        check_point(u1, v1, k, f"start point of line {i}")
        check_point(u2, v2, k, f"end point of line {i}")


def open_session(
    photo_path: str | os.PathLike[str],
    *,
    depth_file: str | os.PathLike[str] | None = None,
    depth_scale: float | None = None,
    focal_px: float | None = None,
    fov_deg: float | None = None,
    model_name: str = "vit-small",
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    lines: Sequence[Line] = (),
    focal_auto: bool = False,
) -> MeasureSession:
    """Load the photo, check ``lines`` against its size (before any model runs), and get its depth.

    With ``focal_auto`` the focal length is self-calibrated from the model's depth and normals
    (:func:`metrocli.pipeline.selfcal.self_calibrated_prediction`; model depth only).
    """
    from metrocli.camera.photo import load_photo

    photo = load_photo(photo_path, focal_px=focal_px, fov_deg=fov_deg)
    check_lines(lines, photo)
    if focal_auto and depth_file is not None:
        raise MetroUsageError(
            "--focal auto needs the model's depth and normals, not a sensor depth map (--depth)"
        )
    source = depth_source_for_photo(
        photo,
        depth_file=depth_file,
        depth_scale=depth_scale,
        model_name=model_name,
        weights=weights,
        device=device,
        precision=precision,
        normals=focal_auto,  # measuring needs depth only; self-calibration needs the normals
    )
    if focal_auto:
        from metrocli.pipeline.selfcal import self_calibrated_prediction

        calibrated = self_calibrated_prediction(source.prediction, photo.intrinsics)
        source = replace(source, prediction=calibrated.prediction)
    return MeasureSession(photo, source)


def measure_photo(
    photo_path: str | os.PathLike[str],
    lines: Sequence[Line],
    *,
    depth_file: str | os.PathLike[str] | None = None,
    depth_scale: float | None = None,
    focal_px: float | None = None,
    fov_deg: float | None = None,
    model_name: str = "vit-small",
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    annotate: str | os.PathLike[str] | None = None,
    focal_auto: bool = False,
) -> MeasureResult:
    """Measure the lines ``(u1, v1, u2, v2)`` (displayed-photo pixels, floats allowed) on a photo.

    Depth comes from the model (``model_name``/``weights``/``device``/``precision``) or from the sensor map
    ``depth_file`` (``depth_scale`` metres per unit). With ``annotate`` a PNG of the photo with the lines and
    their lengths is written there (atomically).

    Raises:
        MetroUsageError: a point outside the photo (before the model runs).
        MeasurementError: a point without valid depth.
        ImageError / DepthMapError / WeightsError: unreadable inputs.
    """
    session = open_session(
        photo_path,
        depth_file=depth_file,
        depth_scale=depth_scale,
        focal_px=focal_px,
        fov_deg=fov_deg,
        model_name=model_name,
        weights=weights,
        device=device,
        precision=precision,
        lines=lines,
        focal_auto=focal_auto,
    )
    measurements = session.measure(lines)
    annotated = None
    if annotate is not None:
        from metrocli.io.annotate import write_annotated

        annotated = str(write_annotated(Path(annotate), session.photo.image, measurements))
    return session.result(measurements, annotated)
