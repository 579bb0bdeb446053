"""Sensor depth maps (--depth): formats, scale, orientation like the photo, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrocli.camera.exif_write import write_jpeg
from metrocli.camera.photo import load_photo
from metrocli.errors import DepthMapError
from metrocli.io.sensor_depth import load_sensor_depth, read_depth_map

STORED_W, STORED_H = 40, 30


def stored_depth() -> np.ndarray:
    """(30, 40) metres with a distinct value per pixel, in the photo's STORED layout."""
    v, u = np.mgrid[0:STORED_H, 0:STORED_W]
    return (1.0 + 0.01 * u + 0.5 * v / STORED_H).astype(np.float32)


def make_photo(tmp_path: Path, orientation: int):
    path = tmp_path / f"photo_o{orientation}.jpg"
    rgb = np.zeros((STORED_H, STORED_W, 3), np.uint8)
    write_jpeg(path, rgb, make="Apple", model="iPhone 13 Pro", focal_35mm=26.0, orientation=orientation)
    return load_photo(path)


def write_png_mm(path: Path, depth_m: np.ndarray, scale_m: float = 0.001) -> Path:
    Image.fromarray(np.rint(depth_m / scale_m).astype(np.uint16)).save(path)
    return path


def test_npy_metres_displayed_size(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, 1)
    np.save(tmp_path / "d.npy", stored_depth())
    sensor = load_sensor_depth(tmp_path / "d.npy", photo)
    np.testing.assert_array_equal(sensor.depth_m, stored_depth())
    assert sensor.depth_m.dtype == np.float32 and sensor.quantum_m == 0.0


def test_png_millimetres_and_scale_override(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, 1)
    png = write_png_mm(tmp_path / "d.png", stored_depth())
    sensor = load_sensor_depth(png, photo)
    np.testing.assert_allclose(sensor.depth_m, stored_depth(), atol=0.0005 + 1e-6)
    assert sensor.quantum_m == pytest.approx(0.001)
    # KITTI-style 1/256 m units
    kitti = write_png_mm(tmp_path / "k.png", stored_depth(), scale_m=1 / 256)
    depth = read_depth_map(kitti, photo, depth_scale=1 / 256)
    np.testing.assert_allclose(depth, stored_depth(), atol=1 / 512 + 1e-6)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_stored_size_map_is_oriented_like_the_photo(tmp_path: Path, orientation: int) -> None:
    from metrocli.camera.image import apply_orientation

    photo = make_photo(tmp_path, orientation)
    png = write_png_mm(tmp_path / "d.png", stored_depth())
    depth = read_depth_map(png, photo)
    expected = apply_orientation(np.rint(stored_depth() * 1000) / 1000, orientation)
    assert depth.shape == photo.image.shape[:2]
    np.testing.assert_allclose(depth, expected, atol=1e-6)
    if orientation == 6:  # rotated 90° clockwise: the stored bottom-left pixel is displayed top-left
        assert depth[0, 0] == pytest.approx(stored_depth()[-1, 0], abs=1e-3)


def test_displayed_size_map_of_a_rotated_photo_is_used_as_is(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, 6)
    upright = np.ascontiguousarray(stored_depth().T)  # (40, 30): the displayed size
    np.save(tmp_path / "d.npy", upright)
    np.testing.assert_array_equal(read_depth_map(tmp_path / "d.npy", photo), upright)


def test_errors_are_clear(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, 1)
    np.save(tmp_path / "small.npy", np.ones((10, 10), np.float32))
    with pytest.raises(DepthMapError, match=r"small.npy: depth map is 10x10 but the photo .* is 40x30"):
        read_depth_map(tmp_path / "small.npy", photo)
    Image.fromarray(np.full((30, 40), 100, np.uint8)).save(tmp_path / "d8.png")
    with pytest.raises(DepthMapError, match="16-bit"):
        read_depth_map(tmp_path / "d8.png", photo)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DepthMapError, match="mode RGB"):
        read_depth_map(tmp_path / "rgb.png", photo)
    np.save(tmp_path / "str.npy", np.array([["a"] * 40] * 30))
    with pytest.raises(DepthMapError, match="dtype"):
        read_depth_map(tmp_path / "str.npy", photo)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DepthMapError, match="not a plain numeric"):
        read_depth_map(tmp_path / "obj.npy", photo)
    np.save(tmp_path / "rgbd.npy", np.ones((30, 40, 3), np.float32))
    with pytest.raises(DepthMapError, match="single-channel"):
        read_depth_map(tmp_path / "rgbd.npy", photo)
    np.save(tmp_path / "zeros.npy", np.zeros((30, 40), np.float32))
    with pytest.raises(DepthMapError, match="no valid"):
        read_depth_map(tmp_path / "zeros.npy", photo)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DepthMapError, match="empty"):
        read_depth_map(tmp_path / "empty.png", photo)
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(DepthMapError, match=r"junk\.png"):
        read_depth_map(tmp_path / "junk.png", photo)
    with pytest.raises(DepthMapError, match="not found"):
        read_depth_map(tmp_path / "missing.npy", photo)
    (tmp_path / "d.exr").write_bytes(b"x")
    with pytest.raises(DepthMapError, match="unsupported"):
        read_depth_map(tmp_path / "d.exr", photo)
    np.save(tmp_path / "ok.npy", stored_depth())
    with pytest.raises(DepthMapError, match="depth scale"):
        read_depth_map(tmp_path / "ok.npy", photo, depth_scale=-1.0)


def test_negative_and_nan_depth_become_no_depth(tmp_path: Path) -> None:
    photo = make_photo(tmp_path, 1)
    d = stored_depth()
    d[0, 0], d[0, 1], d[0, 2] = -1.0, np.nan, np.inf
    np.save(tmp_path / "d.npy", d)
    depth = read_depth_map(tmp_path / "d.npy", photo)
    assert (depth[0, :3] == 0).all() and (depth[1:] > 0).all()
