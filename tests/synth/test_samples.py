"""Writing rendered views as phone photos, and the shipped sample_photos/ folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import exifread
import numpy as np
import pytest
from PIL import Image, ImageOps

from metrocli.synth import intrinsics_for_lens, look_at, render, room_scene
from metrocli.synth.camera import IPHONE, PIXEL
from metrocli.synth.samples import (
    SAMPLE_VIEWS,
    depth_to_png_mm,
    generate,
    render_view,
    to_display,
    to_stored,
    write_sample,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_photos"


@pytest.fixture(scope="module")
def small_view():
    return render(
        room_scene(), intrinsics_for_lens(240, 180, 26), look_at((1.0, 0.45, 1.55), (2.0, 2.9, 0.65))
    )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_transforms_match_pillow_and_camera_module(orientation: int):
    from metrocli.camera.image import apply_orientation, undo_orientation

    stored = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(to_display(stored, orientation), expected)
    np.testing.assert_array_equal(to_stored(expected, orientation), stored)
    np.testing.assert_array_equal(apply_orientation(stored, orientation), expected)
    np.testing.assert_array_equal(undo_orientation(expected, orientation), stored)


def test_depth_png_encoding():
    d = np.array([[0.0, 1.2344, np.nan], [70.0, -1.0, 2.0004]])
    np.testing.assert_array_equal(depth_to_png_mm(d), [[0, 1234, 0], [0, 0, 2000]])


def _exif(path: Path) -> dict:
    with open(path, "rb") as fh:
        return exifread.process_file(fh, details=False)


def _ratio(tag) -> float:
    v = tag.values[0]
    return float(v.num) / float(v.den)


@pytest.mark.parametrize("orientation", [1, 6])
def test_write_sample_exif_and_depth_read_back(tmp_path: Path, small_view, orientation: int):
    files = write_sample(small_view, tmp_path / "shot.jpg", phone=PIXEL, lens="main", orientation=orientation)
    assert files.photo == tmp_path / "shot.jpg" and files.depth == tmp_path / "shot.depth.png"
    tags = _exif(files.photo)
    assert str(tags["Image Make"]) == "Google" and str(tags["Image Model"]) == "Pixel 7 Pro"
    assert tags["Image Orientation"].values[0] == orientation
    assert _ratio(tags["EXIF FocalLength"]) == pytest.approx(6.81)
    assert tags["EXIF FocalLengthIn35mmFilm"].values[0] == 26
    assert tags["EXIF FocalPlaneResolutionUnit"].values[0] == 2  # inch
    px_per_mm = _ratio(tags["EXIF FocalPlaneXResolution"]) / 25.4
    assert px_per_mm * 6.81 == pytest.approx(small_view.intrinsics.fx, rel=1e-4)
    # Stored pixels are the displayed image transformed back; a viewer shows it upright again.
    stored = np.asarray(Image.open(files.photo))
    assert stored.shape[:2] == ((240, 180) if orientation == 6 else (180, 240))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(files.photo)))
    assert np.abs(upright.astype(int) - small_view.rgb).mean() < 8  # JPEG error only
    depth = cv2.imread(str(files.depth), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == stored.shape[:2]
    np.testing.assert_allclose(to_display(depth, orientation) / 1000.0, small_view.depth_m, atol=5e-4 + 1e-7)


def test_write_sample_loads_with_the_camera_module(tmp_path: Path, small_view):
    from metrocli.camera.photo import load_photo

    files = write_sample(small_view, tmp_path / "p.jpg", phone=IPHONE, lens="main", orientation=6)
    photo = load_photo(files.photo)
    assert photo.orientation == 6 and photo.image.shape == small_view.rgb.shape
    assert (photo.make, photo.model) == ("Apple", "iPhone 13 Pro")
    assert photo.intrinsics.fx == pytest.approx(small_view.intrinsics.fx, rel=1e-3)
    assert photo.intrinsics.focal_source.startswith("exif")


def test_generate_writes_photos_metadata_and_readme(tmp_path: Path):
    views = (SAMPLE_VIEWS[0], next(v for v in SAMPLE_VIEWS if v.orientation == 6))
    records = generate(tmp_path, views=views, scale=0.25, supersample=1)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        ["README.md", "samples.json", *(f"{v.name}{ext}" for v in views for ext in (".jpg", ".depth.png"))]
    )
    meta = json.loads((tmp_path / "samples.json").read_text())
    assert [r["file"] for r in meta["photos"]] == [f"{v.name}.jpg" for v in views]
    rot = records[1]
    assert rot["orientation"] == 6 and rot["display_size"] == [240, 320] and rot["stored_size"] == [320, 240]
    readme = (tmp_path / "README.md").read_text()
    assert "| table | 1.200 | 0.800 | 0.750 |" in readme
    length = next(m for m in records[0]["measurements"] if m["name"] == "table length")
    assert length["true_m"] == pytest.approx(1.18)
    assert "--line " in readme


# ------------------------------------------------------------------------------------ the shipped samples
@pytest.fixture(scope="module")
def shipped() -> dict:
    meta_path = SAMPLES / "samples.json"
    if not meta_path.is_file():
        pytest.skip("sample_photos/ has not been generated")
    return json.loads(meta_path.read_text())


def test_shipped_samples_are_complete_and_small(shipped: dict):
    photos = shipped["photos"]
    assert {r["scene"] for r in photos} == {"room", "street"}
    assert {r["lens"] for r in photos} == {"ultra-wide", "main", "tele"}
    assert any(r["orientation"] == 6 for r in photos)
    total = sum(p.stat().st_size for p in SAMPLES.iterdir())
    assert total < 8e6
    for r in photos:
        assert (SAMPLES / r["file"]).is_file() and (SAMPLES / r["depth_file"]).is_file()
        w, h = r["display_size"]
        assert 1.0e6 <= w * h <= 2.1e6
    # The table is whole in room_01 (all top corners visible), with both demo lines.
    r1 = next(r for r in photos if r["file"] == "room_01.jpg")
    assert all(p is not None for p in r1["objects"]["table"]["corners_px"][4:])
    assert {m["name"] for m in r1["measurements"]} == {"table length", "table width"}


def test_shipped_exif_gives_the_rendered_focal(shipped: dict):
    for r in shipped["photos"]:
        tags = _exif(SAMPLES / r["file"])
        assert str(tags["Image Make"]) == r["make"]
        assert tags["Image Orientation"].values[0] == r["orientation"]
        assert tags["EXIF FocalLengthIn35mmFilm"].values[0] == round(r["focal_35mm"])
        f_px = _ratio(tags["EXIF FocalLength"]) * _ratio(tags["EXIF FocalPlaneXResolution"]) / 25.4
        assert f_px == pytest.approx(r["intrinsics"]["fx"], rel=1e-4)


def test_shipped_depth_matches_a_fresh_render(shipped: dict):
    """The rotated room photo re-rendered now: depth PNG and corner pixels are what the generator gives."""
    sv = next(v for v in SAMPLE_VIEWS if v.orientation == 6)
    rec = next(r for r in shipped["photos"] if r["file"] == f"{sv.name}.jpg")
    scene, view = render_view(sv, supersample=1)
    stored = cv2.imread(str(SAMPLES / rec["depth_file"]), cv2.IMREAD_UNCHANGED)
    assert stored.shape == (rec["stored_size"][1], rec["stored_size"][0])
    diff = np.abs(to_display(stored, 6).astype(int) - depth_to_png_mm(view.depth_m).astype(int))
    assert diff.max() <= 1
    np.testing.assert_allclose(np.asarray(rec["pose_camera_to_world"]), view.pose, atol=1e-8)
    uv, _ = view.project(scene.object("table").corners_world)
    for p, q in zip(rec["objects"]["table"]["corners_px"], uv, strict=True):
        if p is not None:
            np.testing.assert_allclose(p, q, atol=0.01)
    # The photo itself, displayed upright, looks like the render.
    upright = np.asarray(ImageOps.exif_transpose(Image.open(SAMPLES / rec["file"])))
    assert upright.shape == view.rgb.shape
    assert np.abs(upright.astype(int) - view.rgb).mean() < 10
