"""`metro depth` through the pipelined engine with a stand-in model (fast): order, failures, what is written
(--outputs, --dtype, --format, the float TIFF), resume by output options, Ctrl-C; and --backend rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from metrocli.camera.intrinsics import Intrinsics
from metrocli.cli.common import run_cli
from metrocli.cli.main import cli
from metrocli.io.maps import OutputOptions
from metrocli.pipeline.provider import ModelDepth
from metrocli.prediction import Prediction


class FakeModel:
    """Depth = 0.1 m per photo row (so far rows exceed the 16-bit PNG's 65.5 m), normals facing the camera."""

    precision = "fp32"
    calls: list[tuple[int, int]]

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls = []
        self.normals: list[bool] = []
        self.interrupt_after = interrupt_after

    def predict(self, image: np.ndarray, intrinsics: Intrinsics, *, normals: bool = True) -> Prediction:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(image.shape[:2])
        self.normals.append(normals)
        height, width = image.shape[:2]
        depth = np.repeat((np.arange(height, dtype=np.float32) * 1.0 + 0.5)[:, None], width, axis=1)
        normal = np.zeros((height, width, 3), np.float32)
        normal[..., 2] = -1.0
        return Prediction(
            depth=depth,
            normal=normal if normals else None,
            confidence=np.ones((height, width), np.float32),
            normal_confidence=np.ones((height, width), np.float32) if normals else None,
            intrinsics=intrinsics,
            model="vit-small",
            timings_s={"forward": 0.01},
        )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    model = FakeModel()
    monkeypatch.setattr(ModelDepth, "model", lambda self: model)
    return model


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Five PNG photos of different sizes (a.png ... e.png) and a broken one (c2.jpg) in the middle."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, name in enumerate("abcde"):
        rgb = rng.integers(0, 255, (40 + 10 * i, 60, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / f"{name}.png")
    (folder / "c2.jpg").write_text("not a photo")
    return folder


def depth(args: list[str]):
    return CliRunner().invoke(cli, ["depth", *args, "--focal-px", "50", "--json"])


def test_results_in_input_order_and_a_bad_photo_does_not_stop_the_batch(fake, photos, tmp_path):
    out = tmp_path / "out"
    result = depth([str(photos), "-o", str(out)])
    assert result.exit_code == 1  # one photo failed
    recs = [json.loads(line) for line in result.stdout.splitlines()]
    # the failed photo is an error record in its place (issue 14's JSON field names)
    assert [Path(r["photo"]).name for r in recs] == ["a.png", "b.png", "c.png", "c2.jpg", "d.png", "e.png"]
    assert [bool(r.get("error")) for r in recs] == [False, False, False, True, False, False]
    assert set(recs[3]) == {"photo", "error"} and "c2.jpg" in recs[3]["error"]
    assert "c2.jpg" in result.stderr and "5 of 6 photos succeeded" in result.stderr
    assert "Traceback" not in result.stderr
    for i, name in enumerate("abcde"):
        assert np.load(out / f"{name}.depth.npy").shape == (40 + 10 * i, 60)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.{k}"
        for n in "abcde"
        for k in ("depth.npy", "normal.npy", "confidence.npy", "depth.png", "preview.png", "json")
    )


class BatchingFakeModel(FakeModel):
    """:class:`FakeModel` with a batched forward that records the size of each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def predict_batch(self, images, intrinsics, *, normals: bool = True) -> list[Prediction]:
        self.batches.append(len(images))
        return [self.predict(image, k, normals=normals) for image, k in zip(images, intrinsics, strict=True)]


def test_batch_size_batches_the_forward_and_keeps_order_and_maps(monkeypatch, photos, tmp_path):
    model = BatchingFakeModel()
    monkeypatch.setattr(ModelDepth, "model", lambda self: model)
    one = depth([str(photos), "-o", str(tmp_path / "one")])
    assert model.batches == []  # batch size 1: one photo per forward
    result = depth([str(photos), "-o", str(tmp_path / "two"), "--batch-size", "2"])
    assert result.exit_code == 1  # c2.jpg cannot be read: it fails alone, its neighbours still batch
    assert model.batches == [2, 2]  # a+b, c+d (c2.jpg between them cannot be read); e alone: predict
    assert result.stdout.replace("/two/", "/one/") == one.stdout  # same records, same order
    for name in "abcde":
        for kind in ("depth", "normal", "confidence"):
            file = f"{name}.{kind}.npy"
            assert np.array_equal(np.load(tmp_path / "one" / file), np.load(tmp_path / "two" / file))
    bad = CliRunner().invoke(cli, ["depth", str(photos), "-o", str(tmp_path / "x"), "--batch-size", "0"])
    assert bad.exit_code == 2 and "--batch-size" in bad.output


def test_outputs_dtype_format_and_float_tiff(fake, photos, tmp_path):
    out = tmp_path / "out"
    result = depth([str(photos / "e.png"), "-o", str(out), "--outputs", "tiff,depth", "--dtype", "float16"])
    assert result.exit_code == 0, result.output
    npz = ["--outputs", "confidence,normal", "--format", "npz"]
    result = depth([str(photos / "d.png"), "-o", str(out), *npz])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "d.confidence.npz",
        "d.json",
        "d.normal.npz",
        "e.depth.npy",
        "e.depth.tiff",
        "e.json",
    ]
    d16 = np.load(out / "e.depth.npy")
    assert d16.dtype == np.float16 and d16.shape == (80, 60)
    tiff = Image.open(out / "e.depth.tiff")
    assert tiff.mode == "F"
    exact = np.asarray(tiff)
    assert exact.dtype == np.float32 and exact[79, 0] == 79.5  # beyond the PNG's 65.535 m, not clipped
    np.testing.assert_allclose(d16, exact, rtol=1e-3)
    with np.load(out / "d.normal.npz") as npz:
        assert list(npz) == ["normal"] and npz["normal"].shape == (70, 60, 3)
        assert npz["normal"].dtype == np.float32
    meta = json.loads((out / "e.json").read_text())
    assert meta["files"] == {"depth": "e.depth.npy", "depth_tiff": "e.depth.tiff", "json": "e.json"}
    assert meta["outputs"] == {"outputs": ["depth", "tiff"], "dtype": "float16", "format": "npy"}
    # normals are upsampled only for outputs that show them (the normal maps, the previews)
    assert fake.normals == [False, True]


def test_resume_treats_other_outputs_as_other_work(fake, photos, tmp_path):
    out = tmp_path / "out"
    photo = str(photos / "a.png")
    assert depth([photo, "-o", str(out)]).exit_code == 0
    assert len(fake.calls) == 1
    again = depth([photo, "-o", str(out), "--outputs", "depth,normal,confidence,preview,png16"])
    assert json.loads(again.stdout)["skipped"] is True and len(fake.calls) == 1  # the defaults, reordered
    other = depth([photo, "-o", str(out), "--outputs", "depth,tiff"])
    assert json.loads(other.stdout)["skipped"] is False and len(fake.calls) == 2
    assert (out / "a.depth.tiff").is_file()
    same = depth([photo, "-o", str(out), "--outputs", "tiff,depth"])
    assert json.loads(same.stdout)["skipped"] is True and len(fake.calls) == 2
    fmt = depth([photo, "-o", str(out), "--outputs", "tiff,depth", "--format", "npz"])
    assert json.loads(fmt.stdout)["skipped"] is False and len(fake.calls) == 3


def test_ctrl_c_leaves_only_complete_photos(monkeypatch, photos, tmp_path, capsys):
    model = FakeModel(interrupt_after=2)
    monkeypatch.setattr(ModelDepth, "model", lambda self: model)
    out = tmp_path / "out"
    assert run_cli(cli, ["depth", str(photos), "-o", str(out), "--focal-px", "50"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "metro: error: aborted"  # click's Abort for Ctrl-C; never a traceback
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    stems = {n.split(".")[0] for n in names}
    # only photos the model finished, each with all its files (a write under way completes, one not yet
    # started is dropped), no temp file left
    assert stems <= {"a", "b"} and len(names) == 6 * len(stems)
    assert all((out / f"{stem}.json").is_file() for stem in stems)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --weights FILE.onnx"),
        (["--weights", "m.onnx", "--precision", "bf16"], "fp32 only"),
        (["--weights", "m.onnx", "--device", "mps"], "not --device mps"),
        (["--outputs", "depth,exr"], "unknown output exr"),
        (["--outputs", ","], "nothing to write"),
    ],
)
def test_usage_errors(photos, tmp_path, capsys, extra, message):
    args = ["depth", str(photos / "a.png"), "-o", str(tmp_path / "out")]
    backend = [] if "--outputs" in extra else ["--backend", "onnxruntime"]
    assert run_cli(cli, [*args, *backend, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_options_compare_in_one_order():
    assert OutputOptions(("png16", "depth")) == OutputOptions(("depth", "png16"))
    assert OutputOptions.parse(" Depth , tiff ").outputs == ("depth", "tiff")


def test_outputs_of_earlier_runs_stay_ours(fake, photos, tmp_path):
    """Files metro wrote in an earlier run with other --outputs may be rewritten later (they are never taken
    for the user's files), and only what a run writes is checked."""
    from metrocli.errors import OutputError

    out = tmp_path / "out"
    photo = str(photos / "a.png")
    assert depth([photo, "-o", str(out)]).exit_code == 0  # the defaults: normal, confidence, ... exist now
    assert depth([photo, "-o", str(out), "--outputs", "depth,tiff"]).exit_code == 0
    again = depth([photo, "-o", str(out), "--force"])  # the defaults again, over the first run's files
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["skipped"] is False
    assert {"a.normal.npy", "a.depth.tiff"} <= set(json.loads((out / "a.json").read_text())["owned"])
    (out / "b.depth.tiff").write_bytes(b"the user's own file")  # never ours: refused before any work
    refused = depth([str(photos / "b.png"), "-o", str(out), "--outputs", "depth,tiff"])
    assert isinstance(refused.exception, OutputError) and refused.exception.exit_code == 2  # run_cli: exit 2
    assert (out / "b.depth.tiff").read_bytes() == b"the user's own file"


def test_a_long_batch_keeps_no_per_photo_data(fake, tmp_path):
    """Traced memory over 36 photos is that of 12: nothing of a finished photo (image, maps, prediction) is
    kept by the runner, the provider or the engine."""
    import tracemalloc

    from metrocli.io.maps import OutputOptions
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.depth import DepthRunner
    from metrocli.pipeline.inputs import plan_stems
    from metrocli.pipeline.provider import FocalMode

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(36):
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / f"p{i:02d}.png")
    photos = sorted(folder.iterdir())
    runner = DepthRunner(
        ModelDepth(ModelSpec("vit-small"), FocalMode(focal_px=300.0)),
        tmp_path / "out",
        options=OutputOptions(("depth", "normal")),
    )

    def peak(count: int) -> int:
        tracemalloc.start()
        try:
            for outcome in runner.run_many(plan_stems(photos[:count])):
                outcome.result()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak(12), peak(36)
    assert long < short * 1.3 + 2e6, (short, long)  # each photo's maps are ~3 MB: 24 kept would be +70 MB
