"""Writing focal tags with ``write_jpeg`` and reading them back through ``load_photo``.

The synthetic photos have a known camera: a 400 x 300 px (stored) image of a phone-like camera whose sensor
image is 4000 x 3000 px on a 5.6 mm wide sensor with a 4.2 mm lens. The true focal length at 400 px width is
``4.2 mm / 5.6 mm · 400 px = 300 px`` (the same in the displayed image whatever the orientation: pixels are
square). Each focal-tag combination must give focal_px within 0.5 % of that truth.
"""

from __future__ import annotations

import math
from pathlib import Path

import exifread
import numpy as np
import pytest
from PIL import Image

from metrocli.camera.exif import read_exif
from metrocli.camera.exif_write import make_exif, write_jpeg
from metrocli.camera.focal import DEFAULT_FOV_DEG
from metrocli.camera.image import apply_orientation, undo_orientation
from metrocli.camera.photo import load_photo

STORED_W, STORED_H = 400, 300
SENSOR_W_PX, SENSOR_H_PX = 4000, 3000
SENSOR_WIDTH_MM = 5.6
FOCAL_MM = 4.2
TRUE_FOCAL_PX = FOCAL_MM / SENSOR_WIDTH_MM * STORED_W  # 300.0
RES_PER_MM = SENSOR_W_PX / SENSOR_WIDTH_MM  # 714.29 px/mm on the sensor


