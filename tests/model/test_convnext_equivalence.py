"""Metric3D v1 (ConvNeXt + hourglass) equals the official implementation.

* Seeded stand-in weights (every official key/shape, seed 4321) reproduce the official raw outputs stored in
  ``../shared/fixtures/metric3d/convnext-tiny.seed4321.raw544x1216.npz``.
* The ConvNeXt-L key layout loads strictly and has the official parameter count (meta device, no allocation).
* On a fresh random input, our network matches the official modules themselves, extracted at test time from
  the official git mirror into a temporary directory (skipped when the mirror or its imports are unavailable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from metrocli.errors import MetroUsageError
from metrocli.model.checkpoint import load_state_dict_strict, read_checkpoint
from metrocli.model.convnext_hourglass import ConvNeXtHourglass
from metrocli.model.factory import build_model, load_model
from metrocli.model.presets import get_preset
from metrocli.model.remap import remap_state_dict

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_MIRROR = REPO.parent / ".mirror" / "YvanYin+Metric3D" / "repo"
VARIANTS = ("convnext-tiny", "convnext-large")
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _keys(fixtures_dir: Path, variant: str) -> dict[str, dict]:
    path = fixtures_dir / f"{variant}.keys.json"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return json.loads(path.read_text())


def _load_seeded(model: torch.nn.Module, checkpoint: Path) -> dict[str, torch.Tensor]:
    """Official-format file -> remapped, loaded strictly into ``model``; returns the official state dict."""
    official = torch.load(checkpoint, map_location="cpu", weights_only=True)["model_state_dict"]
    model.load_state_dict(remap_state_dict(official, "convnext"), strict=True)
    return official


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(ours.astype(np.float64) - ref) / np.maximum(np.abs(ref.astype(np.float64)), 1e-12)


def _peak_rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """Max abs error relative to the field's peak magnitude (for zero-crossing fields such as logits)."""
    return float(np.abs(ours.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def tiny_model(seeded_weights: Callable[[str], Path]) -> ConvNeXtHourglass:
    model = ConvNeXtHourglass("convnext-tiny").eval()
    _load_seeded(model, seeded_weights("convnext-tiny"))
    return model


# ------------------------------------------------------------------------------------------------------------
# Key layout and parameter counts
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_remap_maps_every_official_key_onto_our_state_dict(fixtures_dir: Path, variant: str) -> None:
    shapes = _keys(fixtures_dir, variant)
    remapped = remap_state_dict({k: tuple(v["shape"]) for k, v in shapes.items()}, "convnext")
    assert len(remapped) == len(shapes), "a rule dropped keys or mapped two official keys onto one"
    assert not [k for k in remapped if k.startswith("depth_model.")], "official keys left unmapped"
    with torch.device("meta"):
        model = ConvNeXtHourglass(variant)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(ours) == sorted(remapped)
    assert {k: ours[k] for k in remapped} == remapped


def test_convnext_large_loads_strict_with_official_parameter_count(fixtures_dir: Path) -> None:
    shapes = _keys(fixtures_dir, "convnext-large")
    official = {
        k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"].split(".")[1]), device="meta")
        for k, v in shapes.items()
    }
    model = ConvNeXtHourglass("convnext-large", device="meta")
    result = model.load_state_dict(remap_state_dict(official, "convnext"), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    official_total = sum(t.numel() for t in official.values())
    official_params = sum(t.numel() for k, t in official.items() if not k.endswith(BN_BUFFERS))
    assert sum(t.numel() for t in model.state_dict().values()) == official_total
    assert sum(p.numel() for p in model.parameters()) == official_params
    assert official_params > 200_000_000  # ConvNeXt-L (~196M) + hourglass decoder


def test_convnext_tiny_seeded_checkpoint_loads_strict(
    seeded_weights: Callable[[str], Path], fixtures_dir: Path
) -> None:
    model = ConvNeXtHourglass("convnext-tiny")
    official = _load_seeded(model, seeded_weights("convnext-tiny"))
    ours = model.state_dict()
    for official_key, our_key in (
        ("depth_model.encoder.stages.2.8.gamma", "encoder.stages.2.blocks.8.layer_scale"),
        ("depth_model.decoder.decoder_mono.upconv_2_1.conv.1.weight", "decoder.fpn.merge2.conv1.weight"),
        ("depth_model.decoder.conv_out_2.deconv_1.1.running_var", "decoder.unet.up.1.bn.running_var"),
    ):
        assert torch.equal(ours[our_key], official[official_key])
    n_official = sum(v.numel() for v in official.values())
    assert n_official == sum(int(np.prod(v["shape"])) for v in _keys(fixtures_dir, "convnext-tiny").values())


# ------------------------------------------------------------------------------------------------------------
# Config and input validation
# ------------------------------------------------------------------------------------------------------------


def test_network_follows_its_preset() -> None:
    """The presets are the one configuration of the v1 networks: widths, depths and range come from them."""
    for name in VARIANTS:
        preset = get_preset(name)
        assert preset.depth_range_m == (0.3, 150.0)
        assert preset.input_size == (544, 1216)
        model = ConvNeXtHourglass(preset, device="meta")
        assert model.preset is preset
        stages = model.encoder.stages
        assert tuple(len(stage.blocks) for stage in stages) == preset.convnext_depths
        assert tuple(stage.blocks[0].conv_dw.out_channels for stage in stages) == preset.convnext_dims
        assert model.decoder.depth_range_m == preset.depth_range_m
        by_name = ConvNeXtHourglass(name, device="meta")
        assert {k: v.shape for k, v in by_name.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()
        }
    with pytest.raises(MetroUsageError, match="vit-small"):
        ConvNeXtHourglass("vit-small")


def test_depth_bins_are_log_spaced_over_the_range() -> None:
    bins = ConvNeXtHourglass("convnext-tiny").decoder.bin_depths_m()
    assert bins.dtype == torch.float32
    assert bins.shape == (512,)
    assert bins[0].item() == pytest.approx(0.3, rel=1e-6) and bins[-1].item() == pytest.approx(
        150.0, rel=1e-6
    )
    ratios = bins[1:] / bins[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3, 100, 96), (1, 3, 64, 90), (3, 64, 96), (1, 1, 64, 96)])
def test_rejects_inputs_that_are_not_padded_rgb(shape: tuple[int, ...]) -> None:
    model = ConvNeXtHourglass("convnext-tiny").eval()
    with pytest.raises(MetroUsageError, match="multiples of 32"):
        model(torch.zeros(shape))


def test_small_input_shapes_and_batch_independence(tiny_model: ConvNeXtHourglass) -> None:
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        both = tiny_model(x)
        first = tiny_model(x[:1])
    assert set(both) == {"depth", "confidence"}
    assert both["depth"].shape == both["confidence"].shape == (2, 1, 64, 96)
    assert both["depth"].dtype == torch.float32
    assert torch.isfinite(both["depth"]).all() and torch.isfinite(both["confidence"]).all()
    torch.testing.assert_close(both["depth"][:1], first["depth"], rtol=1e-5, atol=0)
    torch.testing.assert_close(both["confidence"][:1], first["confidence"], rtol=1e-5, atol=1e-6)
    # The second image differs, so its prediction must too (the network looks at its input).
    assert not torch.allclose(both["depth"][0], both["depth"][1])


# ------------------------------------------------------------------------------------------------------------
# Equivalence with the official outputs
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_convnext_tiny_matches_official_raw_outputs(
    tiny_model: ConvNeXtHourglass, fixtures_dir: Path
) -> None:
    path = fixtures_dir / "convnext-tiny.seed4321.raw544x1216.npz"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    ref = np.load(path)
    x = torch.from_numpy(ref["input"])[None]
    assert x.shape == (1, 3, 544, 1216)
    with torch.inference_mode():
        out = tiny_model(x)
    depth = out["depth"][0, 0].numpy()
    rel = _rel_err(depth, ref["depth"])
    assert rel.max() <= 1e-3, f"depth max rel err {rel.max():.3g}"
    assert np.percentile(rel, 99) <= 1e-4, f"depth p99 rel err {np.percentile(rel, 99):.3g}"
    conf_err = _peak_rel_err(out["confidence"][0, 0].numpy(), ref["confidence"])
    assert conf_err <= 1e-4, f"confidence err {conf_err:.3g} of its peak"


def _official_source(relpath: str) -> str:
    """Text of ``relpath`` in the official Metric3D source ($METRO_OFFICIAL_SRC or the local bare mirror)."""
    root = Path(os.environ.get("METRO_OFFICIAL_SRC", OFFICIAL_MIRROR))
    if (root / relpath).is_file():  # a work tree
        return (root / relpath).read_text()
    if not root.is_dir():
        pytest.skip(f"official Metric3D source not found at {root}")
    try:
        return subprocess.run(
            ["git", f"--git-dir={root}", "show", f"HEAD:{relpath}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot read {relpath} from the official source at {root}: {exc}")


def _exec_config(relpath: str) -> dict:
    """Values of an official mmcv-style config file (plain ``x = dict(...)``; ``_base_`` is not followed)."""
    namespace: dict = {}
    exec(compile(_official_source(relpath), relpath, "exec"), namespace)
    return namespace


def _official_convnext_tiny(tmp_path: Path, checkpoint: Path) -> torch.nn.Module:
    """The official ConvNeXt-T + HourglassDecoder, built from the official modules and config values."""
    code_dir = tmp_path / "official"
    code_dir.mkdir()
    backbone_src = _official_source("mono/model/backbones/ConvNeXt.py")
    decoder_src = _official_source("mono/model/decode_heads/HourGlassDecoder.py")
    # The official decoder creates its depth bins and pixel grid on CUDA; run it on this machine's device.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_cuda = decoder_src.count("device='cuda'") + decoder_src.count('device="cuda"')
    if n_cuda != 2:
        pytest.skip(f"official HourGlassDecoder.py changed ({n_cuda} hard-coded CUDA devices, expected 2)")
    decoder_src = decoder_src.replace("device='cuda'", f"device='{device}'")
    decoder_src = decoder_src.replace('device="cuda"', f'device="{device}"')
    (code_dir / "m3d_official_convnext.py").write_text(backbone_src)
    (code_dir / "m3d_official_hourglass.py").write_text(decoder_src)

    backbone_cfg = _exec_config("mono/configs/_base_/models/backbones/convnext_tiny.py")["model"]["backbone"]
    head_cfg = _exec_config("mono/configs/_base_/models/encoder_decoder/convnext_tiny.hourglassdecoder.py")
    head_cfg = head_cfg["model"]["decode_head"]
    data_basic = _exec_config("mono/configs/HourglassDecoder/convtiny.0.3_150.py")["data_basic"]

    sys.path.insert(0, str(code_dir))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import m3d_official_convnext as official_backbone
            import m3d_official_hourglass as official_decoder
    except ImportError as exc:
        pytest.skip(f"official ConvNeXt/HourglassDecoder need a package we do not have: {exc}")
    finally:
        sys.path.remove(str(code_dir))
        for name in ("m3d_official_convnext", "m3d_official_hourglass"):
            sys.modules.pop(name, None)

    kwargs = {k: v for k, v in backbone_cfg.items() if k != "pretrained"}
    encoder = getattr(official_backbone, backbone_cfg["type"])(pretrained=False, **kwargs)
    cfg = types.SimpleNamespace(
        model=types.SimpleNamespace(decode_head=types.SimpleNamespace(**head_cfg)),
        data_basic=types.SimpleNamespace(**data_basic),
    )
    decoder = official_decoder.HourglassDecoder(cfg)

    class DensePred(torch.nn.Module):  # the official DensePredModel: decoder(encoder(x)), under "depth_model"
        def __init__(self) -> None:
            super().__init__()
            self.depth_model = torch.nn.Module()
            self.depth_model.encoder = encoder
            self.depth_model.decoder = decoder

        def forward(self, x: torch.Tensor) -> dict:
            return self.depth_model.decoder(self.depth_model.encoder(x))

    model = DensePred().eval()
    official = torch.load(checkpoint, map_location="cpu", weights_only=True)["model_state_dict"]
    model.load_state_dict(official, strict=True)
    return model.to(device)


def test_matches_official_modules_on_a_fresh_input(
    tiny_model: ConvNeXtHourglass, seeded_weights: Callable[[str], Path], tmp_path: Path
) -> None:
    official = _official_convnext_tiny(tmp_path, seeded_weights("convnext-tiny"))
    device = next(official.parameters()).device
    seed = int(np.random.SeedSequence().entropy % 2**31)  # new every run: the repo has never seen it
    x = torch.randn(2, 3, 192, 320, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = official(x.to(device))
        ours = tiny_model(x)
    ref_depth = ref["prediction"].float().cpu().numpy()
    ref_conf = ref["confidence"].float().cpu().numpy()
    assert ours["depth"].shape == ref["prediction"].shape == (2, 1, 192, 320)
    rel = _rel_err(ours["depth"].numpy(), ref_depth)
    assert rel.max() <= 1e-3, f"seed {seed}: depth max rel err {rel.max():.3g}"
    assert np.percentile(rel, 99) <= 1e-4, f"seed {seed}: depth p99 rel err {np.percentile(rel, 99):.3g}"
    conf_err = _peak_rel_err(ours["confidence"].numpy(), ref_conf)
    assert conf_err <= 1e-4, f"seed {seed}: confidence err {conf_err:.3g} of its peak"


def test_factory_builds_and_loads_convnext_tiny_end_to_end(
    tiny_model: ConvNeXtHourglass, seeded_weights: Callable[[str], Path]
) -> None:
    path = seeded_weights("convnext-tiny")
    built = build_model("convnext-tiny")
    load_state_dict_strict(built, read_checkpoint(path), "convnext")
    loaded = load_model("convnext-tiny", weights=path)
    x = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        ref = tiny_model(x)
        for model in (built, loaded):
            out = model.forward_canonical(x)
            assert set(out) == {"depth", "confidence"}
            torch.testing.assert_close(out["depth"], ref["depth"], rtol=0, atol=0)
            torch.testing.assert_close(out["confidence"], ref["confidence"], rtol=0, atol=0)


def test_bf16_autocast_keeps_depth_float32_and_close(tiny_model: ConvNeXtHourglass) -> None:
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = tiny_model(x)["depth"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny_model(x)["depth"]
    assert low.dtype == torch.float32
    rel = ((low - ref).abs() / ref.abs()).max().item()
    assert rel < 5e-3, f"bf16 depth rel err {rel:.3g}"
