"""Resolve pinhole intrinsics of a photo from the user's options and its EXIF, most trustworthy source first.

1. ``user``: ``--focal-px`` (pixels of the displayed photo) or ``--fov`` (horizontal, degrees).
2. ``exif-focal-plane``: FocalLength (mm) × FocalPlaneXResolution (px/mm, honouring FocalPlaneResolutionUnit:
   inch, cm, mm). The resolution refers to the sensor image of ExifImageWidth x ExifImageHeight pixels
   (stored orientation): when the stored image is smaller (downscaled), the focal length is rescaled by
   ``stored width / ExifImageWidth``. Focal-plane X is along the stored image's x axis; pixels are square,
   so the rotation by the EXIF orientation does not change the focal length in pixels.
3. ``exif-35mm``: FocalLengthIn35mmFilm by the diagonal convention ``f_px = f35 · √(W² + H²) / √(36² + 24²)``
   (W, H of the image).
4. ``sensor-table``: FocalLength with the sensor width of a built-in table (:mod:`metrocli.camera.sensors`):
   ``f_px = f_mm · max(W, H) / sensor_width_mm``.
5. ``default``: a field of view of :data:`DEFAULT_FOV_DEG` across the long side of the image (a phone main
   camera, ~27 mm equivalent), with a loud warning that metric scale is unreliable.

Every EXIF-derived value is validated (positive, finite, a field of view across the long side within
[:data:`MIN_FOV_DEG`, :data:`MAX_FOV_DEG`], a plausible sensor width); a failing source adds a warning and the
next one is tried. The principal point is the displayed image centre ``(W/2, H/2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metrocli.camera.exif import ExifData
from metrocli.camera.intrinsics import (
    FULL_FRAME_DIAGONAL_MM,
    FocalSource,
    Intrinsics,
    centred,
    focal_from_fov,
)
from metrocli.camera.sensors import sensor_width_for
from metrocli.errors import MetroUsageError

#: Default field of view (degrees) across the LONG side of the photo when nothing better is known. Phone main
#: cameras are 24-28 mm equivalent: 65° across the long side of a 4:3 photo is 27 mm equivalent.
DEFAULT_FOV_DEG = 65.0
#: Plausible field of view across the long side (degrees): narrower than a 2000 mm-equivalent telephoto or
#: wider than a fisheye-like 160° means the EXIF value is wrong.
MIN_FOV_DEG = 1.0
MAX_FOV_DEG = 160.0
#: Physical bounds of a user's focal length: ``--focal-px`` (pixels) and ``--fov`` (horizontal degrees).
USER_FOCAL_PX_RANGE = (1.0, 1e6)
USER_FOV_DEG_RANGE = (1.0, 179.0)
#: Plausible sensor widths (mm): smaller than the tiniest phone sensor or larger than medium format means the
#: focal-plane resolution belongs to another image size (e.g. rewritten by an editor after resizing).
MIN_SENSOR_WIDTH_MM = 1.0
MAX_SENSOR_WIDTH_MM = 80.0
#: Relative tolerance when comparing the aspect ratio of the image with ExifImageWidth/Height.
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class FocalCandidate:
    """One source's focal length in pixels of the displayed image (or None) and the reason it failed."""

    source: FocalSource
    focal_px: float | None
    problem: str = ""


#: The end of the warning for a photo measured with the 65 degree default focal length (also said by
#: ``--focal auto`` when its self-calibration falls back to that default).
UNRELIABLE_SCALE = "METRIC SCALE IS UNRELIABLE, pass --focal-px or --fov"


def check_user_focal_px(focal_px: float) -> None:
    """MetroUsageError unless ``focal_px`` is within :data:`USER_FOCAL_PX_RANGE`."""
    lo, hi = USER_FOCAL_PX_RANGE
    if not (math.isfinite(focal_px) and lo <= focal_px <= hi):
        raise MetroUsageError(
            f"--focal-px must be a focal length of {lo:g} to {hi:g} pixels, got {focal_px!r}"
        )


def check_user_fov_deg(fov_deg: float) -> None:
    """MetroUsageError unless ``fov_deg`` is within :data:`USER_FOV_DEG_RANGE`."""
    lo, hi = USER_FOV_DEG_RANGE
    if not (math.isfinite(fov_deg) and lo <= fov_deg <= hi):
        raise MetroUsageError(
            f"--fov must be a horizontal field of view of {lo:g} to {hi:g} degrees, got {fov_deg!r}"
        )


