"""`make demo` (metrocli.demo) on the shipped samples, offline: real `metro` subprocesses, recorded depth."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from metrocli import demo

SAMPLES = Path(__file__).resolve().parents[2] / "sample_photos"


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights cache, so the demo runs in offline mode (subprocesses inherit the environment)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("METRO_CACHE_DIR", str(cache))
    if not (SAMPLES / "samples.json").is_file():
        pytest.skip("sample_photos/ has not been generated")
    return cache


def test_demo_offline_info_measure_depth(tmp_path: Path, offline: Path, capfd: pytest.CaptureFixture):
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--no-pull", "--steps", "info,measure,depth"])
    text = capfd.readouterr().out
    assert rc == 0, text
    # Commands are echoed as the user would type them.
    assert "$ metro info " in text and "$ metro measure " in text and "--annotate" in text
    # metro info: every sample with its EXIF focal length; room_04 is displayed portrait (orientation 6).
    meta = json.loads((SAMPLES / "samples.json").read_text())
    for rec in meta["photos"]:
        row = next(line for line in text.splitlines() if rec["file"] in line and "metro" not in line)
        assert f"{rec['intrinsics']['fx']:.1f}" in row
    rot = next(line for line in text.splitlines() if "room_04.jpg" in line and "metro" not in line)
    assert re.search(r"\b960\s+1280\s+6\b", rot)
    # Offline mode is said once, with the command that fetches weights; metro depth is skipped, not faked.
    assert text.count("OFFLINE MODE") == 1 and "metro weights pull vit-small" in text
    assert "skipped: `metro depth`" in text
    # The measurement of the table, true size beside it, within 5 mm (exact recorded depth).
    for name in ("table length", "table width"):
        row = next(line for line in text.splitlines() if line.startswith(name))
        measured, true = (float(x) for x in re.findall(r"(\d+\.\d+) m", row)[:2])
        assert abs(measured - true) < 0.005, row
    # The demo ends by listing the files written.
    listing = text.split("files written in", 1)[1]
    assert "room_01-measured.png" in listing
    assert (out / "room_01-measured.png").stat().st_size > 10_000


def test_demo_failing_step_is_reported_and_the_demo_goes_on(
    tmp_path: Path, offline: Path, capfd: pytest.CaptureFixture
):
    samples = tmp_path / "samples"
    samples.mkdir()
    shutil.copy(SAMPLES / "samples.json", samples)
    shutil.copy(SAMPLES / "room_01.jpg", samples)  # no room_01.depth.png: the measurement must fail
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--samples", str(samples), "--no-pull", "--steps", "measure,info"])
    text = capfd.readouterr().out
    assert rc == 1
    assert "!! `metro measure` failed with exit code" in text
    assert "$ metro info " in text  # the next step still ran
    assert "files written in" in text and "step(s) failed" in text


def test_demo_rejects_unknown_steps_and_missing_samples(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--steps", "info,bogus"])
    assert exc.value.code == 2
    assert demo.main(["--samples", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "python -m metrocli.synth.samples" in capsys.readouterr().err
