"""Focal length resolution: the source order, validation and fall-back, and hand-computed values for real
photos of the shared corpus."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from metrocli.camera.exif import ExifData
from metrocli.camera.focal import DEFAULT_FOV_DEG, long_side_fov_deg, resolve_intrinsics
from metrocli.camera.photo import describe_photo, load_photo
from metrocli.camera.sensors import lookup_sensor, normalise_make, normalise_model
from metrocli.errors import MetroUsageError

DIAG_35 = math.hypot(36.0, 24.0)  # 43.2666 mm
INCH = 25.4


# ----------------------------------------------------------------------------------- named phones and cameras
def test_iphone_13_pro_max_heic(exif_samples: Path) -> None:
    # Apple iPhone 13 Pro Max, HEIC stored 4032 x 3024 with orientation 6 -> displayed 3024 x 4032.
    # No focal-plane tags; FocalLengthIn35mmFilm = 26 mm:
    #   f = 26 · √(3024² + 4032²) / √(36² + 24²) = 26 · 5040 / 43.26662 = 3028.66 px
    info = describe_photo(exif_samples / "heic/mobile/iphone_13_pro_max.HEIC", verify=False)
    k = info.intrinsics
    assert (k.width, k.height) == (3024, 4032)
    assert info.orientation == 6
    assert (info.make, info.model) == ("Apple", "iPhone 13 Pro Max")
    assert k.focal_source == "exif-35mm"
    assert k.fx == pytest.approx(3028.66, abs=0.01)
    assert k.fx == pytest.approx(26 * 5040 / DIAG_35, rel=1e-12)
    assert (k.cx, k.cy) == (1512.0, 2016.0)


def test_iphone_11_pro_max_cropped_heic(exif_samples: Path) -> None:
    # iPhone 11 Pro Max, edited to 2566 x 3313, f35 = 26 mm:
    #   f = 26 · √(2566² + 3313²) / 43.26662 = 26 · 4190.50 / 43.26662 = 2518.18 px
    k = describe_photo(exif_samples / "heic/IMG_5195.HEIC", verify=False).intrinsics
    assert (k.width, k.height) == (2566, 3313)
    assert k.focal_source == "exif-35mm"
    assert k.fx == pytest.approx(2518.18, abs=0.01)


def test_iphone_6_jpeg(exif_samples: Path) -> None:
    # iPhone 6, 3264 x 2448 (a 3-4-5 triangle: diagonal 4080 px), FocalLengthIn35mmFilm = 57 mm:
    #   f = 57 · 4080 / 43.26662 = 5375.04 px
    k = describe_photo(exif_samples / "jpg/hdr/iphone_hdr_NO.jpg").intrinsics
    assert (k.width, k.height) == (3264, 2448)
    assert k.focal_source == "exif-35mm"
    assert k.fx == pytest.approx(5375.04, abs=0.01)


def test_jolla_phone_uses_sensor_table(exif_samples: Path) -> None:
    # Jolla phone: FocalLength 4 mm only; the table gives its 8 MP 1/3.2" sensor, 4.54 mm wide:
    #   f = 4 mm · 3264 px / 4.54 mm = 2875.77 px
    info = describe_photo(exif_samples / "jpg/mobile/jolla.jpg")
    k = info.intrinsics
    assert (k.width, k.height) == (3264, 2448)
    assert k.focal_source == "sensor-table"
    assert k.fx == pytest.approx(2875.77, abs=0.01)


def test_canon_sx60_rotated_uses_focal_plane(exif_samples: Path) -> None:
    # Canon PowerShot SX60 HS, stored 2048 x 1536 with orientation 6 -> displayed 1536 x 2048.
    # FocalLength = 24005/421 = 57.0190 mm; FocalPlaneXResolution = 505679/60 px per inch = 331.810 px/mm,
    # at ExifImageWidth 2048 = the stored width (no rescale):
    #   f = 57.0190 · 331.810 = 18919.5 px
    info = describe_photo(exif_samples / "jpg/hdr/canon_hdr_NO.jpg")
    k = info.intrinsics
    assert (k.width, k.height) == (1536, 2048)
    assert info.orientation == 6
    assert info.stored_size == (2048, 1536)
    assert k.focal_source == "exif-focal-plane"
    assert k.fx == pytest.approx((24005 / 421) * (505679 / 60) / INCH, rel=1e-12)
    assert k.fx == pytest.approx(18919.5, abs=0.1)


def test_canon_s40_downscaled_focal_plane(exif_samples: Path) -> None:
    # Canon PowerShot S40: 480 x 360 saved from a 2272 x 1704 sensor image (ExifImageWidth 2272).
    # FocalLength 341/16 = 21.3125 mm, FocalPlaneXResolution 56800/7 px/inch = 319.46 px/mm:
    #   f = 21.3125 · 319.46 · 480 / 2272 = 1438.41 px
    k = describe_photo(exif_samples / "jpg/Canon_PowerShot_S40.jpg").intrinsics
    assert k.focal_source == "exif-focal-plane"
    assert k.fx == pytest.approx(21.3125 * (56800 / 7) / INCH * 480 / 2272, rel=1e-12)
    assert k.fx == pytest.approx(1438.41, abs=0.01)


def test_canon_40d_resized_by_software_falls_back_to_sensor_table(exif_samples: Path) -> None:
    # Canon EOS 40D photo resized to 100 x 68 with ExifImageWidth rewritten to 100, but the focal-plane
    # resolution (324000/73 px/inch = 174.74 px/mm) left for the full sensor: 100 px / 174.74 px/mm would be
    # a 0.57 mm sensor -> rejected with a warning. Sensor table: APS-C 22.2 mm wide, FocalLength 135 mm:
    #   f = 135 · 100 / 22.2 = 608.11 px
    info = describe_photo(exif_samples / "jpg/Canon_40D.jpg")
    assert info.intrinsics.focal_source == "sensor-table"
    assert info.intrinsics.fx == pytest.approx(608.108, abs=0.001)
    assert any("0.572 mm wide sensor" in w for w in info.warnings)


def test_nokia_heif_without_make_gets_default(exif_samples: Path) -> None:
    # No Make/Model and FocalLength 1 mm without any sensor size: default 65° across the long side (4608 px):
    #   f = 4608 / (2 · tan 32.5°) = 3616.56 px
    info = describe_photo(exif_samples / "heic/mobile/HMD_Nokia_8.3_5G.heif", verify=False)
    k = info.intrinsics
    assert (k.width, k.height) == (3456, 4608)
    assert k.focal_source == "default"
    assert k.fx == pytest.approx(3616.56, abs=0.01)
    assert any("UNRELIABLE" in w for w in info.warnings)


def test_cropped_canon_ixus_40_rescales_by_width_with_warning(exif_samples: Path) -> None:
    # 1136 x 775 cut from a 2272 x 1704 image (other aspect ratio): rescaled by width, with a warning.
    #   f = 29/5 mm · (71000/7 px/inch / 25.4) · 1136 / 2272 = 1158.04 px
    info = describe_photo(exif_samples / "jpg/tests/11-tests.jpg")
    assert info.intrinsics.focal_source == "exif-focal-plane"
    assert info.intrinsics.fx == pytest.approx(5.8 * 71000 / 7 / INCH / 2, rel=1e-12)
    assert any("aspect ratio" in w for w in info.warnings)


@pytest.mark.parametrize("kind", ["landscape", "portrait"])
def test_orientation_corpus_sizes_and_intrinsics(exif_samples: Path, kind: str) -> None:
    expected = (600, 450) if kind == "landscape" else (450, 600)
    for n in range(1, 9):
        photo = load_photo(exif_samples / "jpg" / "orientation" / f"{kind}_{n}.jpg")
        assert photo.orientation == n
        assert (photo.width, photo.height) == expected
        k = photo.intrinsics
        assert (k.width, k.height) == expected
        assert (k.cx, k.cy) == (expected[0] / 2, expected[1] / 2)
        # no focal tags: 65° across the long side (600 px): 600 / (2 tan 32.5°) = 470.91 px
        assert k.focal_source == "default"
        assert k.fx == pytest.approx(470.91, abs=0.01)


# ------------------------------------------------------------------------------ source order & validation
def _exif(**kw) -> ExifData:
    return ExifData(**kw)


FULL = dict(
    make="Apple",
    model="iPhone 13 Pro Max",
    focal_length_mm=5.7,
    focal_35mm=26.0,
    focal_plane_x_res=4032 / 7.59 * 10,  # px per cm of a 7.59 mm wide, 4032 px sensor
    focal_plane_unit=3,
    exif_image_width=4032,
    exif_image_height=3024,
)


def test_focal_plane_beats_35mm_beats_sensor_table() -> None:
    k, warnings = resolve_intrinsics(_exif(**FULL), (4032, 3024))
    assert k.focal_source == "exif-focal-plane"
    assert k.fx == pytest.approx(5.7 * 4032 / 7.59, rel=1e-9)
    assert warnings == ()
    no_plane = {**FULL, "focal_plane_x_res": None}
    k, _ = resolve_intrinsics(_exif(**no_plane), (4032, 3024))
    assert k.focal_source == "exif-35mm"
    assert k.fx == pytest.approx(26 * 5040 / DIAG_35)
    k, _ = resolve_intrinsics(_exif(**{**no_plane, "focal_35mm": None}), (4032, 3024))
    assert k.focal_source == "sensor-table"
    k, warnings = resolve_intrinsics(_exif(**{**no_plane, "focal_35mm": None, "model": "Nope"}), (4032, 3024))
    assert k.focal_source == "default"
    assert "no sensor size" in warnings[-1]


def test_user_focal_and_fov_override_everything() -> None:
    k, warnings = resolve_intrinsics(_exif(**FULL), (4032, 3024), focal_px=1000.0)
    assert (k.fx, k.focal_source, warnings) == (1000.0, "user", ())
    k, _ = resolve_intrinsics(_exif(**FULL), (4032, 3024), fov_deg=90.0)
    assert k.fx == pytest.approx(2016.0)
    assert k.fov_x_deg == pytest.approx(90.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"focal_px": 1.0, "fov_deg": 60.0},
        {"focal_px": -3.0},
        {"focal_px": 0.0},
        {"focal_px": float("nan")},
        {"focal_px": float("inf")},
        {"fov_deg": 0.0},
        {"fov_deg": 180.0},
        {"fov_deg": float("nan")},
    ],
)
def test_bad_user_values_are_usage_errors(kwargs) -> None:
    with pytest.raises(MetroUsageError):
        resolve_intrinsics(_exif(), (100, 100), **kwargs)


def test_absurd_focal_plane_falls_back_with_warning() -> None:
    # 500 mm lens on a phone sensor: FOV across the long side 0.87° < 1° -> rejected, 35 mm used.
    exif = _exif(**{**FULL, "focal_length_mm": 500.0})
    k, warnings = resolve_intrinsics(exif, (4032, 3024))
    assert k.focal_source == "exif-35mm"
    assert any("exif-focal-plane rejected" in w and "field of view" in w for w in warnings)


def test_absurd_35mm_falls_back_to_default() -> None:
    for f35 in (0.5, 9000.0):
        k, warnings = resolve_intrinsics(_exif(focal_35mm=f35), (640, 480))
        assert k.focal_source == "default"
        assert any("exif-35mm rejected" in w for w in warnings)
        assert long_side_fov_deg(k.fx, 640, 480) == pytest.approx(DEFAULT_FOV_DEG)


def test_exif_image_size_written_in_displayed_orientation() -> None:
    # Stored 300 x 400 (portrait sensor readout), ExifImageWidth/Height 4000 x 3000 swapped.
    exif = _exif(
        focal_length_mm=4.2,
        focal_plane_x_res=4000 / 5.6,  # px per mm (unit 4)
        focal_plane_unit=4,
        exif_image_width=4000,
        exif_image_height=3000,
    )
    # sensor x runs along the stored y axis (400 px): f = 4.2 mm · 4000 / 5.6 px/mm · 400 / 4000 = 300 px
    k, warnings = resolve_intrinsics(exif, (400, 300), stored_size=(300, 400))
    assert k.focal_source == "exif-focal-plane"
    assert k.fx == pytest.approx(300.0)
    assert warnings == ()


def test_phone_tele_camera_not_taken_for_main_sensor() -> None:
    exif = _exif(make="Apple", model="iPhone 13 Pro Max", focal_length_mm=9.0)
    k, warnings = resolve_intrinsics(exif, (4032, 3024))
    assert k.focal_source == "default"
    assert any("main camera" in w for w in warnings)


def test_sensor_table_normalisation() -> None:
    assert normalise_make("NIKON CORPORATION") == "nikon"
    assert normalise_model("Canon", "Canon EOS 40D") == "eos 40d"
    assert normalise_model("OLYMPUS IMAGING CORP.  ", "E-P3            ") == "e-p3"
    assert lookup_sensor("PENTAX Corporation ", "PENTAX K10D        ").width_mm == 23.5
    assert lookup_sensor(None, None) is None
    assert lookup_sensor("apple", "IPHONE 13 PRO MAX").width_mm == pytest.approx(7.59)
