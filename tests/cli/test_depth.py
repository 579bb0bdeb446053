"""`metro depth` end to end with the seeded ViT-S (one model forward for the whole module)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from metrocli.cli.common import run_cli
from metrocli.cli.main import cli
from metrocli.io.maps import COLOUR_BAR_HEIGHT_PX
from metrocli.model.spec import ModelSpec
from metrocli.pipeline.depth import DepthRunner
from metrocli.pipeline.inputs import expand_inputs, plan_stems
from metrocli.pipeline.provider import FocalMode, ModelDepth

# A photo name crafted to climb out of the output folder (backslashes are ordinary characters on POSIX).
CRAFTED = "..\\..\\..\\escaped.png"


class Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path, seeded_weights):
    """One `metro depth` batch: scene_a.png under a crafted name, a text file named .jpg, a missing file."""
    torch.set_num_threads(2)
    base = tmp_path_factory.mktemp("depth")
    photos = base / "in"
    photos.mkdir()
    good = photos / CRAFTED
    shutil.copy(fixtures_dir / "scene_a.png", good)
    bad = photos / "notes.jpg"
    bad.write_text("this is not a photo\n")
    out = base / "work" / "out"
    weights = seeded_weights("vit-small")
    args = [str(good), str(bad), str(photos / "missing.jpg"), "-o", str(out), "--weights", str(weights)]
    args += ["--focal-px", "520", "--device", "cpu", "--precision", "fp32", "--json"]
    result = CliRunner().invoke(cli, ["depth", *args])
    return {"result": result, "base": base, "out": out, "good": good, "args": args, "weights": weights}


def test_help() -> None:
    result = CliRunner().invoke(cli, ["depth", "--help"])
    assert result.exit_code == 0 and "--focal-px" in result.output and "STEM.depth.npy" in result.output


@pytest.mark.slow
def test_batch_keeps_going_and_reports(run) -> None:
    result = run["result"]
    assert result.exit_code == 1  # two of three inputs failed
    lines = result.stdout.splitlines()
    assert len(lines) == 3  # the photo, then an error record for each failed input, in input order
    errors = [json.loads(line) for line in lines[1:]]
    assert [Path(e["photo"]).name for e in errors] == ["notes.jpg", "missing.jpg"]
    assert all(set(e) == {"photo", "error"} and e["error"] for e in errors)
    rec = json.loads(lines[0])
    assert rec["photo"] == str(run["good"]) and rec["skipped"] is False
    assert rec["intrinsics"]["fx"] == 520.0 and rec["intrinsics"]["focal_source"] == "user"
    assert "notes.jpg" in result.stderr and "missing.jpg" in result.stderr
    assert "1 of 3 photos succeeded" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_outputs_stay_inside_out_dir(run) -> None:
    out: Path = run["out"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"escaped.{k}"
        for k in ("depth.npy", "normal.npy", "confidence.npy", "depth.png", "preview.png", "json")
    )
    everything = {p.relative_to(run["base"]) for p in run["base"].rglob("*")}
    assert everything == {
        Path("in"),
        Path("in") / CRAFTED,
        Path("in") / "notes.jpg",
        Path("work"),
        Path("work") / "out",
        *(Path("work") / "out" / n for n in names),
    }


@pytest.mark.slow
def test_outputs_reproduce_the_official_pipeline(run, fixtures_dir: Path) -> None:
    out: Path = run["out"]
    ref = np.load(fixtures_dir / "vit-small.seed4321.pipeline.npz")
    depth = np.load(out / "escaped.depth.npy")
    normal = np.load(out / "escaped.normal.npy")
    conf = np.load(out / "escaped.confidence.npy")
    assert depth.dtype == normal.dtype == conf.dtype == np.float32
    assert depth.shape == conf.shape == (480, 640) and normal.shape == (480, 640, 3)
    rel = np.abs(depth - ref["depth"]) / ref["depth"]
    assert np.median(rel) <= 2e-3
    cos = np.clip((normal * ref["normal"]).sum(axis=2), -1, 1)
    assert np.median(np.degrees(np.arccos(cos))) <= 1.0
    png = np.asarray(Image.open(out / "escaped.depth.png"))
    assert png.dtype == np.uint16 and png.shape == (480, 640)
    expected_mm = np.clip(np.round(depth.astype(np.float64) * 1000), 0, 65535)
    assert np.abs(png.astype(np.float64) - expected_mm).max() <= 1
    preview = Image.open(out / "escaped.preview.png")
    assert (
        preview.size == (1280, 480 + COLOUR_BAR_HEIGHT_PX) and preview.mode == "RGB"
    )  # maps over a colour bar
    meta = json.loads((out / "escaped.json").read_text())
    assert meta["model"] == "vit-small" and meta["intrinsics"]["cx"] == 320.0
    assert meta["intrinsics"]["focal_source"] == "user" and meta["timings_s"]["forward"] > 0
    assert meta["depth"]["median_m"] == pytest.approx(float(np.median(depth)))


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(run, tmp_path: Path) -> None:
    out: Path = run["out"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    args = [str(run["good"]), *run["args"][3:]]
    result = CliRunner().invoke(cli, ["depth", *args])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert rec["skipped"] is True and rec["files"]["depth"] == str(out / "escaped.depth.npy")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # --force recomputes: with a weights file that cannot be loaded this fails before touching outputs
    bad = tmp_path / "empty.pth"
    bad.write_bytes(b"")
    forced = [str(run["good"]), "-o", str(out), "--weights", str(bad), "--force"]
    assert run_cli(cli, ["depth", *forced]) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # Outputs count as done only for the same photo, model, weights and focal override.
    same = ModelDepth(ModelSpec(weights=run["weights"]), FocalMode(focal_px=520.0))
    assert DepthRunner(same, out).existing(run["good"], "escaped") is not None
    for other in (
        ModelDepth(ModelSpec(weights=run["weights"]), FocalMode(focal_px=600.0)),
        ModelDepth(ModelSpec(weights=run["weights"])),
        ModelDepth(ModelSpec("vit-large", weights=run["weights"]), FocalMode(focal_px=520.0)),
        ModelDepth(ModelSpec(), FocalMode(focal_px=520.0)),
    ):
        assert DepthRunner(other, out).existing(run["good"], "escaped") is None
    assert DepthRunner(same, out).existing(run["good"].with_name("other.png"), "escaped") is None
    # a fixed preview depth range redoes the previews
    assert DepthRunner(same, out, depth_range_m=(0.5, 10.0)).existing(run["good"], "escaped") is None


def test_unsafe_checkpoint_is_refused(tmp_path: Path, fixtures_dir: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}, evil)
    out = tmp_path / "out"
    code = run_cli(cli, ["depth", str(fixtures_dir / "scene_a.png"), "-o", str(out), "--weights", str(evil)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"metro: error: weights file {evil} was refused") and err.count("\n") == 1
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_offline_without_weights_prints_the_hint(
    tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("METRO_CACHE_DIR", str(cache))
    code = run_cli(cli, ["depth", str(fixtures_dir / "scene_a.png"), "-o", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert err == (
        f"metro: error: no weights for vit-small in {cache}: "
        "run `metro weights pull vit-small` or pass --weights FILE\n"
    )


def test_usage_errors(tmp_path: Path, fixtures_dir: Path) -> None:
    photo = str(fixtures_dir / "scene_a.png")
    assert run_cli(cli, ["depth", photo, "-o", str(tmp_path), "--focal-px", "500", "--fov", "60"]) == 2
    assert run_cli(cli, ["depth", photo]) == 2  # -o is required
    assert run_cli(cli, ["depth", photo, "-o", str(tmp_path), "--model", "vit-huge"]) == 2
    assert run_cli(cli, ["depth", photo, "-o", str(tmp_path), "--focal-px", "-3"]) == 2
    for bad in ("10,0.5", "0,3", "1", "a,b"):
        assert run_cli(cli, ["depth", photo, "-o", str(tmp_path), "--depth-range", bad]) == 2


def test_expand_inputs_and_unique_stems(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ["a/x.jpg", "a/y.PNG", "a/.hidden.jpg", "a/notes.txt", "b/x.jpeg"]:
        (tmp_path / p).write_bytes(b"")
    photos = expand_inputs((tmp_path / "a", tmp_path / "b" / "x.jpeg", tmp_path / "nope.jpg"))
    assert [p.relative_to(tmp_path).as_posix() for p in photos] == [
        "a/x.jpg",
        "a/y.PNG",
        "b/x.jpeg",
        "nope.jpg",
    ]
    stems = [s for _, s in plan_stems(photos)]
    # issue #14: same-stem photos from two folders get names from their own paths, never from batch order
    assert stems[1:4:2] == ["y", "nope"]
    assert stems[0].startswith("x-") and stems[2].startswith("x-") and stems[0] != stems[2]
    assert [s for _, s in plan_stems(photos[::-1])][::-1] == stems
