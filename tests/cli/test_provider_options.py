"""The shared model / focal / sensor options: one set builds the provider of every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metrocli.cli.main import cli

AUTO_V1 = "--focal auto needs a ViT model: it uses the predicted normals"


@pytest.fixture()
def photo(fixtures_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "scene_a.png"
    shutil.copy(fixtures_dir / "scene_a.png", path)
    return path


def test_every_command_applies_the_same_focal_auto_rule(photo: Path, tmp_path: Path) -> None:
    v1 = ["--focal", "auto", "--model", "convnext-tiny"]
    commands = [
        ["depth", str(photo), "-o", str(tmp_path / "d"), *v1],
        ["measure", str(photo), "--line", "1,1,20,20", *v1],
        ["reconstruct", str(photo), "-o", str(tmp_path / "r.ply"), *v1],
        ["info", str(photo), "--check-focal", "--model", "convnext-tiny"],
    ]
    for args in commands:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert AUTO_V1 in result.output, (args, result.output)


def test_info_check_focal_takes_the_model_options(photo: Path, tmp_path: Path) -> None:
    help_text = CliRunner().invoke(cli, ["info", "--help"]).output
    for option in ("--precision", "--threads", "--device", "--weights", "--model"):
        assert option in help_text
    before = torch.get_num_threads()
    try:
        runner = CliRunner(env={"METRO_CACHE_DIR": str(tmp_path / "empty-cache")})
        args = ["info", str(photo), "--check-focal", "--precision", "bf16", "--threads", "1"]
        result = runner.invoke(cli, args)
        # the model options reach the one loader: threads applied, then the missing weights reported
        assert result.exit_code == 1 and "metro weights pull vit-small" in result.stderr
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    bad = CliRunner().invoke(cli, ["info", str(photo), "--check-focal", "--precision", "fp64"])
    assert bad.exit_code == 2


@pytest.mark.slow
def test_info_check_focal_with_precision(photo: Path, seeded_weights) -> None:
    weights = str(seeded_weights("vit-small"))
    args = ["info", str(photo), "--check-focal", "--weights", weights, "--device", "cpu", "--json"]
    result = CliRunner().invoke(cli, [*args, "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout.strip().splitlines()[-1])["focal_check"]
    assert check["photo_focal_source"] == "default" and isinstance(check["is_off"], bool)


def test_depth_skips_maps_beside_photos(tmp_path: Path) -> None:
    """A folder holding only `metro depth` outputs has no photos: usage error before any model runs."""
    folder = tmp_path / "out"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint16)).save(folder / "x.depth.png")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(folder / "x.preview.png")
    np.save(folder / "x.depth.npy", np.ones((8, 8), np.float32))
    runner = CliRunner(env={"METRO_CACHE_DIR": str(tmp_path / "empty-cache")})
    result = runner.invoke(cli, ["depth", str(folder), "-o", str(tmp_path / "again")])
    assert result.exit_code == 2 and "no photos found" in result.output
