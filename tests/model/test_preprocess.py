"""Canonical pre/post-processing: bit-exact official network input, de-canonical depth, normals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metrocli.camera.intrinsics import Intrinsics, centred
from metrocli.errors import ImageError, MetroUsageError
from metrocli.model.preprocess import (
    CanonicalInput,
    as_intrinsics,
    metric_depth,
    photo_normals,
    prepare,
    resize_and_pad,
    unpad_resize,
)


@pytest.mark.parametrize(
    ("fixture", "size"),
    [("vit-small.seed4321.raw616x1064.npz", (616, 1064)), ("vit-large.seed4321.raw308x532.npz", (308, 532))],
)
def test_prepare_reproduces_the_official_network_input_exactly(fixtures_dir, fixture, size):
    from PIL import Image

    image = np.asarray(Image.open(fixtures_dir / "scene_a.png").convert("RGB"))
    canon = prepare(image, size)
    reference = np.load(fixtures_dir / fixture)["input"]
    assert canon.tensor.shape == (1, 3, *size) and canon.tensor.dtype == torch.float32
    np.testing.assert_array_equal(canon.tensor[0].numpy(), reference)
    assert canon.photo_size == (480, 640)


def test_resize_and_pad_keeps_ratio_and_splits_padding():
    image = np.full((480, 640, 3), 200, np.uint8)
    padded, scale, pad = resize_and_pad(image, (616, 1064))
    assert padded.shape == (616, 1064, 3) and padded.dtype == np.uint8
    assert scale == pytest.approx(616 / 480)
    assert pad == (0, 0, 121, 122)  # 1064 - 821 = 243: pad // 2 before, the rest after
    # OpenCV pads an 8-bit image with the mean colour rounded to 8 bits, as the official code does
    np.testing.assert_array_equal(padded[0, 0], [124, 116, 104])
    np.testing.assert_array_equal(padded[0, -1], [124, 116, 104])
    assert (padded[:, 121 : 1064 - 122] == 200).all()

    portrait = np.zeros((4000, 3000, 3), np.uint8)  # a 12 MP phone photo, upright portrait
    padded, scale, pad = resize_and_pad(portrait, (616, 1064))
    assert padded.shape == (616, 1064, 3)
    assert pad[0] + pad[1] == 0 and pad[2] + pad[3] == 1064 - int(3000 * scale)
    canon = CanonicalInput(torch.zeros(1, 3, 616, 1064), scale, pad, (4000, 3000))
    assert canon.resized_size == (616, int(3000 * scale))

    tiny = np.zeros((1, 5000, 3), np.uint8)  # degenerate strip: at least one row survives
    padded, _, pad = resize_and_pad(tiny, (616, 1064))
    assert padded.shape == (616, 1064, 3)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), "img"],
)
def test_bad_images_raise_image_error(bad):
    with pytest.raises(ImageError):
        prepare(bad, (616, 1064))


def test_metric_depth_uncanonicalises_crops_and_clamps():
    image = np.zeros((480, 640, 3), np.uint8)
    canon = prepare(image, (616, 1064))
    left, right = canon.pad[2], canon.pad[3]
    canonical = torch.full((1, 1, 616, 1064), 10.0)
    canonical[..., :left] = 1e6  # padding must be cropped away
    canonical[..., 1064 - right :] = 1e6
    depth = metric_depth(canonical, canon, fx=520.0)
    assert depth.shape == (1, 1, 480, 640)
    expected = 10.0 * 520.0 * canon.scale / 1000.0
    torch.testing.assert_close(depth, torch.full_like(depth, expected))
    far = metric_depth(torch.full((1, 1, 616, 1064), 1e5), canon, fx=520.0)
    assert float(far.max()) == 300.0


def test_upsampling_is_bilinear_without_corner_alignment():
    canon = CanonicalInput(torch.zeros(1, 3, 4, 4), 1.0, (0, 0, 0, 0), (8, 8))
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    up = unpad_resize(ramp, canon)[0, 0, 0]
    torch.testing.assert_close(up, torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]))


def test_photo_normals_are_unit_contiguous_and_cropped():
    canon = CanonicalInput(torch.zeros(1, 3, 6, 8), 0.5, (1, 1, 0, 0), (8, 16))
    normal = torch.zeros(1, 3, 6, 8)
    normal[:, 2] = -1.0
    normal[:, 0, :, :4] = 1.0  # left half tilted (not unit before renormalisation)
    normal[:, :, 0] = 0.0  # padding rows would give zero vectors if they leaked in
    normal[:, :, -1] = 0.0
    out = photo_normals(normal, canon)
    assert out.shape == (1, 8, 16, 3) and out.is_contiguous()
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(1, 8, 16))
    torch.testing.assert_close(out[0, 0, -1], torch.tensor([0.0, 0.0, -1.0]))


def test_as_intrinsics_accepts_tuples_and_checks_sizes():
    intr = as_intrinsics((500.0, 510.0, 320.0, 240.0), 640, 480)
    assert intr == Intrinsics(500.0, 510.0, 320.0, 240.0, 640, 480, "user")
    exif = centred(640, 480, 600.0, "exif-35mm")
    assert as_intrinsics(exif, 640, 480) is exif
    with pytest.raises(MetroUsageError, match="640x480"):
        as_intrinsics(exif, 480, 640)
    with pytest.raises(MetroUsageError, match="positive"):
        as_intrinsics((0.0, 500.0, 1.0, 1.0), 640, 480)
    with pytest.raises(MetroUsageError, match="fx, fy, cx, cy"):
        as_intrinsics((500.0, 500.0), 640, 480)
