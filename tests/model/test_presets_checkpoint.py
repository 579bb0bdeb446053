"""Presets, the model factory, official-key remapping and safe, strict checkpoint loading."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from metrocli.errors import MetroUsageError, UnsafeCheckpointError, WeightsError
from metrocli.model.checkpoint import check_state_dict, load_state_dict_strict, read_checkpoint
from metrocli.model.factory import build_model, load_model
from metrocli.model.presets import PRESETS, get_preset
from metrocli.model.remap import remap_state_dict

VIT_VARIANTS = ("vit-small", "vit-large", "vit-giant2")


def test_presets_cover_the_five_published_models():
    assert set(PRESETS) == {"vit-small", "vit-large", "vit-giant2", "convnext-tiny", "convnext-large"}
    assert get_preset("vit-small").filename == "metric_depth_vit_small_800k.pth"
    assert get_preset("vit-large").filename == "metric_depth_vit_large_800k.pth"
    assert get_preset("vit-giant2").filename == "metric_depth_vit_giant2_800k.pth"
    assert get_preset("convnext-tiny").filename == "convtiny_hourglass_v1.pth"
    assert get_preset("convnext-large").filename == "convlarge_hourglass_0.3_150_step750k_v1.1.pth"
    for preset in PRESETS.values():
        assert preset.hf_repo == "JUGGHM/Metric3D"
        if preset.family == "vit":
            assert preset.input_size == (616, 1064) and preset.depth_range_m == (0.1, 200.0)
            assert preset.has_normals
        else:
            assert preset.input_size == (544, 1216) and preset.depth_range_m == (0.3, 150.0)
            assert not preset.has_normals
    assert [get_preset(n).gru_iters for n in VIT_VARIANTS] == [4, 8, 8]
    assert [get_preset(n).embed_dim for n in VIT_VARIANTS] == [384, 1024, 1536]


def test_unknown_preset_is_a_usage_error_listing_valid_names():
    with pytest.raises(MetroUsageError, match=r"vit-small.*convnext-large"):
        get_preset("vit-huge")
    with pytest.raises(MetroUsageError):
        build_model("resnet")


def _official_meta_state(fixtures_dir: Path, variant: str) -> dict[str, torch.Tensor]:
    keys_file = fixtures_dir / f"{variant}.keys.json"
    if not keys_file.is_file():
        pytest.skip(f"{keys_file} is not present")
    shapes = json.loads(keys_file.read_text())
    return {k: torch.empty(v["shape"], device="meta") for k, v in shapes.items()}


def _official_parameter_count(official: dict[str, torch.Tensor]) -> int:
    """Unique parameters of the official model: the context encoder's shortcut LayerNorm is one module
    registered under two names (``norm3`` and ``downsample.1``), so its keys are counted once."""
    return sum(v.numel() for k, v in official.items() if ".0.norm3." not in k)


@pytest.mark.parametrize("variant", VIT_VARIANTS)
def test_official_vit_layout_loads_strictly_with_official_parameter_count(fixtures_dir, variant):
    official = _official_meta_state(fixtures_dir, variant)
    model = build_model(variant, device="meta")  # giant2 in fp32 would be ~5.5 GB: compare shapes only
    state = remap_state_dict(official, "vit")
    check_state_dict(model.net, state, variant)  # same keys, same shapes
    load_state_dict_strict(model, official, "vit", assign=True)  # strict=True on meta tensors
    assert sum(p.numel() for p in model.parameters()) == _official_parameter_count(official)
    # every official key is used; only the aliased LayerNorm copies are dropped
    dropped = [k for k in official if not remap_state_dict({k: official[k]}, "vit")]
    assert all(".0.norm3." in k for k in dropped) and len(dropped) == 12


def test_giant2_reads_intermediate_blocks_and_swiglu(fixtures_dir):
    model = build_model("vit-giant2", device="meta")
    encoder = model.net.encoder
    assert encoder.intermediate_features and len(encoder.blocks) == 40
    assert encoder.blocks[0].mlp.fc1.out_features == 2 * 4096
    assert encoder.blocks[0].mlp.fc2.in_features == 4096
    assert all(type(block.attn).__name__ == "Attention" for block in encoder.blocks)


def test_mismatched_state_dict_raises_weights_error_naming_keys(fixtures_dir):
    official = _official_meta_state(fixtures_dir, "vit-small")
    model = build_model("vit-small", device="meta")
    broken = dict(official)
    del broken["depth_model.encoder.cls_token"]
    broken["depth_model.decoder.surplus.weight"] = torch.empty(3, device="meta")
    broken["depth_model.encoder.norm.weight"] = torch.empty(5, device="meta")
    with pytest.raises(WeightsError) as info:
        load_state_dict_strict(model, broken, "vit", source="weights file x.pth", assign=True)
    message = str(info.value)
    assert "x.pth" in message
    assert "1 missing keys (encoder.cls_token)" in message
    assert "1 unexpected keys (depth_model.decoder.surplus.weight)" in message
    assert "encoder.norm.weight (5,) vs (384,)" in message
    # the ViT-L layout does not fit ViT-S
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_state_dict_strict(model, _official_meta_state(fixtures_dir, "vit-large"), "vit", assign=True)


@pytest.fixture(scope="module")
def random_vit_small():
    torch.manual_seed(0)
    return build_model("vit-small")


def test_random_vit_small_forward_shapes(random_vit_small):
    model = random_vit_small
    assert not model.training
    x = torch.randn(1, 3, 56, 84)
    with torch.inference_mode():
        out = model.forward_canonical(x)
    assert set(out) == {"depth", "confidence", "normal", "normal_confidence"}
    assert out["depth"].shape == (1, 1, 56, 84) and out["normal"].shape == (1, 3, 56, 84)
    assert float(out["depth"].min()) >= 0.1 and float(out["depth"].max()) <= 200.0
    torch.testing.assert_close(out["normal"].norm(dim=1), torch.ones(1, 56, 84), atol=1e-5, rtol=0)
    assert float(out["normal_confidence"].min()) > 0.01


# --- read_checkpoint ----------------------------------------------------------------------------------------


def _small_state() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.zeros(2)}


@pytest.mark.parametrize("layout", ["model_state_dict", "state_dict", "bare"])
def test_read_checkpoint_accepts_the_three_layouts(tmp_path, layout):
    state = _small_state()
    path = tmp_path / "w.pth"
    torch.save(state if layout == "bare" else {layout: state, "epoch": 3}, path)
    loaded = read_checkpoint(path)
    assert set(loaded) == set(state)
    torch.testing.assert_close(loaded["a.weight"], state["a.weight"])


def test_read_checkpoint_rejects_missing_dirs_non_zip_and_truncated(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match="not a file"):
        read_checkpoint(tmp_path)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        read_checkpoint(text)
    good = tmp_path / "good.pth"
    torch.save({"model_state_dict": _small_state()}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"truncated\.pth"):
        read_checkpoint(truncated)
    empty = tmp_path / "empty.pth"
    torch.save({"model_state_dict": {}}, empty)
    with pytest.raises(WeightsError, match="no model state dict"):
        read_checkpoint(empty)


def test_read_checkpoint_rejects_a_corrupt_member(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model_state_dict": _small_state()}, good)
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"\x80garbage" if item.filename.endswith("data.pkl") else data)
    with pytest.raises(WeightsError, match=r"bad\.pth"):
        read_checkpoint(bad)


class _RunsCode:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_read_checkpoint_refuses_code_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": _small_state(), "payload": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth"):
        read_checkpoint(path)
    assert not marker.exists()


def test_load_model_rejects_bad_precision_and_missing_weights(tmp_path):
    with pytest.raises(MetroUsageError, match="precision"):
        load_model("vit-small", weights=tmp_path / "x.pth", precision="int4")  # type: ignore[arg-type]
    with pytest.raises(WeightsError, match=r"x\.pth"):
        load_model("vit-small", weights=tmp_path / "x.pth")
    with pytest.raises(MetroUsageError):
        load_model("vit-small", weights=tmp_path / "x.pth", device="tpu")


def test_load_model_of_a_checkpoint_for_another_model_fails_cleanly(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model_state_dict": _small_state()}, path)
    with pytest.raises(WeightsError, match="does not fit"):
        load_model("vit-small", weights=path)


def test_bf16_autocast_forward_stays_close_to_fp32(random_vit_small):
    model = random_vit_small
    x = torch.randn(1, 3, 56, 84)
    with torch.inference_mode():
        fp32 = model.forward_canonical(x)
        model.precision = "bf16"  # the model applies its own precision
        try:
            bf16 = model.forward_canonical(x)
        finally:
            model.precision = "fp32"
    for key in fp32:
        assert torch.isfinite(bf16[key]).all(), key
    rel = ((bf16["depth"].float() - fp32["depth"]).abs() / fp32["depth"]).median()
    assert float(rel) < 1e-2
    cos = (bf16["normal"].float() * fp32["normal"]).sum(1)
    assert float(cos.median()) > 0.999


def test_forward_follows_the_model_precision(random_vit_small):
    """``model(x)`` and ``forward_canonical(x)`` run at ``model.precision``, whatever autocast the caller is
    in: bf16 equals an explicit autocast run of the bare network and differs from fp32; fp32 stays fp32."""
    model = random_vit_small
    x = torch.randn(1, 3, 28, 56, generator=torch.Generator().manual_seed(3))
    assert model.precision == "fp32"
    with torch.inference_mode():
        plain = model.net(x)
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fp32_in_autocast = model(x)
            bf16_net = model.net(x)
        model.precision = "bf16"
        try:
            bf16 = model(x)
            bf16_canonical = model.forward_canonical(x)
        finally:
            model.precision = "fp32"
    for key in plain:
        torch.testing.assert_close(fp32[key], plain[key], rtol=0, atol=0)
        torch.testing.assert_close(fp32_in_autocast[key], plain[key], rtol=0, atol=0)
        torch.testing.assert_close(bf16[key], bf16_net[key], rtol=0, atol=0)
        torch.testing.assert_close(bf16_canonical[key], bf16_net[key], rtol=0, atol=0)
    assert not torch.equal(bf16["depth"], fp32["depth"])
    assert bf16["depth"].dtype == torch.float32  # the float32 islands stay float32


def test_package_level_load_model_is_the_factory():
    import metrocli

    assert metrocli.load_model is load_model
