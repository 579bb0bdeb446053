"""--intrinsics and --camera: COLMAP cameras.txt and OpenCV / ROS YAML calibration files."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrocli.camera.calibration import parse_intrinsics, read_camera_file
from metrocli.errors import MetroUsageError


def test_parse_intrinsics() -> None:
    c = parse_intrinsics("500, 502.5,300,250")
    assert (c.fx, c.fy, c.cx, c.cy, c.width) == (500.0, 502.5, 300.0, 250.0, None)
    k = c.for_image(640, 480)
    assert k.as_tuple() == (500.0, 502.5, 300.0, 250.0) and k.focal_source == "user"
    for bad in ("500,500,300", "a,b,c,d", "0,500,300,200", "500,500,nan,200", "-1,5,3,2"):
        with pytest.raises(MetroUsageError):
            parse_intrinsics(bad)


def test_colmap_cameras_txt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cameras.txt"
    path.write_text("# Camera list\n1 PINHOLE 1280 960 1000 1002 650 470\n")
    c = read_camera_file(path)
    assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (1000, 1002, 650, 470, 1280, 960)
    # the photo at half the size: the intrinsics scale; another aspect ratio (crop, rotation) is refused
    assert c.for_image(640, 480).as_tuple() == (500, 501, 325, 235)
    with pytest.raises(MetroUsageError, match="960x1280"):
        c.for_image(960, 1280)
    path.write_text("1 SIMPLE_RADIAL 640 480 520 320 240 0.01\n2 PINHOLE 1 1 1 1 1 1\n")
    c = read_camera_file(path)
    assert (c.fx, c.fy, c.cx, c.cy) == (520, 520, 320, 240)
    assert "distortion is ignored" in caplog.text and "using the first" in caplog.text
    for bad in ("1 EQUIRECT 640 480 1 2 3\n", "1 PINHOLE 640 480 500\n", "# nothing\n"):
        path.write_text(bad)
        with pytest.raises(MetroUsageError):
            read_camera_file(path)


def test_opencv_and_ros_yaml(tmp_path: Path) -> None:
    opencv = tmp_path / "calib.yaml"
    opencv.write_text(
        "%YAML:1.0\n---\nimage_width: 640\nimage_height: 480\ncamera_matrix: !!opencv-matrix\n"
        "   rows: 3\n   cols: 3\n   dt: d\n   data: [ 500., 0., 300.5, 0., 502., 250., 0., 0., 1. ]\n"
    )
    ros = tmp_path / "camera_info.yaml"
    ros.write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: cam\ncamera_matrix:\n  rows: 3\n  cols: 3\n"
        "  data: [500.0, 0.0, 300.5, 0.0, 502.0, 250.0, 0.0, 0.0, 1.0]\ndistortion_model: plumb_bob\n"
    )
    for path in (opencv, ros):
        c = read_camera_file(path)
        assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (500, 502, 300.5, 250, 640, 480), path.name
    empty = tmp_path / "none.yaml"
    empty.write_text("%YAML:1.0\n---\nfoo: 1\n")
    with pytest.raises(MetroUsageError, match="camera_matrix"):
        read_camera_file(empty)
