"""`metro weights`: list/path/pull/verify on real files; unsafe pickles are refused without running."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from metrocli.cli.common import run_cli
from metrocli.cli.main import cli
from metrocli.model import weights as W
from metrocli.model.presets import PRESETS


class Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def make_evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("METRO_CACHE_DIR", str(d))
    return d


@pytest.mark.parametrize("sub", [[], ["list"], ["pull"], ["path"], ["verify"]])
def test_help(sub: list[str]) -> None:
    result = CliRunner().invoke(cli, ["weights", *sub, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_list_empty_cache(cache: Path) -> None:
    result = CliRunner().invoke(cli, ["weights", "list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"cache: {cache}"
    assert len(lines) == 1 + len(PRESETS)
    assert all("not cached" in line for line in lines[1:])
    assert any("metric_depth_vit_small_800k.pth" in line for line in lines)
    result = CliRunner().invoke(cli, ["weights", "list", "--json"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["model"] for r in rows] == list(PRESETS)
    assert not any(r["cached"] for r in rows)


def test_list_and_path_with_a_cached_file(cache: Path) -> None:
    path = cache / PRESETS["convnext-tiny"].filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 2_500_000)
    result = CliRunner().invoke(cli, ["weights", "list", "--json"])
    rows = {r["model"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["convnext-tiny"]["cached"] and rows["convnext-tiny"]["size_bytes"] == 2_500_000
    text = CliRunner().invoke(cli, ["weights", "list"]).stdout
    assert "2.5 MB" in text
    result = CliRunner().invoke(cli, ["weights", "path", "vit-large"])
    assert result.exit_code == 0 and result.stdout.strip() == str(cache / "metric_depth_vit_large_800k.pth")


def test_unknown_model_is_usage_error(cache: Path) -> None:
    assert run_cli(cli, ["weights", "path", "vit-huge"]) == 2


def test_pull_offline_is_one_clear_line(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        socket.getaddrinfo("huggingface.co", 443)
        pytest.skip("the hub is reachable here: this would download real weights")
    except OSError:
        pass
    assert run_cli(cli, ["weights", "pull", "vit-small"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("metro: error: cannot reach the Hugging Face hub to download vit-small weights")
    assert "--weights FILE" in err
    assert not (cache / PRESETS["vit-small"].filename).exists()


def test_verify_seeded_checkpoint(seeded_weights, cache: Path) -> None:
    path = seeded_weights("vit-small")
    result = CliRunner().invoke(cli, ["weights", "verify", "--weights", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["model"] == "vit-small" and info["recorded"] is False
    assert info["tensors"] == 362 and info["size"] == path.stat().st_size
    assert 30e6 < info["parameters"] < 45e6  # ViT-S Metric3D: ~37.5 M parameters
    assert info["cast"] == {}
    assert info["forward"]["input_shape"] == [1, 3, 28, 28] and info["forward"]["time_s"] > 0
    result = CliRunner().invoke(cli, ["weights", "verify", "--weights", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {path} loads strictly into vit-small (362 tensors")
    assert "a 1x3x28x28 test forward gives finite outputs" in result.stdout
    assert result.stdout.count("\n") == 1


def test_verify_cached_checkpoint_and_detect_corruption(
    seeded_weights, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = seeded_weights("vit-small")
    target = cache / PRESETS["vit-small"].filename
    target.parent.mkdir(parents=True)
    os.symlink(seeded, target)
    size = seeded.stat().st_size
    W.record_download("vit-small", target, W.HubFile(size=size, sha256=W.sha256_file(seeded), commit=None))
    result = CliRunner().invoke(cli, ["weights", "verify", "vit-small"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {target} loads strictly into vit-small (362 tensors")
    # Now a cached file that does not match its record (a different, smaller file in its place).
    target.unlink()
    target.write_bytes(b"PK\x03\x04 truncated")
    assert run_cli(cli, ["weights", "verify", "vit-small"]) == 1
    err = capsys.readouterr().err
    assert "corrupt" in err and "metro weights pull vit-small --force" in err and err.count("\n") == 1


def test_verify_wrong_model_and_garbage(
    seeded_weights, tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = seeded_weights("vit-small")
    assert run_cli(cli, ["weights", "verify", "convnext-tiny", "--weights", str(path)]) == 1
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "missing keys" in err and err.count("\n") == 1
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    assert run_cli(cli, ["weights", "verify", "--weights", str(garbage)]) == 1
    err = capsys.readouterr().err
    assert "garbage.pth" in err and "Traceback" not in err and err.count("\n") == 1
    assert run_cli(cli, ["weights", "verify", "--weights", str(tmp_path / "none.pth")]) == 1
    assert "none.pth does not exist" in capsys.readouterr().err


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: an unsafe torch.load really would run the payload (so the refusal test means something)."""
    marker = tmp_path / "pwned"
    evil = make_evil_checkpoint(tmp_path / "evil.pth", marker)
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_verify_refuses_pickle_payload(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = make_evil_checkpoint(tmp_path / "evil.pth", marker)
    assert run_cli(cli, ["weights", "verify", "--weights", str(evil)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"metro: error: weights file {evil} was refused")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not marker.exists()


def _edited_copy(src: Path, dst: Path, edit) -> Path:
    state = torch.load(src, weights_only=True)["model_state_dict"]
    edit(state)
    torch.save({"model_state_dict": state}, dst)
    return dst


PATCH_WEIGHT = "depth_model.encoder.patch_embed.proj.weight"


def test_verify_casts_a_float64_checkpoint_with_a_note(seeded_weights, tmp_path: Path, cache: Path) -> None:
    def to_float64(state: dict) -> None:
        for key, value in state.items():
            state[key] = value.double() if value.is_floating_point() else value

    path = _edited_copy(seeded_weights("vit-small"), tmp_path / "f64.pth", to_float64)
    result = CliRunner().invoke(cli, ["weights", "verify", "--weights", str(path)])
    assert result.exit_code == 0, result.output
    assert "350 float64 tensors cast to float32" in result.stdout  # 362 minus 12 dropped aliases
    assert "test forward gives finite outputs" in result.stdout


def test_verify_rejects_nan_weights_in_one_line(
    seeded_weights, tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def poison(state: dict) -> None:
        state[PATCH_WEIGHT].view(-1)[0] = float("nan")

    path = _edited_copy(seeded_weights("vit-small"), tmp_path / "nan.pth", poison)
    assert run_cli(cli, ["weights", "verify", "--weights", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"metro: error: weights file {path} holds non-finite weights: {PATCH_WEIGHT} ")
    assert out.err.count("\n") == 1 and "Traceback" not in out.err


def test_verify_rejects_weights_whose_forward_overflows(
    seeded_weights, tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def blow_up(state: dict) -> None:
        state[PATCH_WEIGHT] *= 1e30  # every value still finite: only the forward shows the damage

    path = _edited_copy(seeded_weights("vit-small"), tmp_path / "huge.pth", blow_up)
    assert run_cli(cli, ["weights", "verify", "--weights", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"metro: error: weights file {path} gives non-finite depth")
    assert "1x3x28x28 test forward" in err and err.count("\n") == 1
