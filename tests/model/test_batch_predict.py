"""Batched forwards (issue 17): ``Metric3D.predict_batch`` gives each photo the maps of ``predict``, in
order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metrocli.camera.intrinsics import Intrinsics
from metrocli.model.factory import load_model
from metrocli.pipeline.principal import predict_centred, predict_centred_many


def photos() -> list[tuple[np.ndarray, Intrinsics]]:
    """Three photos of different sizes and aspect ratios (one with an off-centre principal point)."""
    rng = np.random.default_rng(3)
    out = []
    for height, width, cx in ((90, 150, 75.0), (160, 120, 60.0), (100, 100, 40.0)):
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        out.append((image, Intrinsics(120.0, 120.0, cx, height / 2, width, height, "user")))
    return out


@pytest.fixture(scope="module")
def vit_small(seeded_weights):
    """The seeded ViT-S at a small network input (the batch is about the same network, not the size)."""
    torch.set_num_threads(2)
    model = load_model("vit-small", weights=seeded_weights("vit-small"), device="cpu", precision="fp32")
    model.preset = dataclasses.replace(model.preset, input_size=(112, 196))
    return model


@pytest.mark.slow
def test_a_batch_gives_each_photo_its_own_maps_in_order(vit_small) -> None:
    items = photos()
    alone = [predict_centred(vit_small, image, k) for image, k in items]
    together = predict_centred_many(vit_small, [i for i, _ in items], [k for _, k in items])
    assert len(together) == len(alone)
    for one, batched, (image, k) in zip(alone, together, items, strict=True):
        assert batched.depth.shape == image.shape[:2] and batched.intrinsics == k
        np.testing.assert_allclose(batched.depth, one.depth, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(batched.confidence, one.confidence, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(batched.normal, one.normal, atol=1e-4)
        np.testing.assert_allclose(batched.normal_confidence, one.normal_confidence, rtol=1e-4, atol=1e-4)
        assert set(batched.timings_s) == {"preprocess", "forward", "postprocess"}
    # the photos differ, so a mix-up of the batch's order would show
    assert not np.allclose(together[0].depth.mean(), together[2].depth.mean(), rtol=1e-6)


@pytest.mark.slow
def test_a_batch_of_one_is_predict(vit_small) -> None:
    (image, k), *_ = photos()
    [batched] = vit_small.predict_batch([image], [k])
    single = vit_small.predict(image, k)
    assert np.array_equal(batched.depth, single.depth) and np.array_equal(batched.normal, single.normal)
    assert vit_small.predict_batch([], []) == []
    with pytest.raises(ValueError):
        vit_small.predict_batch([image], [k, k])
