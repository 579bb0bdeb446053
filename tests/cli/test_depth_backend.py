"""`metro depth --backend onnxruntime` on a small export of the seeded ViT-S matches torch float32 (slow)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metrocli.cli.common import run_cli
from metrocli.cli.main import cli
from metrocli.io.maps import towards_camera
from metrocli.model.onnx_export import max_angle_deg, max_rel_diff

SIZE = (112, 196)  # a small canonical input: the export and its check take seconds, not minutes


@pytest.mark.slow
def test_onnxruntime_backend_matches_torch(seeded_weights, fixtures_dir: Path, tmp_path: Path, capsys):
    from metrocli.camera.photo import load_photo
    from metrocli.model.factory import load_model
    from metrocli.model.onnx_export import export_preset

    torch.set_num_threads(2)
    weights = seeded_weights("vit-small")
    onnx_file = export_preset("vit-small", tmp_path / "vits.onnx", weights=weights, size=SIZE).path
    photo_file = fixtures_dir / "scene_a.png"
    out = tmp_path / "out"
    args = [str(photo_file), "-o", str(out), "--focal-px", "520", "--device", "cpu", "--json"]
    args += ["--backend", "onnxruntime", "--weights", str(onnx_file)]
    result = CliRunner().invoke(cli, ["depth", *args])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert rec["skipped"] is False
    meta = json.loads((out / "scene_a.json").read_text())
    assert meta["provider"]["backend"] == "onnxruntime" and meta["precision"] == "fp32"
    assert meta["weights"] == str(onnx_file) and meta["device"] == "cpu"

    model = load_model("vit-small", weights=weights)
    model.preset = dataclasses.replace(model.preset, input_size=SIZE)
    photo = load_photo(photo_file, focal_px=520.0)
    ref = model.predict(photo.image, photo.intrinsics)
    depth, normal = np.load(out / "scene_a.depth.npy"), np.load(out / "scene_a.normal.npy")
    assert depth.shape == ref.depth.shape and max_rel_diff(depth, ref.depth) <= 1e-4
    assert ref.normal is not None
    ref_normal = towards_camera(ref.normal, ref.intrinsics)  # .normal.npy faces the camera (as PLY normals)
    assert max_angle_deg(normal, ref_normal, axis=-1) <= 0.1

    # the torch backend is other work (not resumed from the onnxruntime outputs)
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.depth import DepthRunner
    from metrocli.pipeline.provider import FocalMode, ModelDepth

    spec = ModelSpec(weights=onnx_file, backend="onnxruntime")
    focal = FocalMode(focal_px=520.0)
    assert DepthRunner(ModelDepth(spec, focal), out).existing(photo_file, "scene_a") is not None
    torch_spec = dataclasses.replace(spec, backend="torch")
    assert DepthRunner(ModelDepth(torch_spec, focal), out).existing(photo_file, "scene_a") is None

    # the file's preset must be --model's
    other = ["depth", str(photo_file), "-o", str(tmp_path / "o2"), "--backend", "onnxruntime"]
    assert run_cli(cli, [*other, "--weights", str(onnx_file), "--model", "vit-large"]) == 1
    err = capsys.readouterr().err
    assert "is an export of vit-small, not --model vit-large" in err and err.count("\n") == 1
