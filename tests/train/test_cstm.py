"""Canonical camera space transform and augmentations against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from metrocli.train import cstm
from metrocli.train.cstm import Frame


def _frame(h: int = 60, w: int = 80, f: float = 500.0, depth_m: float = 2.0) -> Frame:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = np.full((h, w), depth_m, np.float32)
    depth[:5, :5] = 0  # a hole
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 0], normal[..., 2] = 0.6, -0.8
    return Frame(rgb, depth, (f, f, (w - 1) / 2, (h - 1) / 2), normal=normal)


def _canonical_points(fr: Frame) -> np.ndarray:
    """(H, W, 3) back-projection of the canonical target with the canonical intrinsics."""
    fx, fy, cx, cy = fr.intrinsics
    v, u = np.mgrid[0 : fr.depth.shape[0], 0 : fr.depth.shape[1]].astype(np.float64)
    d = fr.depth.astype(np.float64)
    return np.stack([(u - cx) / fx * d, (v - cy) / fy * d, d], axis=-1)


def test_label_mode_scales_depth_by_canonical_over_focal() -> None:
    out = cstm.to_canonical(_frame(), "label")
    assert out.rgb.shape == (60, 80, 3)
    assert out.scale == pytest.approx(2.0)  # 1000 / 500
    assert out.intrinsics == pytest.approx((1000.0, 1000.0, 39.5, 29.5))
    assert out.depth[10, 10] == pytest.approx(4.0)
    assert out.depth[0, 0] == 0.0  # holes stay holes


def test_label_mode_keeps_the_aspect_of_non_square_pixels() -> None:
    fr = replace_intrinsics(_frame(), (500.0, 520.0, 39.5, 29.5))
    out = cstm.to_canonical(fr, "label")
    assert out.intrinsics == pytest.approx((1000.0, 1040.0, 39.5, 29.5))


def replace_intrinsics(fr: Frame, k: tuple[float, float, float, float]) -> Frame:
    from dataclasses import replace

    return replace(fr, intrinsics=k)


def test_image_mode_resizes_by_canonical_over_focal_and_keeps_depth() -> None:
    out = cstm.to_canonical(_frame(), "image")
    assert out.rgb.shape == (120, 160, 3)
    assert out.depth.shape == (120, 160) and out.normal is not None and out.normal.shape == (120, 160, 3)
    assert out.scale == 1.0
    assert out.intrinsics == pytest.approx((1000.0, 1000.0, 79.0, 59.0))
    assert out.depth[50, 50] == pytest.approx(2.0)


@pytest.mark.parametrize("mode", ["label", "image"])
def test_a_photo_and_its_resized_copy_give_the_same_canonical_supervision(mode: str) -> None:
    """A photo at f = 500 px and the same photo enlarged 2x (f = 1000 px): same canonical 3D supervision."""
    a = _frame()
    b = cstm.resize_frame(a, 2.0)
    b = replace_intrinsics(b, (1000.0, 1000.0, *b.intrinsics[2:]))
    ca, cb = cstm.to_canonical(a, mode), cstm.to_canonical(b, mode)
    pa, pb = _canonical_points(ca), _canonical_points(cb)
    if mode == "image":
        # both end at the canonical resolution: identical maps and intrinsics
        assert ca.intrinsics == pytest.approx(cb.intrinsics)
        np.testing.assert_array_equal(ca.depth, cb.depth)
        np.testing.assert_allclose(pa, pb)
    else:
        # label mode keeps each image's size; pixel (v, u) of A is pixel (2v, 2u) of B. A shows everything
        # half as large as B, so for the canonical camera it is twice as far: same canonical x, y; z x2.
        assert ca.scale == pytest.approx(2.0) and cb.scale == pytest.approx(1.0)
        np.testing.assert_allclose(pa[10:50, 10:70, :2], pb[20:100:2, 20:140:2, :2], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(pa[10:50, 10:70, 2], 2 * pb[20:100:2, 20:140:2, 2], rtol=1e-6)
        # and B, already at the canonical focal, is what the image mode makes of A
        ia = cstm.to_canonical(a, "image")
        np.testing.assert_array_equal(ia.depth, cb.depth)
        assert ia.intrinsics == pytest.approx(cb.intrinsics)
    # the metric depth is recovered from either: target / scale
    np.testing.assert_allclose(ca.depth[20, 20] / ca.scale, 2.0)
    np.testing.assert_allclose(cb.depth[40, 40] / cb.scale, 2.0)


def test_random_resize_keeps_focal_and_metric_depth() -> None:
    fr = cstm.to_canonical(_frame(), "label")
    out = cstm.random_resize(fr, 1.1)
    assert out.rgb.shape == (66, 88, 3)
    assert out.intrinsics[:2] == fr.intrinsics[:2]
    assert out.intrinsics[2:] == pytest.approx((39.5 * 1.1, 29.5 * 1.1))
    assert out.depth[30, 30] == pytest.approx(4.0 / 1.1)
    assert out.depth[30, 30] / out.scale == pytest.approx(2.0)  # still 2 m in metres


def test_sparse_depth_resize_loses_no_points() -> None:
    depth = np.zeros((40, 40), np.float32)
    depth[::7, ::5] = 3.0
    fr = Frame(np.zeros((40, 40, 3), np.uint8), depth, (100.0, 100.0, 19.5, 19.5), sparse=True)
    out = cstm.resize_frame(fr, 0.85)
    assert int((out.depth > 0).sum()) == int((depth > 0).sum())


def test_crop_pads_with_the_official_values_and_shifts_the_principal_point() -> None:
    fr = cstm.to_canonical(_frame(h=60, w=80), "label")
    sem = np.full((60, 80), 7, np.int32)
    from dataclasses import replace

    out = cstm.crop_or_pad(replace(fr, sem=sem), (84, 56), offset=(0, 10))
    assert out.depth.shape == (84, 56)
    assert out.pad == (12, 12, 0, 0)
    assert out.intrinsics[2:] == pytest.approx((39.5 - 10, 29.5 + 12))
    assert (out.depth[:12] == -1).all() and (out.rgb[:12] == 0).all()
    assert out.sem is not None and (out.sem[:12] == -1).all() and (out.sem[12:72] == 7).all()
    assert out.normal is not None and (out.normal[:12] == 0).all()
    centred = cstm.crop_or_pad(fr, (40, 40))
    assert centred.intrinsics[2:] == pytest.approx((39.5 - 20, 29.5 - 10))


def test_flip_mirrors_geometry_consistently() -> None:
    """A point (X, Y, Z) seen at (u, v) is at (W-1-u, v) after the flip, which back-projects to (-X, Y, Z)."""
    fr = replace_intrinsics(_frame(), (500.0, 500.0, 30.0, 25.0))
    flipped = cstm.hflip(fr)
    assert flipped.intrinsics == pytest.approx((500.0, 500.0, 79 - 30.0, 25.0))
    u, v = 12, 40
    p = _canonical_points(fr)[v, u]
    q = _canonical_points(flipped)[v, 79 - u]
    np.testing.assert_allclose(q, [-p[0], p[1], p[2]])
    assert flipped.normal is not None and fr.normal is not None
    np.testing.assert_allclose(flipped.normal[v, 79 - u], [-0.6, 0.0, -0.8])
    np.testing.assert_array_equal(flipped.rgb[v, 79 - u], fr.rgb[v, u])


def test_prepare_marks_sky_holes_and_padding_invalid_and_is_deterministic_for_validation() -> None:
    from dataclasses import replace

    fr = _frame()
    sem = np.zeros((60, 80), np.int32)
    sem[:, -3:] = cstm.SKY_ID
    a = cstm.prepare(replace(fr, sem=sem), (56, 84))
    b = cstm.prepare(replace(fr, sem=sem), (56, 84))
    np.testing.assert_array_equal(a.depth, b.depth)
    assert (a.depth[a.sem == cstm.SKY_ID] == -1).all()
    assert a.depth.min() == -1.0 and a.depth.max() == pytest.approx(4.0)
    assert a.pad == (0, 0, 2, 2)


def test_training_augmentations_keep_depth_and_intrinsics_consistent() -> None:
    """Whatever the random draws, target / scale is the metric depth and the crop has the requested size."""
    fr = _frame(depth_m=3.0)
    cfg = cstm.AugmentConfig(resize_prob=1.0, flip_prob=0.5, jitter_prob=1.0, gray_prob=0.5)
    for seed in range(6):
        out = cstm.prepare(fr, (56, 56), augment=cfg, rng=np.random.default_rng(seed))
        assert out.rgb.shape == (56, 56, 3) and out.depth.shape == (56, 56)
        valid = out.depth > 0
        np.testing.assert_allclose(out.depth[valid] / out.scale, 3.0, rtol=1e-6)
        assert out.intrinsics[0] == pytest.approx(1000.0)


def test_normalise_image_uses_the_official_mean_and_std() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    x = cstm.normalise_image(rgb)
    assert x.shape == (3, 2, 2)
    assert x[0, 0, 0] == pytest.approx((255 - 123.675) / 58.395)
    assert x[1, 0, 0] == pytest.approx(-116.28 / 57.12)
