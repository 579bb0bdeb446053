"""Image loading: formats, all 8 EXIF orientations, pixel-mode conversions, bad files, decompression bombs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from metrocli.camera.image import (
    MAX_PIXELS,
    apply_orientation,
    load_image,
    probe_image,
    read_image,
    stored_to_displayed_size,
    undo_orientation,
)
from metrocli.errors import ImageError, MetroError

ORIENTATIONS = range(1, 9)


def _exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _gradient(height: int = 24, width: int = 40) -> np.ndarray:
    """An asymmetric test picture: every pixel different, so any wrong flip or turn shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 6 % 256, yy * 10 % 256, (xx * 3 + yy * 7) % 256], axis=2).astype(np.uint8)


# ----------------------------------------------------------------------------------- orientation transforms
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_apply_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    stored = _gradient()
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    got = apply_orientation(stored, orientation)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got.flags.c_contiguous


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_undo_orientation_inverts_and_works_on_2d_maps(orientation: int) -> None:
    depth = np.arange(12 * 7, dtype=np.float32).reshape(12, 7)
    shown = apply_orientation(depth, orientation)
    width, height = stored_to_displayed_size(7, 12, orientation)  # stored: 7 wide, 12 high
    assert shown.shape == (height, width)
    np.testing.assert_array_equal(undo_orientation(shown, orientation), depth)
    assert shown.dtype == np.float32


def test_stored_to_displayed_size() -> None:
    assert stored_to_displayed_size(4032, 3024, 1) == (4032, 3024)
    assert stored_to_displayed_size(4032, 3024, 3) == (4032, 3024)
    for orientation in (5, 6, 7, 8):
        assert stored_to_displayed_size(4032, 3024, orientation) == (3024, 4032)


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, "6", None, True])
def test_apply_orientation_rejects_invalid_orientation(bad) -> None:
    with pytest.raises(ValueError):
        apply_orientation(np.zeros((2, 3)), bad)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_written_jpeg_with_each_orientation_loads_upright(tmp_path: Path, orientation: int) -> None:
    upright = np.kron(_gradient(6, 10), np.ones((8, 8, 1), dtype=np.uint8))  # blocks survive JPEG
    stored = undo_orientation(upright, orientation)
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=_exif_with_orientation(orientation))
    rgb, got_orientation = load_image(path)
    assert got_orientation == orientation
    assert rgb.shape == upright.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - upright.astype(int)).mean() < 4


# ----------------------------------------------------------------------------------- the shared corpus
def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


@pytest.mark.parametrize("kind", ["landscape", "portrait"])
def test_orientation_corpus_loads_to_the_same_upright_picture(exif_samples: Path, kind: str) -> None:
    """All 8 variants show the same upright picture (each with its own digit 1-8 painted on, and variant 1 a
    little brighter), so they must correlate strongly with variant 1, and better than any other transform."""
    folder = exif_samples / "jpg" / "orientation"
    reference, orientation = load_image(folder / f"{kind}_1.jpg")
    assert orientation == 1
    expected_shape = (450, 600, 3) if kind == "landscape" else (600, 450, 3)
    assert reference.shape == expected_shape
    ref_grey = reference.mean(axis=2)
    for n in range(2, 9):
        rgb, orientation = load_image(folder / f"{kind}_{n}.jpg")
        assert orientation == n
        assert rgb.shape == expected_shape, f"{kind}_{n}"
        assert _corr(rgb.mean(axis=2), ref_grey) > 0.95, f"{kind}_{n}.jpg is not upright"
        stored = np.asarray(Image.open(folder / f"{kind}_{n}.jpg").convert("L"))
        scores = {
            o: _corr(apply_orientation(stored, o), ref_grey)
            for o in ORIENTATIONS
            if apply_orientation(stored, o).shape == ref_grey.shape
        }
        assert max(scores, key=scores.__getitem__) == n, scores
        assert sorted(scores.values())[-2] < 0.6  # every wrong transform is clearly wrong


@pytest.mark.parametrize(
    ("name", "displayed", "stored", "orientation"),
    [
        # iPhone 13 Pro Max: HEVC stored 4032 x 3024 landscape, EXIF orientation 6 (90° clockwise);
        # libheif applies the container's rotation, so it displays as a 3024 x 4032 portrait.
        ("heic/mobile/iphone_13_pro_max.HEIC", (3024, 4032), (4032, 3024), 6),
        # iPhone 11 Pro Max, edited (cropped) portrait without an orientation tag.
        ("heic/IMG_5195.HEIC", (2566, 3313), (2566, 3313), 1),
        ("heic/mobile/HMD_Nokia_8.3_5G.heif", (3456, 4608), (3456, 4608), 1),
        ("heic/mobile/HMD_Nokia_8.3_5G_hdr.heif", (4608, 3456), (4608, 3456), 1),
        ("heic/samplefilehub.heif", (640, 426), (640, 426), 1),
    ],
)
def test_heic_files_load_with_displayed_size(
    exif_samples: Path, name: str, displayed: tuple[int, int], stored: tuple[int, int], orientation: int
) -> None:
    loaded = read_image(exif_samples / name)
    assert loaded.format == "HEIF"
    assert loaded.size == displayed
    assert loaded.stored_size == stored
    assert loaded.orientation == orientation
    assert loaded.rgb is not None
    assert loaded.rgb.shape == (displayed[1], displayed[0], 3)
    assert loaded.rgb.dtype == np.uint8
    assert loaded.rgb.std() > 10  # a real picture, not a blank
    header_only = probe_image(exif_samples / name, verify=False)
    assert (header_only.size, header_only.orientation, header_only.rgb) == (displayed, orientation, None)


