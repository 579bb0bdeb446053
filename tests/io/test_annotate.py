"""The --annotate picture: lines, markers and labels drawn on the photo, written as a valid PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from metrocli.geometry.measure import Measurement
from metrocli.io.annotate import (
    annotate_image,
    format_distance,
    format_uncertainty,
    label_text,
    write_annotated,
)


def m(u1: float, v1: float, u2: float, v2: float, d: float = 1.2345, s: float = 0.062) -> Measurement:
    return Measurement((u1, v1), (u2, v2), (0.0, 0.0, 1.0), (d, 0.0, 1.0), d, s)


def test_label_text() -> None:
    assert format_distance(1.2345) == "1.234 m" or format_distance(1.2345) == "1.235 m"
    assert format_distance(0.824) == "82.4 cm"
    assert format_uncertainty(0.062) == "6.2 cm"
    assert format_uncertainty(0.0004) == "0.4 mm"
    assert label_text(m(0, 0, 1, 1, 2.0, 0.1)) == "2.000 m ± 10.0 cm"


def test_annotation_draws_lines_and_labels(tmp_path: Path) -> None:
    rgb = np.full((300, 400, 3), 128, np.uint8)
    out = write_annotated(tmp_path / "a.png", rgb, [m(50, 250, 350, 250), m(200, 40, 200, 200, 0.5, 0.01)])
    with Image.open(out) as img:
        img.verify()
    img = np.asarray(Image.open(out))
    assert img.shape == (300, 400, 3)
    # the horizontal line (first palette colour, yellow) runs between its end points
    row = img[250, 80:320].astype(int)
    assert (np.abs(row - [255, 214, 10]).sum(axis=1) < 60).mean() > 0.9
    # anti-aliased: intermediate shades at the line's border, not only line colour and background
    column = img[238:262, 200].astype(int)
    assert len({tuple(p) for p in column}) > 4
    # labels: a dark box with white text somewhere beside each line
    assert (img.sum(axis=2) < 150).sum() > 500
    assert ((img == 255).all(axis=2)).sum() > 100
    # the untouched corner stays the photo
    np.testing.assert_array_equal(img[290:, :20], 128)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_annotation_scales_with_the_photo() -> None:
    def thickness(img: np.ndarray, u: int, v0: int, v1: int) -> int:
        column = img[v0:v1, u].astype(int)
        return int(((column[:, 0] > 200) & (column[:, 1] > 150) & (column[:, 2] < 100)).sum())

    small = np.asarray(annotate_image(np.zeros((240, 320, 3), np.uint8), [m(20, 200, 300, 200)]))
    big = np.asarray(annotate_image(np.zeros((1920, 2560, 3), np.uint8), [m(160, 1600, 2400, 1600)]))
    t_small, t_big = thickness(small, 100, 180, 220), thickness(big, 800, 1550, 1650)
    assert t_small >= 2 and t_big >= 3 * t_small  # the line width grows with the photo
    # and so does the label: count the label box's dark pixels relative to the picture size
    assert (big.sum(axis=2) > 0).sum() > 20 * (small.sum(axis=2) > 0).sum()


def test_labels_stay_inside_and_do_not_overlap() -> None:
    rgb = np.zeros((200, 300, 3), np.uint8)
    lines = [m(5, 5, 295, 5), m(5, 10, 295, 12), m(100, 100, 110, 104)]
    img = np.asarray(annotate_image(rgb, lines))
    assert img.shape == (200, 300, 3)


def test_labels_of_a_picture_share_one_unit() -> None:
    from metrocli.io.units import format_with_uncertainty

    a, b = m(0, 0, 1, 1, 1.18, 0.062), m(0, 0, 1, 1, 0.78, 0.05)
    assert label_text(a, "m") == "1.180 m ± 0.062 m" and label_text(b, "m") == "0.780 m ± 0.050 m"
    assert label_text(b, "in") == format_with_uncertainty(0.78, 0.05, "in") == "30.7 in ± 2.0 in"
    # the picture in inches differs from the one in the default unit (metres here)
    rgb = np.zeros((300, 400, 3), np.uint8)
    lines = [m(50, 250, 350, 250, 1.18, 0.062), m(200, 40, 200, 200, 0.78, 0.05)]
    metres = np.asarray(annotate_image(rgb, lines))
    np.testing.assert_array_equal(metres, np.asarray(annotate_image(rgb, lines, "m")))
    assert (np.asarray(annotate_image(rgb, lines, "in")) != metres).any()
