"""`metro eval` end to end on the shared NYU/KITTI frames with the seeded ViT-S (meaningless numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metrocli.cli.common import run_cli
from metrocli.cli.main import cli
from metrocli.evaluation.dataset import load_dataset, load_depth_gt, load_rgb
from metrocli.evaluation.metrics import crop_mask


@pytest.fixture(scope="module")
def demo(shared_dir: Path) -> Path:
    path = shared_dir / "datasets" / "metric3d-demo"
    if not (path / "nyu_demo" / "test_annotations.json").is_file():
        pytest.skip("metric3d-demo datasets are not present")
    return path


def test_help() -> None:
    result = CliRunner().invoke(cli, ["eval", "--help"])
    assert result.exit_code == 0 and "--max-depth" in result.output and "AbsRel" in result.output


def test_missing_dataset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(cli, ["eval", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err == f"metro: error: dataset folder {tmp_path / 'nope'} does not exist\n"
    assert run_cli(cli, ["eval", str(tmp_path)]) == 1
    assert "has no test_annotations.json" in capsys.readouterr().err


def test_offline_without_weights_prints_the_hint(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METRO_CACHE_DIR", str(tmp_path))
    assert run_cli(cli, ["eval", str(demo / "nyu_demo")]) == 1
    err = capsys.readouterr().err
    assert "run `metro weights pull vit-small` or pass --weights FILE" in err and err.count("\n") == 1


def test_bad_depth_range_is_usage_error(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(cli, ["eval", str(demo / "nyu_demo"), "--min-depth", "20"]) == 2
    assert "--min-depth" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_nyu_table_and_report(demo: Path, seeded_weights, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    weights = seeded_weights("vit-small")
    report_file = tmp_path / "reports" / "nyu.json"
    args = ["eval", str(demo / "nyu_demo"), "--weights", str(weights), "--device", "cpu", "--limit", "1"]
    result = CliRunner().invoke(cli, [*args, "-o", str(report_file)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("nyu_demo: model vit-small, 1 frames, depth 0.001-10 m (indoor")
    assert lines[0].endswith("crop eigen")
    assert lines[1].split() == ["frame", "AbsRel", "RMSE[m]", "log10", "δ1", "δ2", "δ3"]
    assert lines[2].startswith("rgb_00000.jpg") and lines[-1].startswith("mean (1)")
    report = json.loads(report_file.read_text())
    assert report["max_depth_m"] == 10.0 and report["frames"] == 1 and report["failed"] == []
    assert report["crop"] == "eigen"
    depth = report["samples"][0]["depth"]
    # The numbers are meaningless for random weights, but they must be the metrics of a real prediction:
    assert depth["valid_pixels"] > 100_000 and depth["abs_rel"] > 0 and 0 <= depth["delta1"] <= 1
    assert depth["delta1"] <= depth["delta2"] <= depth["delta3"]
    assert report["mean"]["depth"]["abs_rel"] == pytest.approx(depth["abs_rel"])
    assert f"{depth['abs_rel']:.4f}" in lines[2]


@pytest.mark.slow
def test_eval_kitti_json(demo: Path, seeded_weights) -> None:
    torch.set_num_threads(2)
    weights = seeded_weights("vit-small")
    args = ["eval", str(demo / "kitti_demo"), "--weights", str(weights), "--device", "cpu", "--limit", "1"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # one JSON object
    assert report["dataset"] == "kitti_demo" and report["max_depth_m"] == 80.0 and "outdoor" in report["cap"]
    sample = load_dataset(demo / "kitti_demo").samples[0]
    gt = load_depth_gt(sample)
    depth = report["samples"][0]["depth"]
    assert report["samples"][0]["name"] == sample.name
    assert report["crop"] == "garg"
    region = crop_mask(gt.shape, "garg")
    assert depth["valid_pixels"] == int(((gt > 1e-3) & (gt < 80) & region).sum())
    assert all(np.isfinite(depth[k]) for k in ("abs_rel", "rmse", "log10", "delta1"))
    assert report["mean"]["normal"] is None  # KITTI has no ground-truth normals
    assert load_rgb(sample).shape[:2] == gt.shape
