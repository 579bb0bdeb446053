"""Garbage EXIF and garbage files: only MetroError subclasses (or success) ever come out.

EXIF blocks are built byte by byte (any TIFF type, count and value, both byte orders), so values Pillow would
refuse to write — zero denominators, NaN floats, negative signed rationals, lying counts — reach the readers.
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from metrocli.camera.exif import ExifData, read_exif, read_exif_bytes
from metrocli.camera.exif_write import write_jpeg
from metrocli.camera.focal import MAX_FOV_DEG, MIN_FOV_DEG, long_side_fov_deg
from metrocli.camera.image import load_image
from metrocli.camera.photo import load_photo
from metrocli.errors import MetroError

# TIFF field types: 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL, 6 SBYTE, 7 UNDEFINED, 8 SSHORT, 9 SLONG,
# 10 SRATIONAL, 11 FLOAT, 12 DOUBLE.
IFD0_TAGS = {"make": 0x010F, "model": 0x0110, "orientation": 0x0112, "datetime": 0x0132}
EXIF_TAGS = {
    "focal": 0x920A,
    "f35": 0xA405,
    "fpx": 0xA20E,
    "fpy": 0xA20F,
    "unit": 0xA210,
    "width": 0xA002,
    "height": 0xA003,
}

Entry = tuple[int, int, int, bytes]  # tag, type, count, payload


def tiff_block(ifd0: list[Entry], exif: list[Entry], order: str = "<") -> bytes:
    """A TIFF/EXIF structure: IFD0 (with a pointer to the Exif IFD) followed by the Exif IFD."""

    def layout(entries: list[Entry], start: int) -> bytes:
        head = struct.pack(order + "H", len(entries))
        data = b""
        data_start = start + 2 + 12 * len(entries) + 4
        for tag, typ, count, payload in entries:
            head += struct.pack(order + "HHI", tag, typ, count & 0xFFFFFFFF)
            if len(payload) <= 4:
                head += payload.ljust(4, b"\0")
            else:
                head += struct.pack(order + "I", data_start + len(data))
                data += payload + (b"\0" if len(payload) % 2 else b"")
        return head + struct.pack(order + "I", 0) + data

    entries0 = sorted([e for e in ifd0 if e[0] != 0x8769] + [(0x8769, 4, 1, b"\0\0\0\0")], key=lambda e: e[0])
    exif_offset = 8 + len(layout(entries0, 8))
    entries0 = [
        (t, ty, c, struct.pack(order + "I", exif_offset) if t == 0x8769 else p) for t, ty, c, p in entries0
    ]
    header = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
    return header + layout(entries0, 8) + layout(sorted(exif, key=lambda e: e[0]), exif_offset)


def jpeg_with_exif(tiff: bytes, size: tuple[int, int] = (16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(buf, "JPEG", exif=b"Exif\0\0" + tiff)
    return buf.getvalue()


def rational(num: int, den: int, signed: bool = False, order: str = "<") -> bytes:
    return struct.pack(order + ("ii" if signed else "II"), num, den)


# ----------------------------------------------------------------------------------- hand-made garbage
def _exif_of(exif_entries: list[Entry], ifd0: list[Entry] | None = None) -> ExifData:
    return read_exif_bytes(jpeg_with_exif(tiff_block(ifd0 or [], exif_entries)), "x.jpg")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ((0x920A, 5, 1, rational(42, 0)), "zero denominator"),
        ((0x920A, 5, 1, rational(0, 10)), "not positive"),
        ((0x920A, 10, 1, rational(-42, 10, signed=True)), "not positive"),
        ((0x920A, 12, 1, struct.pack("<d", math.nan)), "not finite"),
        ((0x920A, 11, 1, struct.pack("<f", math.inf)), "not finite"),
        ((0x920A, 5, 1, rational(4_000_000_000, 1)), "absurdly large"),
        ((0xA405, 3, 1, struct.pack("<H", 0)), "not positive"),
        ((0xA405, 8, 1, struct.pack("<h", -26)), "not positive"),
        ((0xA20E, 5, 1, rational(1, 0)), "zero denominator"),
        ((0xA210, 3, 1, struct.pack("<H", 77)), "out of range"),
        ((0xA002, 4, 1, struct.pack("<I", 0)), "not positive"),
    ],
)
def test_invalid_values_become_none_with_warning(entry: Entry, fragment: str) -> None:
    exif = _exif_of([entry])
    values = (exif.focal_length_mm, exif.focal_35mm, exif.focal_plane_x_res, exif.focal_plane_unit)
    assert all(v is None for v in values)
    assert exif.exif_image_width is None
    assert any(fragment in w and "x.jpg" in w for w in exif.warnings), exif.warnings


def test_valid_values_read_back() -> None:
    exif = _exif_of(
        [
            (0x920A, 5, 1, rational(57, 10)),
            (0xA405, 3, 1, struct.pack("<H", 26)),
            (0xA20E, 5, 1, rational(10000, 7)),
            (0xA210, 3, 1, struct.pack("<H", 3)),
            (0xA002, 4, 1, struct.pack("<I", 4032)),
        ],
        [(0x010F, 2, 6, b"Apple\0"), (0x0112, 3, 1, struct.pack("<H", 6))],
    )
    assert exif.make == "Apple"
    assert exif.orientation == 6
    assert exif.focal_length_mm == pytest.approx(5.7)
    assert exif.focal_35mm == 26
    assert exif.focal_plane_x_res_per_mm == pytest.approx(10000 / 7 / 10)
    assert exif.exif_image_width == 4032
    assert exif.warnings == ()


def test_nan_focal_falls_back_to_next_source(tmp_path: Path) -> None:
    tiff = tiff_block(
        [(0x010F, 2, 6, b"Apple\0"), (0x0110, 2, 18, b"iPhone 13 Pro Max\0")],
        [(0x920A, 12, 1, struct.pack("<d", math.nan)), (0xA405, 3, 1, struct.pack("<H", 26))],
    )
    path = tmp_path / "nan.jpg"
    path.write_bytes(jpeg_with_exif(tiff, (40, 30)))
    photo = load_photo(path)
    assert photo.intrinsics.focal_source == "exif-35mm"
    assert photo.intrinsics.fx == pytest.approx(26 * 50 / math.hypot(36, 24))
    assert any("FocalLength is not finite" in w for w in photo.warnings)


def test_truncated_exif_block(tmp_path: Path) -> None:
    good = tiff_block([(0x010F, 2, 6, b"Apple\0")], [(0x920A, 5, 1, rational(57, 10))])
    for cut in (4, 9, 20, len(good) - 3):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(jpeg_with_exif(good[:cut]))
        photo = load_photo(path)  # the pixels are fine: the photo loads, the EXIF is dropped
        assert photo.image.shape == (12, 16, 3)


# ----------------------------------------------------------------------------------- property-based
u16 = st.integers(0, 0xFFFF)
s16 = st.integers(-0x8000, 0x7FFF)
u32 = st.integers(0, 0xFFFFFFFF)
s32 = st.integers(-0x80000000, 0x7FFFFFFF)
small_u32 = st.sampled_from([0, 1, 2, 3, 4, 5, 7, 10, 26, 100, 254, 255, 4000, 65535, 0xFFFFFFFF])


def _encode(typ: int, values: list, order: str) -> tuple[int, bytes]:
    fmt = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 11: "f", 12: "d"}
    if typ in (2, 7):
        return len(values[0]), values[0]
    if typ in (5, 10):
        code = "I" if typ == 5 else "i"
        return len(values), b"".join(struct.pack(order + code * 2, n, d) for n, d in values)
    return len(values), b"".join(struct.pack(order + fmt[typ], v) for v in values)


def _values(typ: int):
    lists = lambda s: st.lists(s, min_size=0, max_size=3)  # noqa: E731
    return {
        1: lists(st.integers(0, 255)),
        2: st.binary(max_size=24).map(lambda b: [b]),
        3: lists(u16),
        4: lists(st.one_of(u32, small_u32)),
        5: lists(st.tuples(st.one_of(u32, small_u32), st.one_of(u32, small_u32))),
        6: lists(st.integers(-128, 127)),
        7: st.binary(max_size=24).map(lambda b: [b]),
        8: lists(s16),
        9: lists(s32),
        10: lists(st.tuples(s32, st.one_of(s32, st.just(0)))),
        11: lists(st.floats(width=32, allow_nan=True, allow_infinity=True)),
        12: lists(st.floats(allow_nan=True, allow_infinity=True)),
    }[typ]


@st.composite
def entries(draw, tags: dict[str, int], order: str) -> list[Entry]:
    out = []
    for tag in draw(st.lists(st.sampled_from(sorted(tags.values())), unique=True, max_size=len(tags))):
        typ = draw(st.integers(1, 12))
        count, payload = _encode(typ, draw(_values(typ)), order)
        if draw(st.integers(0, 9)) == 0:  # a lying count
            count = draw(st.one_of(u32, st.integers(0, 64)))
        out.append((tag, typ, count, payload))
    return out


@st.composite
def exif_blocks(draw) -> bytes:
    order = draw(st.sampled_from(["<", ">"]))
    return tiff_block(draw(entries(IFD0_TAGS, order)), draw(entries(EXIF_TAGS, order)), order)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("garbage")


def _check_exif(exif: ExifData) -> None:
    for value in (exif.focal_length_mm, exif.focal_35mm, exif.focal_plane_x_res, exif.focal_plane_y_res):
        assert value is None or (math.isfinite(value) and value > 0)
    assert exif.orientation is None or 1 <= exif.orientation <= 8
    assert exif.focal_plane_unit is None or 1 <= exif.focal_plane_unit <= 5
    for dim in (exif.exif_image_width, exif.exif_image_height):
        assert dim is None or (isinstance(dim, int) and dim > 0)


def _check_photo(path: Path) -> None:
    try:
        photo = load_photo(path)
    except MetroError as exc:
        assert "\n" not in str(exc)
        assert str(path) in str(exc)
        return
    k = photo.intrinsics
    assert photo.image.dtype == np.uint8 and photo.image.ndim == 3 and photo.image.shape[2] == 3
    assert (k.width, k.height) == (photo.image.shape[1], photo.image.shape[0])
    assert math.isfinite(k.fx) and k.fx > 0 and k.fx == k.fy
    assert MIN_FOV_DEG - 1e-9 <= long_side_fov_deg(k.fx, k.width, k.height) <= MAX_FOV_DEG + 1e-9
    assert 1 <= photo.orientation <= 8
    _check_exif(photo.exif)


#: Found by hypothesis: an Orientation tag stored as a FLOAT holding +inf (int(inf) -> OverflowError).
INF_ORIENTATION = (
    b"II*\x00\x08\x00\x00\x00\x02\x00\x12\x01\x0b\x00\x01\x00\x00\x00\x00\x00\x80\x7fi\x87\x04\x00"
    b"\x01\x00\x00\x00&\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exif_blocks())
@example(tiff=INF_ORIENTATION)
def test_random_exif_values_never_crash(scratch: Path, tiff: bytes) -> None:
    data = jpeg_with_exif(tiff, (24, 18))
    _check_exif(read_exif_bytes(data))
    path = scratch / "random_exif.jpg"
    path.write_bytes(data)
    _check_photo(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash(scratch: Path, data: bytes) -> None:
    _check_exif(read_exif_bytes(data))
    path = scratch / "random.jpg"
    path.write_bytes(data)
    _check_photo(path)


@pytest.fixture(scope="module")
def seeds(scratch: Path) -> list[bytes]:
    """Small valid files (JPEG with phone EXIF, PNG, TIFF, WebP) to mutate."""
    out = []
    path = scratch / "seed.jpg"
    rgb = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    write_jpeg(path, rgb, make="Apple", model="iPhone 13", focal_length_mm=5.1, focal_35mm=26, orientation=6)
    out.append(path.read_bytes())
    for fmt in ("PNG", "TIFF", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt, exif=Image.Exif().tobytes())
        out.append(buf.getvalue())
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 3), cut=st.integers(0, 4000), flips=st.lists(st.tuples(u16, st.integers(0, 255))))
def test_mutated_real_files_never_crash(
    scratch: Path, seeds: list[bytes], seed: int, cut: int, flips: list
) -> None:
    data = bytearray(seeds[seed])
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut:
        data = data[: max(1, len(data) - cut)]
    path = scratch / "mutated.bin"
    path.write_bytes(bytes(data))
    _check_photo(path)
    _check_exif(read_exif(path))


def test_load_image_random_bytes_is_image_error(scratch: Path) -> None:
    path = scratch / "noise.jpg"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(MetroError):
        load_image(path)