def test_tiff_rgba_corpus_composited_on_white(exif_samples: Path) -> None:
    path = exif_samples / "tiff" / "Arbitro.tiff"
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        alpha = np.asarray(im)[:, :, 3]
    rgb, _ = load_image(path)
    assert rgb.shape == (38, 174, 3)
    if (alpha == 0).any():
        assert (rgb[alpha == 0] == 255).all()


# ----------------------------------------------------------------------------------- pixel modes
def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red-ish
    rgba[:2, :, 3] = 255  # top half opaque
    rgba[2:, :, 3] = 0  # bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb, _ = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(rgb[:2], np.broadcast_to([200, 0, 0], (2, 5, 3)))
    np.testing.assert_array_equal(rgb[2:], np.full((2, 5, 3), 255))


def test_la_and_palette_with_transparency(tmp_path: Path) -> None:
    la = np.zeros((3, 3, 2), dtype=np.uint8)
    la[..., 0] = 50
    la[0, :, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    rgb, _ = load_image(tmp_path / "la.png")
    assert (rgb[0] == 50).all() and (rgb[1:] == 255).all()

    pal = Image.new("P", (4, 2))
    pal.putpalette([0, 0, 255] + [0, 255, 0] + [0] * 762)
    pal.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    pal.info["transparency"] = 1
    pal.save(tmp_path / "p.png", transparency=1)
    rgb, _ = load_image(tmp_path / "p.png")
    assert rgb[0, 0].tolist() == [0, 0, 255]
    assert rgb[0, 1].tolist() == [255, 255, 255]


def test_palette_greyscale_bilevel_cmyk(tmp_path: Path) -> None:
    pal = Image.new("P", (3, 2))
    pal.putpalette([10, 20, 30] * 256)
    pal.save(tmp_path / "p.png")
    rgb, _ = load_image(tmp_path / "p.png")
    assert (rgb == [10, 20, 30]).all()

    Image.fromarray(np.full((2, 3), 77, np.uint8), "L").save(tmp_path / "l.jpg", quality=100)
    rgb, _ = load_image(tmp_path / "l.jpg")
    assert rgb.shape == (2, 3, 3) and np.abs(rgb.astype(int) - 77).max() <= 1

    Image.new("1", (8, 4), 1).save(tmp_path / "b.tiff")
    rgb, _ = load_image(tmp_path / "b.tiff")
    assert (rgb == 255).all()

    Image.new("CMYK", (6, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    rgb, _ = load_image(tmp_path / "c.jpg")
    assert rgb.shape == (5, 6, 3)
    assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 50 and rgb[..., 2].mean() < 50  # red

    Image.new("CMYK", (6, 5), (0, 255, 255, 0)).save(tmp_path / "c.tiff")
    rgb, _ = load_image(tmp_path / "c.tiff")
    assert rgb[0, 0].tolist() == [255, 0, 0]


def test_16bit_greyscale_and_rgb(tmp_path: Path) -> None:
    grey16 = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
    rgb, _ = load_image(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(grey16).save(tmp_path / "g16.tiff")
    rgb, _ = load_image(tmp_path / "g16.tiff")
    assert rgb[0, :, 1].tolist() == [0, 128, 255]

    # 16-bit RGB written by hand (colour type 2, bit depth 16): Pillow reduces it to 8 bits per channel.
    pixels = np.array([[[65535, 0, 257 * 100], [0, 65535, 0]]], dtype=">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    (tmp_path / "rgb16.png").write_bytes(_png(2, 1, 16, 2, raw))
    rgb, _ = load_image(tmp_path / "rgb16.png")
    assert rgb.tolist() == [[[255, 0, 100], [0, 255, 0]]]


def test_float_tiff_is_stretched(tmp_path: Path) -> None:
    data = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(data, "F").save(tmp_path / "f.tiff")
    rgb, _ = load_image(tmp_path / "f.tiff")
    assert rgb[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[-5.0, 5.0]], dtype=np.float32), "F").save(tmp_path / "f2.tiff")
    rgb, _ = load_image(tmp_path / "f2.tiff")
    assert rgb[0, :, 2].tolist() == [0, 255]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_lossless_formats_round_trip(tmp_path: Path, fmt: str) -> None:
    rgb = _gradient()
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(rgb).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    got, orientation = load_image(path)
    assert orientation == 1
    np.testing.assert_array_equal(got, rgb)


def test_png_with_exif_orientation(tmp_path: Path) -> None:
    upright = _gradient()
    Image.fromarray(undo_orientation(upright, 8)).save(tmp_path / "o.png", exif=_exif_with_orientation(8))
    got, orientation = load_image(tmp_path / "o.png")
    assert orientation == 8
    np.testing.assert_array_equal(got, upright)


def test_invalid_orientation_value_is_ignored_with_warning(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "o.png", exif=_exif_with_orientation(42))
    loaded = read_image(tmp_path / "o.png")
    assert loaded.orientation == 1
    assert loaded.rgb is not None and loaded.rgb.shape == (24, 40, 3)
    assert any("orientation" in w for w in loaded.warnings)


# ----------------------------------------------------------------------------------- bad files
def _png(width: int, height: int, depth: int = 8, colour: int = 2, raw: bytes | None = None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = chunk(b"IHDR", ihdr)
    if raw is not None:
        body += chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def _assert_one_line_error(path: Path, *fragments: str) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return info.value


def test_missing_empty_directory(tmp_path: Path) -> None:
    _assert_one_line_error(tmp_path / "nope.jpg", "no such file")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _assert_one_line_error(tmp_path / "empty.jpg", "empty")
    (tmp_path / "dir.jpg").mkdir()
    _assert_one_line_error(tmp_path / "dir.jpg", "directory")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\nreally\n")
    _assert_one_line_error(path, "text file")


def test_truncated_jpeg(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(cut, "cannot decode")
    with pytest.raises(ImageError):
        probe_image(cut)  # the cheap probe decodes too
    header_only = tmp_path / "header.jpg"
    header_only.write_bytes(data[:300])
    with pytest.raises(ImageError):
        load_image(header_only)


def test_garbage_after_jpeg_magic(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20)
    with pytest.raises(ImageError):
        load_image(path)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "PPM"])
def test_unsupported_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(_gradient()).save(path, format=fmt)
    _assert_one_line_error(path, "unsupported image format", fmt)


def test_decompression_bomb_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(60_000, 60_000))  # 3600 MP header, no data
    error = _assert_one_line_error(path, "MP")
    assert "limit" in str(error)
    with pytest.raises(ImageError):
        probe_image(path)


def test_large_real_photo_size_is_allowed(tmp_path: Path) -> None:
    """180 MP is above Pillow's own default bomb limit (179 MP) but a real photo size: accepted."""
    width, height = 15_000, 12_000
    assert width * height <= MAX_PIXELS
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    path = tmp_path / "big.png"
    path.write_bytes(_png(width, height, depth=1, colour=0, raw=row * height))  # 1-bit, all black
    loaded = probe_image(path)
    assert loaded.size == (width, height)


def test_errors_are_metro_errors(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"\x00" * 100)
    with pytest.raises(MetroError):
        load_image(tmp_path / "x.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP", "HEIF"])
@pytest.mark.parametrize("orientation", [3, 6])
def test_every_format_applies_orientation_once_and_reads_focal_tags(
    tmp_path: Path, fmt: str, orientation: int
) -> None:
    """Pillow turns TIFFs itself and libheif turns HEIFs itself: the orientation must be applied exactly once,
    and the EXIF focal tags must be found in every container (exifread, or Pillow where exifread cannot)."""
    from metrocli.camera.exif_write import make_exif
    from metrocli.camera.photo import load_photo

    upright = np.kron(_gradient(5, 8), np.ones((6, 6, 1), dtype=np.uint8))  # 30 x 48 displayed
    stored = undo_orientation(upright, orientation)
    exif = make_exif(
        make="Apple",
        model="iPhone 12",
        stored_size=(stored.shape[1], stored.shape[0]),
        focal_35mm=26,
        orientation=orientation,
    )
    path = tmp_path / f"x.{fmt.lower()}"
    options = {"lossless": True} if fmt == "WEBP" else {"quality": 98} if fmt in ("JPEG", "HEIF") else {}
    Image.fromarray(stored).save(path, format=fmt, exif=exif.tobytes(), **options)
    photo = load_photo(path)
    assert photo.orientation == orientation
    assert photo.stored_size == (stored.shape[1], stored.shape[0])
    assert photo.image.shape == upright.shape
    assert np.abs(photo.image.astype(int) - upright.astype(int)).mean() < 6
    assert photo.intrinsics.focal_source == "exif-35mm"
    assert photo.make == "Apple"
