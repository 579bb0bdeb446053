"""`--focal auto` on `metro depth` and `metro info --check-focal`: option handling and the real model path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from metrocli.cli.main import cli


@pytest.fixture()
def photo(fixtures_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "scene_a.png"
    shutil.copy(fixtures_dir / "scene_a.png", path)
    return path


@pytest.mark.parametrize(
    "extra", [["--focal-px", "500"], ["--fov", "60"], ["--model", "convnext-tiny"]], ids=["px", "fov", "v1"]
)
def test_depth_focal_auto_conflicts_are_usage_errors(photo: Path, tmp_path: Path, extra: list[str]) -> None:
    result = CliRunner().invoke(
        cli, ["depth", str(photo), "-o", str(tmp_path / "out"), "--focal", "auto", *extra]
    )
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()


def test_info_check_focal_needs_a_vit_model(photo: Path) -> None:
    result = CliRunner().invoke(cli, ["info", str(photo), "--check-focal", "--model", "convnext-tiny"])
    assert result.exit_code == 2
    assert "ViT" in result.output


def test_help_mentions_auto() -> None:
    assert "auto" in CliRunner().invoke(cli, ["depth", "--help"]).output
    assert "--check-focal" in CliRunner().invoke(cli, ["info", "--help"]).output


@pytest.mark.slow
def test_depth_focal_auto_and_info_check_focal(photo: Path, tmp_path: Path, seeded_weights) -> None:
    weights = str(seeded_weights("vit-small"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["depth", str(photo), "-o", str(out), "--weights", weights, "--focal", "auto", "--json"]
    )
    assert result.exit_code == 0, result.output
    sidecar = json.loads((out / "scene_a.json").read_text())
    selfcal = sidecar["selfcal"]
    assert selfcal["photo_focal_source"] == "default"  # a PNG without EXIF
    # a trusted estimate (source self-calibrated), an uncertain one combined with the photo's focal length
    # (source combined, with a warning), or a fallback to the photo's focal length, with a warning
    source = sidecar["intrinsics"]["focal_source"]
    if source == "self-calibrated":
        assert selfcal["selfcal"]["trusted"] is True
        assert selfcal["selfcal"]["focal_px"] == pytest.approx(sidecar["intrinsics"]["fx"])
    elif source == "combined":
        assert selfcal["selfcal"]["trusted"] is False and selfcal["selfcal"]["combined"] is True
        assert selfcal["selfcal"]["focal_px"] == pytest.approx(sidecar["intrinsics"]["fx"])
        assert "combined with the fallback" in selfcal["selfcal"]["warning"]
        assert selfcal["selfcal"]["focal_sigma_px"] > 0
    else:
        assert source == "default" and selfcal["selfcal"]["warning"]

    result = CliRunner().invoke(cli, ["info", str(photo), "--check-focal", "--weights", weights, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    check = record["focal_check"]
    assert check["photo_focal_px"] == pytest.approx(record["focal_px"])
    assert check["tolerance"] == pytest.approx(0.10)
    assert isinstance(check["is_off"], bool)


def test_measure_focal_auto_conflicts(photo: Path, tmp_path: Path) -> None:
    line = ["--line", "10,10,100,100"]
    result = CliRunner().invoke(cli, ["measure", str(photo), *line, "--focal", "auto", "--focal-px", "500"])
    assert result.exit_code == 2
    depth = tmp_path / "d.npy"
    import numpy as np
    from PIL import Image

    width, height = Image.open(photo).size
    np.save(depth, np.full((height, width), 2.0, np.float32))
    result = CliRunner().invoke(cli, ["measure", str(photo), *line, "--focal", "auto", "--depth", str(depth)])
    assert result.exit_code == 2
    assert "--focal auto" in result.output
