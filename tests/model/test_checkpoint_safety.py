"""Checkpoints in other float dtypes load (cast to the model's dtype); NaN/Inf weights are refused; the tiny
forward of ``verify`` catches weights that are finite but overflow."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from metrocli.errors import WeightsError
from metrocli.model.checkpoint import first_non_finite, load_state_dict_strict, read_checkpoint
from metrocli.model.factory import build_model, check_forward, load_model, verify
from metrocli.model.metric3d import Metric3D
from metrocli.model.presets import PRESETS, get_preset

PATCH_WEIGHT = "depth_model.encoder.patch_embed.proj.weight"


def _copy(src: Path, dst: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """``dst``: the checkpoint ``src`` (published layout) with its state dict changed in place by ``edit``."""
    state = read_checkpoint(src)
    edit(state)
    torch.save({"model_state_dict": state}, dst)
    return dst


def _to(dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], None]:
    def edit(state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            if value.is_floating_point():
                state[key] = value.to(dtype)

    return edit


@pytest.fixture(scope="module")
def vit_small_state(seeded_weights) -> dict[str, torch.Tensor]:
    return read_checkpoint(seeded_weights("vit-small"))


def _meta_vit_small() -> Metric3D:
    return build_model("vit-small", device="meta")


def _floating_model_tensors(model: Metric3D) -> int:
    return sum(1 for t in model.net.state_dict().values() if t.is_floating_point())


# --- dtypes -------------------------------------------------------------------------------------------------


def test_float64_checkpoint_loads_with_the_float32_values(seeded_weights, tmp_path: Path, caplog) -> None:
    f32_path = seeded_weights("vit-small")
    f64_path = _copy(f32_path, tmp_path / "vit-small.float64.pth", _to(torch.float64))
    assert all(t.dtype == torch.float64 for t in read_checkpoint(f64_path).values() if t.is_floating_point())
    with caplog.at_level(logging.INFO, logger="metrocli.model.checkpoint"):
        f64 = load_model("vit-small", weights=f64_path)
    f32 = load_model("vit-small", weights=f32_path)
    n_cast = _floating_model_tensors(f32)
    assert f"cast {n_cast} float64 tensors of weights file {f64_path} to the model's dtype" in caplog.text
    for (name, a), (_, b) in zip(f64.state_dict().items(), f32.state_dict().items(), strict=True):
        assert a.dtype == b.dtype, name
        assert torch.equal(a, b), name  # float32 -> float64 -> float32 is exact
    x = torch.randn(1, 3, 56, 84, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out64, out32 = f64(x), f32(x)
    for key in out32:
        torch.testing.assert_close(out64[key], out32[key])


@pytest.mark.slow
def test_float64_checkpoint_predicts_like_float32(seeded_weights, tmp_path: Path) -> None:
    f32_path = seeded_weights("vit-small")
    f64_path = _copy(f32_path, tmp_path / "vit-small.float64.pth", _to(torch.float64))
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    intrinsics = (60.0, 60.0, 32.0, 24.0)
    p64 = load_model("vit-small", weights=f64_path).predict(image, intrinsics)
    p32 = load_model("vit-small", weights=f32_path).predict(image, intrinsics)
    for name in ("depth", "confidence", "normal", "normal_confidence"):
        a, b = getattr(p64, name), getattr(p32, name)
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1.3e-6, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_are_cast_up(vit_small_state, dtype: torch.dtype) -> None:
    half = {k: v.to(dtype) if v.is_floating_point() else v for k, v in vit_small_state.items()}
    model = _meta_vit_small()
    casts = load_state_dict_strict(model, half, "vit", assign=True)
    assert casts == {str(dtype).removeprefix("torch."): _floating_model_tensors(model)}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    expected = half[PATCH_WEIGHT].float()
    assert torch.equal(model.net.encoder.patch_embed.proj.weight, expected)
    check_forward(model)  # runs: the cast parameters match the float32 input


def test_mixed_dtypes_count_only_the_cast_tensors(vit_small_state) -> None:
    mixed = dict(vit_small_state)
    mixed[PATCH_WEIGHT] = mixed[PATCH_WEIGHT].double()
    mixed["depth_model.encoder.cls_token"] = mixed["depth_model.encoder.cls_token"].half()
    assert load_state_dict_strict(_meta_vit_small(), mixed, "vit", assign=True) == {
        "float64": 1,
        "float16": 1,
    }
    assert load_state_dict_strict(_meta_vit_small(), dict(vit_small_state), "vit", assign=True) == {}


def test_non_floating_weights_are_refused(vit_small_state) -> None:
    broken = dict(vit_small_state)
    broken[PATCH_WEIGHT] = broken[PATCH_WEIGHT].to(torch.int64)
    with pytest.raises(
        WeightsError, match=r"^weights file w\.pth holds encoder\.patch_embed\.proj\.weight as int64"
    ):
        load_state_dict_strict(_meta_vit_small(), broken, "vit", source="weights file w.pth", assign=True)


# --- non-finite weights -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dtype", "found"),
    [
        (float("nan"), torch.float32, "1 NaN of"),
        (float("inf"), torch.float32, "1 infinite of"),
        (float("-inf"), torch.bfloat16, "1 infinite of"),
        (float("nan"), torch.float16, "1 NaN of"),
    ],
)
def test_non_finite_weights_are_refused_naming_the_first_bad_tensor(
    vit_small_state, value: float, dtype: torch.dtype, found: str
) -> None:
    poisoned = dict(vit_small_state)
    keys = [k for k in poisoned if ".0.norm3." not in k]  # not the aliases that remapping drops
    first, later = keys[40], keys[200]
    for key in (later, first):
        t = poisoned[key].to(dtype).clone()
        t.view(-1)[3] = value
        poisoned[key] = t
    with pytest.raises(WeightsError) as info:
        load_state_dict_strict(_meta_vit_small(), poisoned, "vit", source="weights file p.pth", assign=True)
    message = str(info.value)
    assert message.startswith(f"weights file p.pth holds non-finite weights: {first} has {found}")
    assert later not in message and "\n" not in message


def test_a_float64_value_that_overflows_float32_is_refused(vit_small_state) -> None:
    state = dict(vit_small_state)
    big = state[PATCH_WEIGHT].double().clone()
    big.view(-1)[0] = 1e300  # finite in float64, infinite in float32
    state[PATCH_WEIGHT] = big
    with pytest.raises(
        WeightsError, match=rf"{PATCH_WEIGHT} has 1 infinite of .* after the cast from float64"
    ):
        load_state_dict_strict(_meta_vit_small(), state, "vit", assign=True)


def test_key_and_shape_errors_come_before_the_value_check(vit_small_state) -> None:
    state = dict(vit_small_state)
    state[PATCH_WEIGHT] = torch.full_like(state[PATCH_WEIGHT], float("nan"))
    del state["depth_model.encoder.cls_token"]
    with pytest.raises(WeightsError, match=r"does not fit the model: 1 missing keys \(encoder\.cls_token\)"):
        load_state_dict_strict(_meta_vit_small(), state, "vit", assign=True)


def test_load_model_refuses_a_nan_checkpoint_file(seeded_weights, tmp_path: Path) -> None:
    def poison(state: dict[str, torch.Tensor]) -> None:
        state[PATCH_WEIGHT].view(-1)[7] = float("nan")

    path = _copy(seeded_weights("vit-small"), tmp_path / "nan.pth", poison)
    with pytest.raises(WeightsError, match=rf"^weights file {path} holds non-finite weights: {PATCH_WEIGHT}"):
        load_model("vit-small", weights=path)


def test_first_non_finite_is_exact_where_sums_overflow() -> None:
    finite_but_huge = {
        "f32": torch.full((4,), 3e38),  # sums to inf, every value finite
        "f16": torch.full((8,), 60000.0, dtype=torch.float16),
        "ints": torch.tensor([1, 2]),
        "meta": torch.empty(3, device="meta"),
    }
    assert first_non_finite(finite_but_huge) is None
    assert first_non_finite({**finite_but_huge, "bad": torch.tensor([1.0, float("nan")])}) == "bad"
    cancel = torch.tensor([float("inf"), float("-inf")])  # sums to NaN
    assert first_non_finite({"a": torch.zeros(2), "c": cancel}) == "c"


# --- the tiny forward ---------------------------------------------------------------------------------------


def test_size_multiple_gives_outputs_of_the_input_size() -> None:
    assert {name: p.size_multiple_px for name, p in PRESETS.items()} == {
        "vit-small": 28,
        "vit-large": 28,
        "vit-giant2": 28,
        "convnext-tiny": 32,
        "convnext-large": 32,
    }
    for name in ("vit-small", "convnext-tiny"):
        torch.manual_seed(0)
        model = build_model(name)
        m = get_preset(name).size_multiple_px
        with torch.inference_mode():
            out = model(torch.randn(1, 3, m, m))
        assert out["depth"].shape == (1, 1, m, m)
        assert check_forward(model)["input_shape"] == [1, 3, m, m]


def test_check_forward_catches_finite_weights_that_overflow(vit_small_state) -> None:
    model = _meta_vit_small()
    load_state_dict_strict(model, dict(vit_small_state), "vit", assign=True)
    result = check_forward(model, "weights file ok.pth")
    assert result["input_shape"] == [1, 3, 28, 28] and result["time_s"] > 0
    state = dict(vit_small_state)
    state[PATCH_WEIGHT] = state[PATCH_WEIGHT] * 1e30  # still finite
    assert first_non_finite(state) is None
    model = _meta_vit_small()
    load_state_dict_strict(model, state, "vit", assign=True)
    with pytest.raises(
        WeightsError, match=r"^weights file x\.pth gives non-finite depth \(784 of 784 values\) in a"
    ):
        check_forward(model, "weights file x.pth")


def test_verify_reports_casts_and_the_forward(seeded_weights, tmp_path: Path) -> None:
    path = _copy(seeded_weights("convnext-tiny"), tmp_path / "ct16.pth", _to(torch.float16))
    result = verify("convnext-tiny", path)
    assert result["tensors"] == len(read_checkpoint(path))
    assert set(result["cast"]) == {"float16"} and result["cast"]["float16"] > 200
    assert result["forward"]["input_shape"] == [1, 3, 32, 32]