def _upright_scene(width: int, height: int, focal_px: float) -> np.ndarray:
    """A picture rendered with the true intrinsics: a chessboard plane 2 m ahead seen by the pinhole camera,
    plus a red marker in the top-left quadrant (so a wrong orientation is visible)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x = (u + 0.5 - width / 2) / focal_px * 2.0
    y = (v + 0.5 - height / 2) / focal_px * 2.0
    board = ((np.floor(x / 0.25) + np.floor(y / 0.25)) % 2).astype(np.uint8) * 200 + 30
    rgb = np.repeat(board[:, :, None], 3, axis=2)
    rgb[height // 8 : height // 4, width // 8 : width // 4] = (230, 20, 20)
    return rgb


def _check(photo, width: int, height: int, truth_px: float, source: str) -> None:
    assert (photo.intrinsics.width, photo.intrinsics.height) == (width, height)
    assert photo.image.shape == (height, width, 3)
    assert photo.intrinsics.focal_source == source, photo.warnings
    assert photo.intrinsics.fx == pytest.approx(truth_px, rel=0.005)
    assert photo.intrinsics.fy == photo.intrinsics.fx
    assert (photo.intrinsics.cx, photo.intrinsics.cy) == (width / 2, height / 2)


@pytest.mark.parametrize("unit", ["inch", "cm", "mm"])
def test_focal_plane_in_each_unit_with_downscaled_image(tmp_path: Path, unit: str) -> None:
    path = tmp_path / f"fp_{unit}.jpg"
    rgb = _upright_scene(STORED_W, STORED_H, TRUE_FOCAL_PX)
    write_jpeg(
        path,
        rgb,
        make="Metro",
        model="Synthetic 1",
        focal_length_mm=FOCAL_MM,
        focal_plane_res_per_mm=RES_PER_MM,
        focal_plane_unit=unit,
        exif_image_size=(SENSOR_W_PX, SENSOR_H_PX),
    )
    exif = read_exif(path)
    assert exif.focal_plane_unit == {"inch": 2, "cm": 3, "mm": 4}[unit]
    assert exif.focal_plane_x_res_per_mm == pytest.approx(RES_PER_MM, rel=1e-6)
    assert (exif.exif_image_width, exif.exif_image_height) == (SENSOR_W_PX, SENSOR_H_PX)
    photo = load_photo(path)
    _check(photo, STORED_W, STORED_H, TRUE_FOCAL_PX, "exif-focal-plane")
    assert photo.make == "Metro" and photo.model == "Synthetic 1"


def test_focal_plane_without_exif_image_size_uses_stored_width(tmp_path: Path) -> None:
    path = tmp_path / "fp.jpg"
    res = STORED_W / SENSOR_WIDTH_MM  # the sensor image IS the stored image
    write_jpeg(
        path,
        _upright_scene(STORED_W, STORED_H, TRUE_FOCAL_PX),
        make="Metro",
        model="Synthetic 1",
        focal_length_mm=FOCAL_MM,
        focal_plane_res_per_mm=res,
    )
    _check(load_photo(path), STORED_W, STORED_H, TRUE_FOCAL_PX, "exif-focal-plane")


def test_35mm_only(tmp_path: Path) -> None:
    # Choose the camera so that its 35 mm equivalent is a whole number (EXIF stores whole mm): 28 mm.
    f35 = 28
    truth = f35 * math.hypot(STORED_W, STORED_H) / math.hypot(36, 24)  # 28 · 500 / 43.2666 = 323.57 px
    path = tmp_path / "f35.jpg"
    write_jpeg(path, _upright_scene(STORED_W, STORED_H, truth), make="Metro", model="X", focal_35mm=f35)
    photo = load_photo(path)
    _check(photo, STORED_W, STORED_H, truth, "exif-35mm")
    assert photo.intrinsics.focal_35mm == pytest.approx(28.0, rel=1e-9)


def test_sensor_table_only(tmp_path: Path) -> None:
    # iPhone 13 Pro Max main camera: 5.7 mm lens, 26 mm equivalent. Truth from the 35 mm equivalent of a 4:3
    # image: 26 · 500 / 43.2666 = 300.46 px. The table knows only the sensor width (7.59 mm):
    # 5.7 · 400 / 7.59 = 300.40 px.
    truth = 26 * math.hypot(STORED_W, STORED_H) / math.hypot(36, 24)
    path = tmp_path / "table.jpg"
    write_jpeg(
        path,
        _upright_scene(STORED_W, STORED_H, truth),
        make="Apple",
        model="iPhone 13 Pro Max",
        focal_length_mm=5.7,
    )
    _check(load_photo(path), STORED_W, STORED_H, truth, "sensor-table")


def test_no_focal_tags_gives_default_with_loud_warning(tmp_path: Path) -> None:
    path = tmp_path / "none.jpg"
    write_jpeg(path, _upright_scene(STORED_W, STORED_H, 300.0), make="Metro", model="X")
    photo = load_photo(path)
    truth = STORED_W / (2 * math.tan(math.radians(DEFAULT_FOV_DEG) / 2))  # 400 / (2 tan 32.5°) = 313.9 px
    _check(photo, STORED_W, STORED_H, truth, "default")
    assert any("UNRELIABLE" in w for w in photo.warnings)


@pytest.mark.parametrize("orientation", [6, 8, 3, 5])
def test_photo_stored_rotated(tmp_path: Path, orientation: int) -> None:
    """The phone holds the 4000 x 3000 sensor sideways: stored 400 x 300 landscape, displayed 300 x 400."""
    displayed_w, displayed_h = (STORED_H, STORED_W) if orientation in (5, 6, 7, 8) else (STORED_W, STORED_H)
    upright = _upright_scene(displayed_w, displayed_h, TRUE_FOCAL_PX)
    stored = undo_orientation(upright, orientation)
    assert stored.shape == (STORED_H, STORED_W, 3)
    path = tmp_path / f"rot{orientation}.jpg"
    write_jpeg(
        path,
        stored,
        make="Metro",
        model="Synthetic 1",
        focal_length_mm=FOCAL_MM,
        focal_plane_res_per_mm=RES_PER_MM,
        exif_image_size=(SENSOR_W_PX, SENSOR_H_PX),
        orientation=orientation,
    )
    photo = load_photo(path)
    assert photo.orientation == orientation
    assert photo.stored_size == (STORED_W, STORED_H)
    _check(photo, displayed_w, displayed_h, TRUE_FOCAL_PX, "exif-focal-plane")
    assert np.abs(photo.image.astype(int) - upright.astype(int)).mean() < 6  # upright again
    # the red marker is in the top-left quadrant of the displayed image
    red = (photo.image[..., 0] > 180) & (photo.image[..., 1] < 80)
    rows, cols = np.nonzero(red)
    assert rows.mean() < displayed_h / 2 and cols.mean() < displayed_w / 2


def test_35mm_with_rotated_photo(tmp_path: Path) -> None:
    truth = 28 * 500 / math.hypot(36, 24)
    upright = _upright_scene(STORED_H, STORED_W, truth)
    path = tmp_path / "r.jpg"
    write_jpeg(path, undo_orientation(upright, 6), make="M", model="X", focal_35mm=28, orientation=6)
    _check(load_photo(path), STORED_H, STORED_W, truth, "exif-35mm")


def test_user_overrides_exif(tmp_path: Path) -> None:
    path = tmp_path / "u.jpg"
    write_jpeg(path, _upright_scene(STORED_W, STORED_H, 300.0), make="M", model="X", focal_35mm=28)
    _check(load_photo(path, focal_px=1234.5), STORED_W, STORED_H, 1234.5, "user")
    # --fov 90 -> f = 400 / (2 tan 45°) = 200 px
    _check(load_photo(path, fov_deg=90.0), STORED_W, STORED_H, 200.0, "user")


def test_tags_are_where_phones_put_them(tmp_path: Path) -> None:
    path = tmp_path / "t.jpg"
    write_jpeg(
        path,
        np.zeros((30, 40, 3), np.uint8),
        make="Apple",
        model="iPhone 12",
        focal_length_mm=4.2,
        focal_35mm=26,
        focal_plane_res_per_mm=100.0,
        focal_plane_unit="cm",
        orientation=6,
    )
    with open(path, "rb") as fh:
        tags = exifread.process_file(fh, details=False)
    assert str(tags["Image Make"]) == "Apple"
    assert str(tags["Image Model"]) == "iPhone 12"
    assert tags["Image Orientation"].values == [6]
    assert tags["EXIF FocalLength"].values[0] == pytest.approx(4.2)
    assert tags["EXIF FocalLengthIn35mmFilm"].values == [26]
    assert float(tags["EXIF FocalPlaneXResolution"].values[0]) == pytest.approx(1000.0)  # px per cm
    assert float(tags["EXIF FocalPlaneYResolution"].values[0]) == pytest.approx(1000.0)
    assert tags["EXIF FocalPlaneResolutionUnit"].values == [3]
    assert tags["EXIF ExifImageWidth"].values == [40]
    assert tags["EXIF ExifImageLength"].values == [30]
    with Image.open(path) as im:
        assert im.size == (40, 30)  # pixels are written as given (stored orientation)


def test_write_is_atomic_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        write_jpeg(path, np.zeros((4, 4), np.uint8), make="M", model="X")
    with pytest.raises(ValueError):
        write_jpeg(path, np.zeros((4, 4, 3), np.uint8), make="M", model="X", focal_length_mm=-1)
    with pytest.raises(ValueError):
        write_jpeg(path, np.zeros((4, 4, 3), np.uint8), make="M", model="X", orientation=9)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]  # no temporary files left
    write_jpeg(path, np.zeros((4, 4, 3), np.uint8), make="M", model="X")
    assert path.read_bytes()[:2] == b"\xff\xd8"


def test_make_exif_orientation_and_apply_agree() -> None:
    exif = make_exif(make="M", model="X", stored_size=(4, 2), orientation=8)
    assert exif[0x0112] == 8
    stored = np.arange(8).reshape(2, 4)
    assert apply_orientation(stored, 8).shape == (4, 2)