def long_side_fov_deg(focal_px: float, width: int, height: int) -> float:
    """Field of view (degrees) across the longer side of a ``width`` x ``height`` image."""
    return math.degrees(2.0 * math.atan(max(width, height) / (2.0 * focal_px)))


def _plausible(focal_px: float, width: int, height: int) -> str:
    """'' if ``focal_px`` gives a plausible field of view, else the reason."""
    if not (math.isfinite(focal_px) and focal_px > 0):
        return f"gives a focal length of {focal_px!r} px"
    fov = long_side_fov_deg(focal_px, width, height)
    if fov < MIN_FOV_DEG or fov > MAX_FOV_DEG:
        return (
            f"gives {focal_px:.6g} px, a {fov:.3g}° field of view across the long side, outside the "
            f"plausible {MIN_FOV_DEG:g}-{MAX_FOV_DEG:g}°"
        )
    return ""


def _aspect_matches(a: tuple[float, float], b: tuple[float, float]) -> bool:
    ra, rb = a[0] / a[1], b[0] / b[1]
    return abs(ra - rb) <= ASPECT_TOLERANCE * rb


def focal_from_focal_plane(
    exif: ExifData, stored_size: tuple[int, int], displayed_size: tuple[int, int]
) -> FocalCandidate:
    """Source 2: FocalLength × FocalPlaneXResolution, rescaled from ExifImageWidth to the stored width."""
    src: FocalSource = "exif-focal-plane"
    f_mm = exif.focal_length_mm
    res_x, res_y = exif.focal_plane_x_res_per_mm, exif.focal_plane_y_res_per_mm
    if f_mm is None:
        return FocalCandidate(src, None, "no valid FocalLength")
    if res_x is None and res_y is None:
        return FocalCandidate(src, None, "no valid FocalPlaneXResolution")
    sw, sh = stored_size
    ew, eh = exif.exif_image_width, exif.exif_image_height
    notes = ""
    # Which stored axis does the sensor's x axis (ExifImageWidth) run along?
    swapped = False
    if ew is not None and eh is not None:
        if _aspect_matches((ew, eh), (sw, sh)):
            swapped = False
        elif _aspect_matches((ew, eh), (sh, sw)):
            swapped = True  # ExifImageWidth/Height written in the displayed orientation
        else:
            notes = (
                f"; ExifImageWidth x Height {ew} x {eh} has another aspect ratio than the image "
                f"{sw} x {sh} (cropped?), rescaled by width"
            )
    if res_x is not None:
        res_mm, ref_px = res_x, ew
        image_px = sh if swapped else sw
    else:
        res_mm, ref_px = res_y, eh  # type: ignore[assignment]
        image_px = sw if swapped else sh
    assert res_mm is not None
    if ref_px is None:
        ref_px = image_px  # no ExifImageWidth: the image is the sensor image
    sensor_mm = ref_px / res_mm
    if not MIN_SENSOR_WIDTH_MM <= sensor_mm <= MAX_SENSOR_WIDTH_MM:
        return FocalCandidate(
            src,
            None,
            f"FocalPlaneXResolution {res_mm:.6g} px/mm at {ref_px} px implies a {sensor_mm:.3g} mm wide "
            f"sensor (image resized after the EXIF was written?)",
        )
    focal_px = f_mm * res_mm * (image_px / ref_px)
    problem = _plausible(focal_px, *displayed_size)
    if problem:
        return FocalCandidate(src, None, f"FocalLength {f_mm:g} mm {problem}")
    return FocalCandidate(src, focal_px, notes.lstrip("; "))


def focal_from_35mm(exif: ExifData, displayed_size: tuple[int, int]) -> FocalCandidate:
    """Source 3: ``f35 · √(W² + H²) / √(36² + 24²)`` with the displayed W, H."""
    src: FocalSource = "exif-35mm"
    f35 = exif.focal_35mm
    if f35 is None:
        return FocalCandidate(src, None, "no valid FocalLengthIn35mmFilm")
    width, height = displayed_size
    focal_px = f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    problem = _plausible(focal_px, width, height)
    if problem:
        return FocalCandidate(src, None, f"FocalLengthIn35mmFilm {f35:g} mm {problem}")
    return FocalCandidate(src, focal_px)


