"""Every file of ../shared/exif-samples through `metro depth` with the seeded ViT-S: never a traceback.

Real camera and phone photos (all orientations, HEIC, TIFF, corrupt and invalid files) go through the whole
model path in a few batches (outputs removed between batches to keep the disk use small), with
``--precision auto``: bf16 where the CPU has native bf16 (about 2.5x faster), fp32 elsewhere. The network
sees a 224 x 392 input instead of the preset's 616 x 1064: the model's fidelity is tested elsewhere, and what
this test is about (decoding, orientation, letterboxing, upsampling to the photo, writing every output) is the
same; the forward of ~100 photos took most of this test's minutes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metrocli.cli.main import cli
from metrocli.model import presets
from metrocli.model.runtime import resolve_precision

CHUNK = 12
#: The network input (H, W) of this test: multiples of 28 with the preset's aspect ratio, 7.5x fewer tokens.
INPUT_SIZE = (224, 392)


@pytest.mark.slow
def test_every_corpus_file_through_depth(
    exif_samples: Path, seeded_weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = dataclasses.replace(presets.PRESETS["vit-small"], input_size=INPUT_SIZE)
    monkeypatch.setitem(presets.PRESETS, "vit-small", small)
    files = sorted(p for p in exif_samples.rglob("*") if p.is_file())
    assert len(files) > 90
    weights = seeded_weights("vit-small")
    expected_precision = resolve_precision("auto", torch.device("cpu"), "vit-small")
    produced: dict[str, tuple[int, int]] = {}
    failures: list[str] = []
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        out = tmp_path / f"out{start}"
        args = ["depth", *map(str, chunk), "-o", str(out), "--weights", str(weights), "--json"]
        args += ["--precision", "auto"]
        result = CliRunner().invoke(cli, args)
        text = result.stdout + result.stderr
        assert "Traceback" not in text, text[-3000:]
        assert result.exit_code in (0, 1), (result.exit_code, text[-3000:], result.exception)
        errors = [line for line in result.stderr.splitlines() if line.startswith("metro: error:")]
        lines = [json.loads(line) for line in result.stdout.strip().splitlines() if line.startswith("{")]
        objs = [obj for obj in lines if "error" not in obj]
        # with --json a failed photo is also an error record in its place (issue 17's task, #14's leftover)
        assert len([obj for obj in lines if "error" in obj]) == len(errors), text[-3000:]
        assert len(objs) + len(errors) == len(chunk), text[-3000:]
        failures += errors
        for obj in objs:
            depth_m = np.load(obj["files"]["depth"], mmap_mode="r")
            assert depth_m.dtype == np.float32 and depth_m.ndim == 2
            assert np.isfinite(depth_m).all() and (depth_m >= 0).all()
            produced[obj["photo"]] = depth_m.shape
            assert json.loads(Path(obj["files"]["json"]).read_text())["precision"] == expected_precision
        shutil.rmtree(out, ignore_errors=True)
    # every image of the corpus is processed; only the non-images (README text files) fail, one line each
    assert len(failures) == sum(1 for f in files if f.name == "README"), failures
    assert all("README" in line for line in failures), failures
    assert str(exif_samples / "jpg" / "corrupted.jpg") in produced
