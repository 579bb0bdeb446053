"""The model options every model-running command shares: --precision and --threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from metrocli.cli.main import cli

COMMANDS = ["depth", "measure", "reconstruct", "eval"]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_threads_and_fp32_default(command: str):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "--threads" in result.output and "METRO_THREADS" in result.output
    assert "[default: fp32]" in " ".join(result.output.split())


def test_threads_option_sets_torch_threads(tmp_path: Path, restore_threads):
    torch.set_num_threads(2)
    runner = CliRunner(env={"METRO_CACHE_DIR": str(tmp_path / "cache")})
    args = [str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "out"), "--threads", "1"]
    result = runner.invoke(cli, ["depth", *args])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert torch.get_num_threads() == 1


def test_threads_from_environment(tmp_path: Path, restore_threads):
    torch.set_num_threads(2)
    runner = CliRunner(env={"METRO_THREADS": "1", "METRO_CACHE_DIR": str(tmp_path / "cache")})
    result = runner.invoke(cli, ["depth", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_thread_counts_are_usage_errors(tmp_path: Path, value: str, restore_threads):
    torch.set_num_threads(2)
    args = [str(tmp_path / "x.jpg"), "-o", str(tmp_path / "out"), "--threads", value]
    result = CliRunner().invoke(cli, ["depth", *args])
    assert result.exit_code == 2 and "--threads" in result.stderr
    assert "Traceback" not in result.stderr
    assert torch.get_num_threads() == 2