def focal_from_sensor_table(exif: ExifData, displayed_size: tuple[int, int]) -> FocalCandidate:
    """Source 4: ``f_mm · max(W, H) / sensor_width_mm`` with the sensor width of the built-in table."""
    src: FocalSource = "sensor-table"
    f_mm = exif.focal_length_mm
    if f_mm is None:
        return FocalCandidate(src, None, "no valid FocalLength")
    sensor_mm, reason = sensor_width_for(exif.make, exif.model, f_mm)
    if sensor_mm is None:
        return FocalCandidate(src, None, reason)
    width, height = displayed_size
    focal_px = f_mm * max(width, height) / sensor_mm
    problem = _plausible(focal_px, width, height)
    if problem:
        return FocalCandidate(src, None, f"FocalLength {f_mm:g} mm on a {sensor_mm:g} mm sensor {problem}")
    return FocalCandidate(src, focal_px)


def default_focal_px(width: int, height: int) -> float:
    """Focal length (px) giving :data:`DEFAULT_FOV_DEG` across the long side."""
    return max(width, height) / (2.0 * math.tan(math.radians(DEFAULT_FOV_DEG) / 2.0))


def resolve_intrinsics(
    exif: ExifData,
    displayed_size: tuple[int, int],
    stored_size: tuple[int, int] | None = None,
    *,
    focal_px: float | None = None,
    fov_deg: float | None = None,
    name: str = "photo",
) -> tuple[Intrinsics, tuple[str, ...]]:
    """Intrinsics of a photo displayed ``displayed_size`` = (W, H) and stored ``stored_size`` (default: same).

    ``focal_px`` (px of the displayed photo) or ``fov_deg`` (horizontal degrees of the displayed photo)
    override the EXIF; giving both, or a non-positive / non-finite value, raises :class:`MetroUsageError`.
    Returns the intrinsics (square pixels, principal point ``(W/2, H/2)``, ``focal_source`` set) and the
    warnings of sources that were tried and rejected.
    """
    width, height = (int(v) for v in displayed_size)
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    stored = stored_size if stored_size is not None else (width, height)
    if focal_px is not None and fov_deg is not None:
        raise MetroUsageError("give --focal-px or --fov, not both")
    if focal_px is not None:
        check_user_focal_px(focal_px)
        return centred(width, height, float(focal_px), "user"), ()
    if fov_deg is not None:
        check_user_fov_deg(fov_deg)
        return centred(width, height, focal_from_fov(width, fov_deg), "user"), ()

    warnings: list[str] = []
    candidates = (
        lambda: focal_from_focal_plane(exif, stored, (width, height)),
        lambda: focal_from_35mm(exif, (width, height)),
        lambda: focal_from_sensor_table(exif, (width, height)),
    )
    has_focal_tags = any(
        v is not None for v in (exif.focal_length_mm, exif.focal_35mm, exif.focal_plane_x_res)
    )
    for make_candidate in candidates:
        cand = make_candidate()
        if cand.focal_px is not None:
            if cand.problem:
                warnings.append(f"{name}: {cand.source}: {cand.problem}")
            return centred(width, height, cand.focal_px, cand.source), tuple(warnings)
        # Only sources whose tags are present but unusable deserve a warning; absent tags are normal.
        if (
            cand.problem
            and not cand.problem.startswith("no valid")
            and "not in the sensor table" not in cand.problem
        ):
            warnings.append(f"{name}: {cand.source} rejected: {cand.problem}")
    focal = default_focal_px(width, height)
    why = "no usable focal length in EXIF" if has_focal_tags or warnings else "no focal length in EXIF"
    if exif.focal_length_mm is not None and exif.focal_35mm is None and exif.focal_plane_x_res is None:
        why = (
            f"EXIF has FocalLength {exif.focal_length_mm:g} mm but no sensor size for "
            f"{exif.make or 'unknown make'} {exif.model or 'unknown model'}"
        )
    warnings.append(
        f"{name}: {why}; assuming a {DEFAULT_FOV_DEG:g}° field of view across the long side "
        f"({focal:.1f} px): {UNRELIABLE_SCALE}"
    )
    return centred(width, height, focal, "default"), tuple(warnings)
