"""`reconstruct --separate` through the pipelined engine: plan order, JSON error records, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from metrocli.cli.main import cli


def _folder(tmp_path: Path) -> Path:
    from metrocli.camera.exif_write import write_jpeg

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, depth_m in (("a", 2.0), ("c", 3.0), ("d", 4.0)):
        rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        write_jpeg(folder / f"{name}.jpg", rgb, make="Apple", model="iPhone 13 Pro", focal_35mm=26)
        np.save(folder / f"{name}.npy", np.full((48, 64), depth_m, np.float32))
    (folder / "b.jpg").write_text("not a photo\n")  # fails in the loader thread, between two good photos
    np.save(folder / "b.npy", np.full((48, 64), 1.0, np.float32))
    return folder


def test_separate_json_is_in_plan_order_with_an_error_record_per_failed_photo(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    args = ["reconstruct", str(folder), "--separate", "-o", str(out), "--depth-dir", str(folder), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1  # one photo failed
    recs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["photo"]).name for r in recs] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert set(recs[1]) == {"photo", "error"} and "b.jpg" in recs[1]["error"]
    assert [r.get("skipped") for r in recs] == [False, None, False, False]
    assert [Path(r["output"]).name for r in recs if "output" in r] == ["a.ply", "c.ply", "d.ply"]
    assert "3 of 4 photos succeeded" in result.stderr
    # resume: the done photos are skipped (decided in the loader thread), the bad one fails again
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = CliRunner().invoke(cli, args)
    recs = [json.loads(line) for line in again.stdout.splitlines()]
    assert [r.get("skipped") for r in recs] == [True, None, True, True]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


class _BatchingModel:
    """A model stand-in: depth 2 m + 1 cm per row, normals facing the camera; records each batch's size."""

    precision = "fp32"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, image, intrinsics, *, normals: bool = True):
        from metrocli.prediction import Prediction

        height, width = image.shape[:2]
        depth = np.repeat((2.0 + 0.01 * np.arange(height, dtype=np.float32))[:, None], width, axis=1)
        normal = np.zeros((height, width, 3), np.float32)
        normal[..., 2] = -1.0
        ones = np.ones((height, width), np.float32)
        return Prediction(
            depth=depth,
            normal=normal if normals else None,
            confidence=ones,
            normal_confidence=ones if normals else None,
            intrinsics=intrinsics,
            model="vit-small",
            timings_s={"forward": 0.01},
        )

    def predict_batch(self, images, intrinsics, *, normals: bool = True):
        self.batches.append(len(images))
        return [self.predict(image, k, normals=normals) for image, k in zip(images, intrinsics, strict=True)]


def test_separate_batch_size_batches_the_forward_and_writes_the_same_meshes(
    monkeypatch, tmp_path: Path
) -> None:
    from metrocli.pipeline.provider import ModelDepth

    model = _BatchingModel()
    monkeypatch.setattr(ModelDepth, "model", lambda self: model)
    folder = _folder(tmp_path)
    runs = {}
    for batch in ("1", "2"):
        out = tmp_path / f"out{batch}"
        args = ["reconstruct", str(folder), "--separate", "-o", str(out), "--batch-size", batch, "--json"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output  # b.jpg is not a photo; the others still batch
        runs[batch] = (out, result.stdout)
    assert model.batches == [2]  # batch 1 never batches; then a+c (b fails to load), d alone: predict
    assert runs["2"][1].replace("/out2/", "/out1/") == runs["1"][1]  # same records, same order
    for name in ("a.ply", "c.ply", "d.ply"):
        assert (runs["1"][0] / name).read_bytes() == (runs["2"][0] / name).read_bytes()
    single = CliRunner().invoke(
        cli, ["reconstruct", str(folder), "-o", str(tmp_path / "s.ply"), "--batch-size", "2"]
    )
    assert single.exit_code == 2 and "--batch-size is for --separate" in single.output
