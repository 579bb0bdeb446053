"""The root ``metro`` group: lazy loading, help for every subcommand, error handling and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from metrocli.cli.common import BatchReport, run_batch, run_cli
from metrocli.cli.main import SUBCOMMANDS, cli
from metrocli.errors import ImageError, MetroError, MetroUsageError

HEAVY = ("torch", "timm", "open3d", "cv2", "trimesh")


def test_root_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("info", "depth", "measure", "reconstruct", "weights", "eval"):
        assert name in result.output


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from metrocli.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "metro" in result.output


def test_unknown_subcommand_is_usage_error() -> None:
    assert run_cli(cli, ["no-such-command"]) == 2


def test_metro_error_is_one_clean_line(capsys: pytest.CaptureFixture[str]) -> None:
    @click.group()
    def grp() -> None:
        pass

    @grp.command()
    def boom() -> None:
        raise ImageError("photo.jpg: not an image")

    @grp.command()
    def usage() -> None:
        raise MetroUsageError("point (5, 5) is outside the image")

    @grp.command()
    def crash() -> None:
        raise RuntimeError("kaputt")

    assert run_cli(grp, ["boom"]) == 1
    err = capsys.readouterr().err
    assert err == "metro: error: photo.jpg: not an image\n"
    assert run_cli(grp, ["usage"]) == 2
    assert run_cli(grp, ["crash"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "kaputt" in err


def test_batch_keeps_going_and_summarises(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[int] = []

    def work(i: int) -> None:
        if i == 2:
            raise MetroError("item 2 is bad")
        if i == 3:
            raise ValueError("surprise")
        done.append(i)

    report = run_batch([1, 2, 3, 4], work, progress=False)
    assert done == [1, 4]
    assert isinstance(report, BatchReport)
    with pytest.raises(click.exceptions.Exit) as exc:
        report.finish()
    assert exc.value.exit_code == 1
    err = capsys.readouterr().err
    assert "2 of 4 files succeeded; failed: 2, 3" in err
    assert "Traceback" not in err


def test_emit_json_handles_numpy(capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from metrocli.cli.common import emit_json

    emit_json({"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads(capsys.readouterr().out) == {"a": 1.5, "b": [0, 1, 2]}


def test_log_records_escape_control_characters_of_file_names(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from metrocli.cli.common import setup_logging

    setup_logging(0)  # stderr is not a terminal here: plain one-line records
    logging.getLogger("metrocli.test").warning("%s: no EXIF focal length", "a\nb\x1b[2J.jpg")
    err = capsys.readouterr().err
    assert err == "metro: warning: a\\nb\\x1b[2J.jpg: no EXIF focal length\n"
