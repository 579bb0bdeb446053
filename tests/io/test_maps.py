"""Depth/normal map files, colourisation and output-name safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrocli.camera.intrinsics import centred
from metrocli.errors import MetroUsageError
from metrocli.io import maps
from metrocli.prediction import Prediction


def _prediction(h: int = 12, w: int = 16, normals: bool = True) -> Prediction:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 5.0, (h, w)).astype(np.float32)
    depth[0, 0] = 0.0
    depth[0, 1] = np.nan
    depth[1, 0] = 70.0  # beyond the 16-bit millimetre range
    normal = None
    if normals:
        n = rng.normal(size=(h, w, 3))
        n[..., 2] = -np.abs(n[..., 2])
        normal = (n / np.linalg.norm(n, axis=2, keepdims=True)).astype(np.float32)
    return Prediction(
        depth=depth,
        normal=normal,
        confidence=rng.uniform(0, 1, (h, w)).astype(np.float32),
        normal_confidence=None,
        intrinsics=centred(w, h, 20.0, "user"),
        model="vit-small",
        timings_s={"forward": 1.5},
    )


def test_turbo_endpoints_and_shape() -> None:
    rgb = maps.turbo(np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan, 0.15, 0.85]]))
    assert rgb.shape == (1, 8, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].max() < 60 and rgb[0, 2].max() < 160  # dark at both ends
    assert rgb[0, 6, 2] > 200 > rgb[0, 6, 0]  # low values blue
    assert rgb[0, 7, 0] > 200 > rgb[0, 7, 2]  # high values red
    assert rgb[0, 1, 1] > 200  # middle green
    np.testing.assert_array_equal(rgb[0, 3], rgb[0, 2])  # clipped
    np.testing.assert_array_equal(rgb[0, 4], rgb[0, 0])
    np.testing.assert_array_equal(rgb[0, 5], rgb[0, 0])


def test_colourise_depth_near_is_red_far_is_blue_invalid_black() -> None:
    depth = np.array([[1.0, 2.0, 4.0, 8.0, 0.0, np.nan, -1.0]], np.float32)
    rgb = maps.colourise_depth(depth)
    assert rgb.shape == (1, 7, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] > rgb[0, 0, 2] and rgb[0, 3, 2] > rgb[0, 3, 0]
    assert (rgb[0, 4:] == 0).all()
    assert (maps.colourise_depth(np.zeros((3, 3))) == 0).all()
    assert maps.colourise_depth(np.full((2, 2), 3.0)).std(axis=(0, 1)).max() == 0  # flat depth, one colour


def test_colourise_normals_encoding() -> None:
    n = np.array([[[0, 0, -1], [1, 0, 0], [0, 0, 0], [np.nan, 0, 1], [0, -2, 0]]], np.float32)
    rgb = maps.colourise_normals(n)
    np.testing.assert_array_equal(rgb[0, 0], [128, 128, 255])  # facing the camera: light blue
    np.testing.assert_array_equal(rgb[0, 1], [255, 128, 128])  # facing right
    np.testing.assert_array_equal(rgb[0, 2], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 3], [0, 0, 0])
    np.testing.assert_array_equal(rgb[0, 4], [128, 255, 128])  # facing up (a floor), renormalised


def test_depth_png_mm() -> None:
    depth = np.array([[0.0, 1.2345, 65.535, 100.0, np.nan, -2.0, 0.0001]])
    np.testing.assert_array_equal(maps.depth_to_png_mm(depth), [[0, 1234, 65535, 65535, 0, 0, 1]])


@pytest.mark.parametrize("normals", [True, False])
def test_write_depth_outputs_roundtrip(tmp_path: Path, normals: bool) -> None:
    pred = _prediction(normals=normals)
    files = maps.write_depth_outputs(tmp_path / "out", "img_1", pred, extra={"photo": "a/img_1.jpg"})
    expected = {"depth", "confidence", "depth_png", "preview", "json"} | ({"normal"} if normals else set())
    assert set(files) == expected
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files.values())  # no temp left
    depth = np.load(files["depth"])
    assert depth.dtype == np.float32 and depth.shape == (12, 16)
    np.testing.assert_array_equal(depth, pred.depth)
    if normals:
        # written towards the camera (n · ray <= 0, as the PLY normals): the others are flipped
        from metrocli.geometry.backproject import pixel_rays

        rays = pixel_rays(pred.intrinsics)
        away = np.einsum("hwi,hwi->hw", pred.normal, rays) > 0
        assert 0 < away.sum() < away.size
        expected = np.where(away[..., None], -pred.normal, pred.normal)
        np.testing.assert_array_equal(np.load(files["normal"]), expected)
    png = np.asarray(Image.open(files["depth_png"]))
    assert png.dtype == np.uint16 and png.shape == (12, 16)
    assert png[0, 0] == 0 and png[0, 1] == 0 and png[1, 0] == 65535
    assert png[5, 5] == round(float(pred.depth[5, 5]) * 1000)
    preview = Image.open(files["preview"])
    # the maps above a colour bar strip (metres)
    assert preview.mode == "RGB" and preview.size == ((32 if normals else 16), 12 + maps.COLOUR_BAR_HEIGHT_PX)
    meta = json.loads(files["json"].read_text())
    assert meta["model"] == "vit-small" and meta["intrinsics"]["focal_source"] == "user"
    assert meta["intrinsics"]["fx"] == 20.0 and meta["timings_s"] == {"forward": 1.5}
    assert meta["photo"] == "a/img_1.jpg" and meta["normals"] is normals
    assert meta["depth_png_clipped_pixels"] == 1 and meta["depth"]["valid_pixels"] == 12 * 16 - 2
    assert meta["files"]["depth"] == "img_1.depth.npy" and meta["files"]["json"] == "img_1.json"


def test_preview_is_downscaled_for_huge_maps() -> None:
    depth = np.ones((100, 3000), np.float32)
    assert maps.preview_image(depth, None, max_side=600).shape == (20, 600, 3)


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("photo.jpg", "photo"),
        ("a/b/IMG_0001.HEIC", "IMG_0001"),
        ("../../etc/passwd", "passwd"),
        ("..", "__"),
        ("...jpg", "___jpg"),
        (".bashrc", "_bashrc"),
        ("C:\\evil\\..\\x.png", "x"),
        ("x y$z;rm -rf.JPG", "x y$z;rm -rf"),  # issue #14: only characters invalid in file names go
        ('a:b?c*d"e<f>g|h.png', "a_b_c_d_e_f_g_h"),
        ("tab\there\x01.jpg", "tab_here_"),
        ("東京 タワー.jpg", "東京 タワー"),
        ("cafe\u0301.jpg", "caf\u00e9"),  # NFC: the same name typed on macOS and Linux
        ("", "photo"),
        ("dir/", "photo"),
        ("naïve.jpg", "naïve"),
    ],
)
def test_safe_stem(name: str, stem: str) -> None:
    assert maps.safe_stem(name) == stem


def test_output_paths_never_escape(tmp_path: Path) -> None:
    for bad in ["../x", "a/b", "..", "", ".hidden"]:
        with pytest.raises(MetroUsageError):
            maps.output_paths(tmp_path, bad)
    paths = maps.output_paths(tmp_path, maps.safe_stem("../../../../tmp/evil.jpg"))
    assert all(p.parent == tmp_path for p in paths.values())


def test_depth_to_png_mm_in_blocks_equals_whole_map(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.0, 70.0, (37, 23)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = 0.0
    depth[0, 0], depth[5, 5], depth[9, 1] = np.nan, np.inf, -1.0
    whole = maps.depth_to_png_mm(depth)
    monkeypatch.setattr(maps, "PNG_BLOCK_PIXELS", 50)  # two rows per block, a ragged last block
    np.testing.assert_array_equal(maps.depth_to_png_mm(depth), whole)
    expected = np.where(np.isfinite(depth) & (depth > 0), np.clip(np.round(depth * 1000.0), 1, 65535), 0)
    np.testing.assert_array_equal(whole, expected.astype(np.uint16))


def test_preview_of_a_large_map_samples_without_blending() -> None:
    depth = np.full((300, 400), 2.0, np.float32)
    depth[:, 200:] = 4.0
    depth[100:200, 100:300] = 0.0  # an invalid block
    normal = np.zeros((300, 400, 3), np.float32)
    normal[..., 2] = -1.0
    preview = maps.preview_image(depth, normal, max_side=40)
    assert preview.shape == (30, 80, 3)
    depth_panel = preview[:, :40]
    assert (depth_panel[10:20, 10:30] == 0).all()  # the invalid block stays black
    colours = {tuple(c) for c in depth_panel.reshape(-1, 3)}
    assert len(colours) == 3  # near, far and invalid: nothing in between
    assert (preview[:, 40:] == maps.colourise_normals(normal[:1, :1])[0, 0]).all()


def test_fixed_depth_range_makes_previews_comparable() -> None:
    near = np.full((40, 200), 1.0, np.float32)
    far = np.full((40, 200), 4.0, np.float32)
    # each map alone spans its own range: one flat colour each, the same colour
    np.testing.assert_array_equal(maps.colourise_depth(near), maps.colourise_depth(far))
    fixed = (0.5, 10.0)
    a, b = maps.colourise_depth(near, depth_range_m=fixed), maps.colourise_depth(far, depth_range_m=fixed)
    assert a[0, 0, 0] > b[0, 0, 0] and b[0, 0, 2] > a[0, 0, 2]  # 1 m redder than 4 m
    # the colour of a depth is the colour bar's at that depth (bar: near left, linear in inverse depth)
    bar = maps.colour_bar(400, *fixed)
    assert bar.shape == (maps.COLOUR_BAR_HEIGHT_PX, 400, 3)
    x = (1 / 1.0 - 1 / 0.5) / (1 / 10.0 - 1 / 0.5)  # position of 1 m
    np.testing.assert_allclose(bar[0, int(x * 400)].astype(int), a[0, 0].astype(int), atol=12)
    assert int(bar[0, 2, 0]) - bar[0, 2, 2] > 100 and int(bar[0, -3, 2]) - bar[0, -3, 0] > 50  # red, blue
    assert bar[maps.COLOUR_BAR_HEIGHT_PX // 3 + 2 :].max() > 200  # white labels under the strip
    preview = maps.preview_image(near, None, depth_range_m=fixed, with_colour_bar=True)
    assert preview.shape == (40 + maps.COLOUR_BAR_HEIGHT_PX, 200, 3)
    np.testing.assert_array_equal(preview[:40], a)
    with pytest.raises(MetroUsageError):
        maps.check_depth_range((10.0, 0.5))
    with pytest.raises(MetroUsageError):
        maps.check_depth_range((0.0, 5.0))


def test_write_png_round_trips_rgb_order_and_16_bit_values(tmp_path: Path) -> None:
    """PNGs are encoded by OpenCV (BGR inside): what Pillow reads back is the RGB / uint16 array written."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)  # pure red stays red
    deep = rng.integers(0, 65536, (7, 9), dtype=np.uint16)
    grey = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    for name, array in (("rgb.png", rgb), ("deep.png", deep), ("grey.png", grey)):
        assert maps.write_png(tmp_path / name, array) == tmp_path / name
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / name)), array)
    assert Image.open(tmp_path / "rgb.png").getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(ValueError, match="RGB"):
        maps.write_png(tmp_path / "rgba.png", np.zeros((4, 4, 4), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.png", "grey.png", "rgb.png"]
