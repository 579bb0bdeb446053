"""`metro export onnx`: help, option checks, and an export of the seeded ConvNeXt-T weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from metrocli.cli.common import run_cli
from metrocli.cli.main import cli


@pytest.mark.parametrize("sub", [[], ["onnx"]])
def test_help(sub: list[str]) -> None:
    result = CliRunner().invoke(cli, ["export", *sub, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    if sub:
        for option in ("--model", "--weights", "--size", "--dynamic", "--output", "--json"):
            assert option in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "616"], "is not H,W"),
        (["--size", "0,28"], "must be positive"),
        (["--size", "100,196"], "multiples of 28"),
        (["--dynamic"], "--dynamic is not available for vit-small"),
    ],
)
def test_bad_sizes_are_usage_errors(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"never read")
    code = run_cli(cli, ["export", "onnx", "--weights", str(weights), "-o", str(tmp_path / "m.onnx"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_missing_weights_are_one_clean_line(tmp_path: Path, capsys) -> None:
    code = run_cli(
        cli, ["export", "onnx", "--weights", str(tmp_path / "none.pth"), "-o", str(tmp_path / "m.onnx")]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("metro: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("target", ["weights", "m.txt", "folder"])
def test_bad_output_is_refused_before_the_export(tmp_path: Path, capsys, target: str) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"never read")
    (tmp_path / "folder").mkdir()
    out = weights if target == "weights" else tmp_path / target
    code = run_cli(cli, ["export", "onnx", "--weights", str(weights), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and str(out.name) in err, err
    assert weights.read_bytes() == b"never read"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "w.pth"]


@pytest.mark.slow
def test_export_seeded_convnext_dynamic(seeded_weights, tmp_path: Path, capsys) -> None:
    out = tmp_path / "convnext.onnx"
    weights = seeded_weights("convnext-tiny")
    args = ["export", "onnx", "--model", "convnext-tiny", "--weights", str(weights), "--size", "64,128"]
    code = run_cli(cli, [*args, "--dynamic", "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    row = json.loads(captured.out)
    assert row["path"] == str(out) and out.is_file()
    assert row["model"] == "convnext-tiny" and row["dynamic"] is True and row["input_size"] is None
    assert row["check_sizes"] == [[64, 128], [96, 192]]
    assert row["depth_max_rel"] <= 1e-4 and row["normal_max_deg"] is None
    assert len(row["weights_sha256"]) == 64
