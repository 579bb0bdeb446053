"""A small built-in table of sensor widths of common phones and cameras (focal source 4, ``sensor-table``).

Widths are the long side of the active sensor area in mm. For phones the entry holds the MAIN (wide) camera
only, with its focal length: a photo whose EXIF FocalLength is far from it was taken with another camera of
the phone (ultra-wide, tele) whose sensor we do not know, so the table is not used for it.

Phone widths are derived from the makers' own EXIF pairs (FocalLength, FocalLengthIn35mmFilm) for a 4:3
sensor: ``width = 0.8 · √(36² + 24²) · f / f35``; camera widths are the published sensor dimensions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class SensorSpec:
    """Sensor of one camera: ``width_mm`` long side of the active area (mm); ``focal_mm`` main lens (mm)."""

    width_mm: float
    focal_mm: float | None = None


#: Tolerance on the EXIF focal length when the entry names the main lens's focal length.
FOCAL_TOLERANCE = 0.15

_MAKE_ALIASES = {
    "eastman kodak company": "kodak",
    "nikon corporation": "nikon",
    "olympus imaging corp.": "olympus",
    "olympus corporation": "olympus",
    "olympus optical co.,ltd": "olympus",
    "pentax corporation": "pentax",
    "ricoh imaging company, ltd.": "ricoh",
    "hmd global": "nokia",
    "samsung techwin": "samsung",
    "fujifilm corporation": "fujifilm",
    "sony corporation": "sony",
    "lg electronics": "lge",
    "oneplus technology": "oneplus",
}

_SPACES = re.compile(r"\s+")


def normalise_make(make: str | None) -> str:
    """Lower case, single spaces, vendor aliases folded (``"NIKON CORPORATION"`` -> ``"nikon"``)."""
    text = _SPACES.sub(" ", (make or "").replace("\x00", " ")).strip().lower()
    return _MAKE_ALIASES.get(text, text)


def normalise_model(make: str | None, model: str | None) -> str:
    """Lower case, single spaces, the make dropped from the front (``"Canon EOS 40D"`` -> ``"eos 40d"``)."""
    text = _SPACES.sub(" ", (model or "").replace("\x00", " ")).strip().lower()
    brand = normalise_make(make)
    for prefix in {brand, brand.split(" ")[0]}:
        if prefix and text.startswith(prefix + " "):
            text = text[len(prefix) + 1 :]
    return text


def _phone(f_mm: float, f35_mm: float) -> SensorSpec:
    """Main camera of a phone from its EXIF focal length and 35 mm equivalent (4:3 sensor)."""
    return SensorSpec(width_mm=round(0.8 * 43.266615 * f_mm / f35_mm, 2), focal_mm=f_mm)


#: (normalised make, normalised model) -> sensor.
SENSORS: dict[tuple[str, str], SensorSpec] = {
    # Apple iPhones, main camera.
    ("apple", "iphone 6"): _phone(4.15, 29),
    ("apple", "iphone 6 plus"): _phone(4.15, 29),
    ("apple", "iphone 6s"): _phone(4.15, 29),
    ("apple", "iphone 6s plus"): _phone(4.15, 29),
    ("apple", "iphone se"): _phone(4.15, 29),
    ("apple", "iphone 7"): _phone(3.99, 28),
    ("apple", "iphone 7 plus"): _phone(3.99, 28),
    ("apple", "iphone 8"): _phone(3.99, 28),
    ("apple", "iphone 8 plus"): _phone(3.99, 28),
    ("apple", "iphone x"): _phone(4.0, 28),
    ("apple", "iphone xr"): _phone(4.25, 26),
    ("apple", "iphone xs"): _phone(4.25, 26),
    ("apple", "iphone xs max"): _phone(4.25, 26),
    ("apple", "iphone 11"): _phone(4.25, 26),
    ("apple", "iphone 11 pro"): _phone(4.25, 26),
    ("apple", "iphone 11 pro max"): _phone(4.25, 26),
    ("apple", "iphone 12 mini"): _phone(4.2, 26),
    ("apple", "iphone 12"): _phone(4.2, 26),
    ("apple", "iphone 12 pro"): _phone(4.2, 26),
    ("apple", "iphone 12 pro max"): _phone(5.1, 26),
    ("apple", "iphone 13 mini"): _phone(5.1, 26),
    ("apple", "iphone 13"): _phone(5.1, 26),
    ("apple", "iphone 13 pro"): _phone(5.7, 26),
    ("apple", "iphone 13 pro max"): _phone(5.7, 26),
    ("apple", "iphone 14"): _phone(5.7, 26),
    ("apple", "iphone 14 plus"): _phone(5.7, 26),
    ("apple", "iphone 14 pro"): _phone(6.86, 24),
    ("apple", "iphone 14 pro max"): _phone(6.86, 24),
    ("apple", "iphone 15"): _phone(6.0, 26),
    ("apple", "iphone 15 plus"): _phone(6.0, 26),
    ("apple", "iphone 15 pro"): _phone(6.86, 24),
    ("apple", "iphone 15 pro max"): _phone(6.86, 24),
    # Android phones, main camera.
    ("samsung", "sm-g930f"): _phone(4.2, 26),  # Galaxy S7
    ("samsung", "sm-g935f"): _phone(4.2, 26),  # Galaxy S7 edge
    ("samsung", "sm-g960f"): _phone(4.3, 26),  # Galaxy S9
    ("samsung", "sm-g973f"): _phone(4.3, 26),  # Galaxy S10
    ("google", "pixel 3"): _phone(4.44, 28),
    ("google", "pixel 4"): _phone(4.44, 27),
    ("google", "pixel 6"): _phone(6.81, 25),
    ("google", "pixel 7"): _phone(6.81, 25),
    ("jolla", "jolla"): SensorSpec(4.54, 4.0),  # 8 MP 1/3.2" sensor (4.54 x 3.42 mm)
    # Cameras: published sensor widths (mm); interchangeable lenses, so no focal check.
    ("canon", "eos 40d"): SensorSpec(22.2),
    ("canon", "eos 5d mark ii"): SensorSpec(36.0),
    ("canon", "eos 550d"): SensorSpec(22.3),
    ("canon", "digital ixus 400"): SensorSpec(7.18),  # 1/1.8"
    ("canon", "powershot s40"): SensorSpec(7.18),  # 1/1.8"
    ("nikon", "d70"): SensorSpec(23.7),
    ("nikon", "d70s"): SensorSpec(23.7),
    ("nikon", "d300"): SensorSpec(23.6),
    ("nikon", "e950"): SensorSpec(6.4),  # 1/2"
    ("pentax", "k10d"): SensorSpec(23.5),
    ("olympus", "e-p3"): SensorSpec(17.3),  # Micro Four Thirds
    ("olympus", "c8080wz"): SensorSpec(8.8),  # 2/3"
    ("olympus", "u1020,s1020"): SensorSpec(6.17),  # 1/2.33"
    ("sony", "nex-5"): SensorSpec(23.4),
}


def lookup_sensor(make: str | None, model: str | None) -> SensorSpec | None:
    """The table entry of ``make``/``model`` (normalised; see :func:`normalise_make`), or None."""
    if not model:
        return None
    return SENSORS.get((normalise_make(make), normalise_model(make, model)))


def sensor_width_for(make: str | None, model: str | None, focal_mm: float) -> tuple[float | None, str]:
    """Sensor width (mm) to use with EXIF focal length ``focal_mm``, or ``(None, reason)``."""
    spec = lookup_sensor(make, model)
    if spec is None:
        return None, f"{make or '?'} {model or '?'} is not in the sensor table"
    if spec.focal_mm is not None and abs(focal_mm - spec.focal_mm) > FOCAL_TOLERANCE * spec.focal_mm:
        return None, (
            f"focal length {focal_mm:g} mm is not the main camera's ({spec.focal_mm:g} mm) of the "
            f"{make} {model}, whose other sensors are unknown"
        )
    return spec.width_mm, ""
