"""Issue #14 / #22: batches never touch an input, never hand back a stale or another photo's output.

Real files, real subprocesses for pipes, non-TTY stderr and concurrent runs; "inputs untouched" is checked
with file hashes before and after. The model is replaced by a deterministic stand-in provider (depth from the
photo's mean colour) where the scenario is about files, not about depth.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import metrocli.cli.depth as depth_cli
from metrocli.camera.exif_write import write_jpeg
from metrocli.cli.common import run_cli
from metrocli.cli.main import cli, hoist_verbosity
from metrocli.pipeline.inputs import expand_inputs, list_photos, plan_stems
from metrocli.pipeline.provider import MODEL_ERROR, DepthMap, FocalMode

REPO = Path(__file__).resolve().parents[2]


class StandInDepth:
    """A DepthProvider without a network: depth = 1 m + the photo's mean grey level / 100; counts calls."""

    def __init__(self, focal: FocalMode = FocalMode(), tag: str = "a") -> None:
        self._focal = focal
        self.tag = tag
        self.calls: list[str] = []

    @property
    def focal(self) -> FocalMode:
        return self._focal

    def prepare(self) -> None:
        pass

    def provide(self, photo: Any, *, normals: bool = True) -> DepthMap:
        self.calls.append(Path(photo.path).name)
        h, w = photo.image.shape[:2]
        depth = np.full((h, w), 1.0 + float(photo.image.mean()) / 100.0, np.float32)
        return DepthMap(
            "model", "stand-in", depth, photo.intrinsics, MODEL_ERROR, confidence=np.ones_like(depth)
        )

    def key(self) -> dict[str, Any]:
        return {"model": "stand-in", "tag": self.tag, **self.focal.key()}


def _jpeg(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    write_jpeg(path, rgb, make="Apple", model="iPhone 12", focal_35mm=26)
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[StandInDepth]:
    """`metro depth` runs the stand-in; the providers made are collected (to count model runs)."""
    made: list[StandInDepth] = []

    def build(spec: Any, focal: FocalMode, **_: Any) -> StandInDepth:
        made.append(StandInDepth(focal))
        return made[-1]

    monkeypatch.setattr(depth_cli, "build_provider", build)
    return made


def _depth(*args: str):
    return CliRunner().invoke(cli, ["depth", *args, "--json"])


def _records(result: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


# -- 1. discovery ------------------------------------------------------------------------------------------
def test_one_listing_rule_recursive_hidden_and_output_folder(tmp_path: Path) -> None:
    for name in ["a.jpg", "a.depth.png", "a.preview.png", "a-measured.png", ".hidden.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    for name in ["sub/b.jpg", ".cache/c.jpg", "out/d.jpg", "sub/deeper/e.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    rel = [p.relative_to(tmp_path).as_posix() for p in list_photos(tmp_path)]
    assert rel == ["a.jpg", "out/d.jpg"][:1]
    deep = list_photos(tmp_path, recursive=True, exclude=[tmp_path / "out"])
    assert [p.relative_to(tmp_path).as_posix() for p in deep] == ["a.jpg", "sub/b.jpg", "sub/deeper/e.png"]
    # info, depth, reconstruct: one rule (`info` takes folders too)
    result = CliRunner().invoke(cli, ["info", "--json", "--recursive", str(tmp_path / "sub")])
    assert result.exit_code == 1  # the files are not real photos; what counts is which were tried
    assert "b.jpg" in result.stderr and "e.png" in result.stderr and "a.jpg" not in result.stderr


# -- 3. names ----------------------------------------------------------------------------------------------
def test_names_keep_unicode_and_collisions_follow_the_path_not_the_batch(tmp_path: Path) -> None:
    tokyo, osaka = _jpeg(tmp_path / "東京.jpg", 1), _jpeg(tmp_path / "大阪 駅.jpg", 2)
    sa, sb = _jpeg(tmp_path / "sa" / "room_01.jpg", 3), _jpeg(tmp_path / "sb" / "room_01.jpg", 4)
    plan = dict(plan_stems([tokyo, osaka, sa, sb]))
    assert plan[tokyo] == "東京" and plan[osaka] == "大阪 駅"
    assert plan[sa] != plan[sb] and plan[sa].startswith("room_01-") and plan[sb].startswith("room_01-")
    assert dict(plan_stems([sb, osaka, sa, tokyo])) == plan  # batch order does not matter
    assert dict(plan_stems([tokyo]))[tokyo] == "東京"  # nor which other files are in the batch


def test_unicode_and_same_stem_photos_get_their_own_outputs(tmp_path: Path, stand_in) -> None:
    inputs = tmp_path / "in"
    _jpeg(inputs / "東京.jpg", 1)
    _jpeg(inputs / "大阪.jpg", 2)
    _jpeg(inputs / "sa" / "room.jpg", 3)
    _jpeg(inputs / "sb" / "room.jpg", 4)
    before = _hashes(inputs)
    out = tmp_path / "out"
    result = _depth(str(inputs), "-r", "-o", str(out))
    assert result.exit_code == 0, result.output
    recs = {Path(r["photo"]).relative_to(inputs).as_posix(): r for r in _records(result)}
    assert Path(recs["東京.jpg"]["files"]["depth"]).name == "東京.depth.npy"
    assert Path(recs["大阪.jpg"]["files"]["depth"]).name == "大阪.depth.npy"
    sa_depth, sb_depth = recs["sa/room.jpg"]["files"]["depth"], recs["sb/room.jpg"]["files"]["depth"]
    assert sa_depth != sb_depth
    assert not np.array_equal(np.load(sa_depth), np.load(sb_depth))  # each photo's own depth
    # After 大阪 is removed, 東京 keeps its name and is skipped (never another photo's outputs).
    (inputs / "大阪.jpg").unlink()
    again = _depth(str(inputs / "東京.jpg"), str(inputs / "sb" / "room.jpg"), "-o", str(out))
    assert again.exit_code == 0, again.output
    recs2 = {Path(r["photo"]).name: r for r in _records(again)}
    assert recs2["東京.jpg"]["skipped"] is True
    assert recs2["東京.jpg"]["files"]["depth"] == recs["東京.jpg"]["files"]["depth"]
    assert recs2["room.jpg"]["skipped"] is False  # sb/room alone now writes room.*, its own
    assert np.array_equal(np.load(recs2["room.jpg"]["files"]["depth"]), np.load(sb_depth))
    del before["大阪.jpg"]
    assert _hashes(inputs) == before


# -- 4. resume ---------------------------------------------------------------------------------------------
def test_resume_is_keyed_on_content_not_on_the_path_spelling(
    tmp_path: Path, stand_in, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = _jpeg(tmp_path / "in" / "IMG_0042.jpg", 1)
    out = tmp_path / "out"
    first = _depth(str(photo), "-o", str(out))
    assert first.exit_code == 0 and _records(first)[0]["skipped"] is False
    monkeypatch.chdir(tmp_path)
    relative = _depth("in/../in/IMG_0042.jpg", "-o", "out")
    assert _records(relative)[0]["skipped"] is True and stand_in[-1].calls == []
    other_focal = _depth(str(photo), "-o", str(out), "--fov", "40")
    assert _records(other_focal)[0]["skipped"] is False
    # a different photo under the same name is recomputed, never reported with the old outputs
    old = np.load(out / "IMG_0042.depth.npy")
    shutil.copy(_jpeg(tmp_path / "other.jpg", 9), photo)
    replaced = _depth(str(photo), "-o", str(out), "--fov", "40")
    assert _records(replaced)[0]["skipped"] is False and stand_in[-1].calls == ["IMG_0042.jpg"]
    assert not np.array_equal(np.load(out / "IMG_0042.depth.npy"), old)
    sidecar = json.loads((out / "IMG_0042.json").read_text())
    assert sidecar["photo_sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()


# -- 2. inputs are read-only -------------------------------------------------------------------------------
def test_depth_maps_beside_photos_with_o_the_input_folder_are_never_overwritten(
    tmp_path: Path, stand_in, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "sample_photos"
    _jpeg(folder / "room_01.jpg", 1)
    _jpeg(folder / "room_02.jpg", 2)
    (folder / "room_01.depth.png").write_bytes(b"the user's sensor depth")
    before = _hashes(folder)
    assert run_cli(cli, ["depth", str(folder), "-o", str(folder)]) == 2
    captured = capsys.readouterr()
    assert "room_01.depth.png" in captured.err and captured.err.count("\n") == 1
    assert captured.out == "" and stand_in[-1].calls == []  # refused before any work
    assert _hashes(folder) == before


def test_depth_into_the_input_folder_lists_only_photos_and_reruns_cleanly(tmp_path: Path, stand_in) -> None:
    folder = tmp_path / "photos"
    _jpeg(folder / "a.jpg", 1)
    _jpeg(folder / "b.jpg", 2)
    before = _hashes(folder)
    first = _depth(str(folder), "-o", str(folder))
    assert first.exit_code == 0 and len(_records(first)) == 2  # not its own outputs
    second = _depth(str(folder), "-o", str(folder))
    assert [r["skipped"] for r in _records(second)] == [True, True]
    assert {k: v for k, v in _hashes(folder).items() if k in before} == before


# -- 5. pipes ----------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_closed_stdout_ends_the_batch_quietly_with_exit_0(tmp_path: Path) -> None:
    photos = [str(_jpeg(tmp_path / f"p{i:03d}.jpg", i)) for i in range(60)]
    metro = f"{sys.executable} -m metrocli.cli.main"
    script = f'{metro} info --json {" ".join(photos)} | head -1; echo "rc=${{PIPESTATUS[0]}}" >&2'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=_env(), timeout=120)
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)["path"] == photos[0]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "rc=0", proc.stderr
    # no BrokenPipeError, no error and no summary lines (what was done before head exited is logged)
    assert all(line.startswith("[") and line.endswith(" s ok") for line in lines[:-1]), proc.stderr
    # a reader that is gone before the first result: not one more photo is read after the failed write
    gone = f'{metro} info --json {" ".join(photos)} | true; echo "rc=${{PIPESTATUS[0]}}" >&2'
    proc = subprocess.run(["bash", "-c", gone], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.stderr.strip().splitlines() == ["rc=0"], proc.stderr


# -- 6. logs -----------------------------------------------------------------------------------------------
def test_non_tty_stderr_gets_one_plain_line_per_photo(tmp_path: Path) -> None:
    long_name = "a photo with a rather long name " * 3 + ".jpg"
    photos = [str(_jpeg(tmp_path / n, i)) for i, n in enumerate(["x.jpg", long_name, "y.jpg"])]
    (tmp_path / "bad.jpg").write_text("not a photo")
    cmd = [
        sys.executable,
        "-m",
        "metrocli.cli.main",
        "info",
        *photos,
        str(tmp_path / "bad.jpg"),
        "--json",
        "-v",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**_env(), "COLUMNS": "40"}, timeout=120)
    lines = proc.stderr.splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert [line.split()[0] for line in progress] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert progress[1].startswith(f"[2/4] {photos[1]} ") and progress[1].endswith(" s ok")
    assert progress[3].endswith(" s failed")
    assert "\x1b[" not in proc.stderr  # no colour
    assert all(line.startswith(("[", "metro: ", "3 of 4")) for line in lines), lines
    quiet = subprocess.run([*cmd[:-1], "-q"], capture_output=True, text=True, env=_env(), timeout=120)
    assert not any(line.startswith("[") for line in quiet.stderr.splitlines())
    assert "bad.jpg" in quiet.stderr  # errors still


def test_verbosity_flags_after_the_subcommand() -> None:
    assert hoist_verbosity(["depth", "x.jpg", "-vv", "-o", "o", "--", "-q"]) == [
        "-vv",
        "depth",
        "x.jpg",
        "-o",
        "o",
        "--",
        "-q",
    ]
    result = CliRunner().invoke(cli, ["info", "-q", "-v", "nothing.jpg"])
    assert result.exit_code == 2


# -- #22: two runs at once ---------------------------------------------------------------------------------
def test_a_second_run_on_the_same_output_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom metrocli.pipeline.lock import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        photo = _jpeg(tmp_path / "p.jpg", 1)
        cmd = [sys.executable, "-m", "metrocli.cli.main", "depth", str(photo), "-o", str(out)]
        start = time.monotonic()
        proc = subprocess.run(
            [*cmd, "--weights", str(tmp_path / "none.pth")],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
        assert proc.returncode == 1 and "another metro run is writing here" in proc.stderr
        assert time.monotonic() - start < 60 and list(out.iterdir()) == []
    finally:
        holder.kill()
        holder.wait()
    # once the first run is gone (killed, even), the folder is free again: the lock died with it
    proc = subprocess.run(
        [*cmd, "--weights", str(tmp_path / "none.pth")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert "another metro run" not in proc.stderr and "none.pth" in proc.stderr


def test_expand_inputs_keeps_explicit_files(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "x.jpg", 1)
    assert expand_inputs([photo, photo]) == [photo, photo]
    assert plan_stems([photo, tmp_path / "." / "x.jpg"]) == [(photo, "x")]  # one photo, one plan entry


# -- #22: resume of reconstruct --separate and FOLDER fingerprints everything ------------------------------
def _room(folder: Path, names: list[str], size: tuple[int, int] = (160, 120)) -> Path:
    from metrocli.synth.multiview import ROOM_VIEWS, render_views, write_views

    folder.mkdir(parents=True, exist_ok=True)
    views = tuple(v for v in ROOM_VIEWS if v.name in names)
    write_views(folder, render_views(*size, views), views=views)
    return folder


def _reconstruct(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code = run_cli(cli, ["reconstruct", *args, "--json"])
    captured = capsys.readouterr()
    return code, [json.loads(x) for x in captured.out.splitlines() if x.strip()], captured.err


def test_separate_resume_follows_options_photos_and_sensor_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metrocli.synth.multiview import ROOM_VIEWS

    monkeypatch.setenv("METRO_CACHE_DIR", str(tmp_path / "cache"))
    name = ROOM_VIEWS[0].name
    sa = _room(tmp_path / "sa", [name])
    sb = _room(tmp_path / "sb", [ROOM_VIEWS[1].name])
    # sb holds another view under sa's name: same file names, other content
    for suffix in (".jpg", ".depth.png"):
        (sb / f"{ROOM_VIEWS[1].name}{suffix}").rename(sb / f"{name}{suffix}")
    before = {**_hashes(sa), **{f"b/{k}": v for k, v in _hashes(sb).items()}}
    out = tmp_path / "meshes"
    base = ["-o", str(out), "--separate", "--points-only"]
    code, recs, _ = _reconstruct(capsys, str(sa), *base, "--depth-dir", str(sa))
    assert code == 0 and recs[0]["skipped"] is False
    code, recs, _ = _reconstruct(capsys, str(sa), *base, "--depth-dir", str(sa))
    assert recs[0]["skipped"] is True
    # --points-only dropped and --fov 30 added: recomputed, never the old point cloud
    code, recs, _ = _reconstruct(
        capsys, str(sa), "-o", str(out), "--separate", "--depth-dir", str(sa), "--fov", "30"
    )
    assert code == 0 and recs[0]["skipped"] is False and recs[0]["kind"] == "mesh"
    # another photo under the same name into the same -o: its own mesh
    stamp = (out / f"{name}.ply").read_bytes()
    args = [str(sb), "-o", str(out), "--separate", "--depth-dir", str(sb), "--fov", "30"]
    code, recs, _ = _reconstruct(capsys, *args)
    assert code == 0 and recs[0]["skipped"] is False and (out / f"{name}.ply").read_bytes() != stamp
    # the sensor map replaced: recomputed
    assert _reconstruct(capsys, *args)[1][0]["skipped"] is True
    depth_png = sb / f"{name}.depth.png"
    from PIL import Image

    mm = np.asarray(Image.open(depth_png)).astype(np.uint16)
    Image.fromarray((mm // 2).astype(np.uint16)).save(depth_png)
    assert _reconstruct(capsys, *args)[1][0]["skipped"] is False
    after = {**_hashes(sa), **{f"b/{k}": v for k, v in _hashes(sb).items()}}
    assert {k: v for k, v in after.items() if not k.endswith(".depth.png")} == {
        k: v for k, v in before.items() if not k.endswith(".depth.png")
    }


def test_separate_never_replaces_a_file_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metrocli.synth.multiview import ROOM_VIEWS

    monkeypatch.setenv("METRO_CACHE_DIR", str(tmp_path / "cache"))
    name = ROOM_VIEWS[0].name
    folder = _room(tmp_path / "in", [name])
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{name}.ply").write_text("the user's own scan\n")
    code, recs, err = _reconstruct(
        capsys, str(folder), "-o", str(out), "--separate", "--depth-dir", str(folder)
    )
    assert code == 2 and recs == [] and f"{name}.ply" in err
    assert (out / f"{name}.ply").read_text() == "the user's own scan\n"


def test_implausible_sensor_depth_warns_and_depth_scale_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from metrocli.synth.multiview import ROOM_VIEWS

    name = ROOM_VIEWS[0].name
    folder = _room(tmp_path / "in", [name])
    depth_png = folder / f"{name}.depth.png"
    mm = np.asarray(Image.open(depth_png)).astype(np.float64)
    npy = tmp_path / "mm.npy"  # millimetres saved as .npy, read as the .npy default metres: 3.6 km
    np.save(npy, mm.astype(np.float32))
    photo = str(folder / f"{name}.jpg")
    code, _, err = _reconstruct(capsys, photo, "-o", str(tmp_path / "a.ply"), "--depth", str(npy))
    assert "implausible" in err and "--depth-scale" in err, err
    args = [photo, "-o", str(tmp_path / "b.ply"), "--depth", str(npy), "--depth-scale", "0.001"]
    code, _, err = _reconstruct(capsys, *args)
    assert code == 0 and "implausible" not in err


@pytest.mark.slow
def test_folder_resume_sees_a_replaced_depth_map_and_caches_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import metrocli.pipeline.prediction_cache as cache
    from metrocli.synth.multiview import ROOM_VIEWS

    names = [v.name for v in ROOM_VIEWS[:3]]
    folder = _room(tmp_path / "in", names, size=(320, 240))
    out = tmp_path / "scene.ply"
    args = [str(folder), "-o", str(out), "--depth-dir", str(folder), "--voxel-m", "0.05"]
    code, recs, err = _reconstruct(capsys, *args)
    assert code == 0 and recs[0]["skipped"] is False, err
    assert "3 photos: 3 registered, 0 left out" in err and "succeeded" not in err
    assert recs[0]["outputs"] == [str(out), str(out.with_suffix(".json"))]
    assert _reconstruct(capsys, *args)[1][0]["skipped"] is True
    depth_png = folder / f"{names[1]}.depth.png"
    from PIL import Image

    mm = np.asarray(Image.open(depth_png)).astype(np.uint16)
    Image.fromarray((mm // 2).astype(np.uint16)).save(depth_png)
    assert _reconstruct(capsys, *args)[1][0]["skipped"] is False

    # model depth: one photo touched -> one forward; the others come from the cache beside the output
    runs: list[str] = []

    class Counting(StandInDepth):
        spec = type("Spec", (), {"name": "vit-small", "weights": None})()

        def model(self) -> Any:
            class Net:
                def predict(self, image: np.ndarray, intrinsics: Any, normals: bool = True) -> Any:
                    from metrocli.prediction import Prediction

                    runs.append("forward")
                    depth = np.full(image.shape[:2], 1.0 + float(image.mean()) / 100.0, np.float32)
                    return Prediction(depth, None, np.ones_like(depth), None, intrinsics, "stand-in")

            return Net()

        def from_prediction(self, prediction: Any, photo: Any) -> DepthMap:
            return DepthMap(
                "model",
                "stand-in",
                prediction.depth,
                photo.intrinsics,
                MODEL_ERROR,
                confidence=prediction.confidence,
            )

    monkeypatch.setattr("metrocli.pipeline.multiview.ModelDepth", Counting)
    monkeypatch.setattr(cache, "ModelDepth", Counting)
    from metrocli.pipeline.multiview import MultiviewJob, MultiviewOptions

    model_out = tmp_path / "model" / "scene.ply"
    job = MultiviewJob(folder, model_out, Counting(), MultiviewOptions(voxel_m=0.05))
    for p in job.photos:
        job.load(p)
    assert len(runs) == 3 and len(list(cache.cache_dir_for(model_out).glob("*.npz"))) == 3
    other = _room(tmp_path / "other", [ROOM_VIEWS[3].name], size=(320, 240))
    shutil.copy(other / f"{ROOM_VIEWS[3].name}.jpg", folder / f"{names[2]}.jpg")  # one photo changed
    job = MultiviewJob(folder, model_out, Counting(), MultiviewOptions(voxel_m=0.05))
    for p in job.photos:
        job.load(p)
    assert len(runs) == 4


def test_json_field_names_are_the_same_across_commands(
    tmp_path: Path, stand_in, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metrocli.synth.multiview import ROOM_VIEWS

    monkeypatch.setenv("METRO_CACHE_DIR", str(tmp_path / "cache"))
    folder = _room(tmp_path / "in", [ROOM_VIEWS[0].name])
    photo = folder / f"{ROOM_VIEWS[0].name}.jpg"
    common = {"photo", "focal_px", "focal_source", "outputs", "warnings"}
    depth = _records(_depth(str(photo), "-o", str(tmp_path / "d")))[0]
    assert common <= set(depth) and depth["outputs"] == list(depth["files"].values())
    info = json.loads(CliRunner().invoke(cli, ["info", "--json", str(photo)]).stdout)
    assert {"photo", "focal_px", "focal_source"} <= set(info) and info["photo"] == str(photo)
    args = [str(folder), "-o", str(tmp_path / "m"), "--separate", "--depth-dir", str(folder)]
    separate = _reconstruct(capsys, *args)[1][0]
    assert {"photo", "focal_px", "focal_source", "outputs"} <= set(separate)


def test_eval_depth_scale_overrides_the_ground_truth_units(
    shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metrocli.evaluation.dataset import load_dataset, load_depth_gt
    from metrocli.pipeline.evaluate import EvalOptions, evaluate_dataset
    from metrocli.prediction import Prediction

    nyu = shared_dir / "datasets" / "metric3d-demo" / "nyu_demo"
    if not (nyu / "test_annotations.json").is_file():
        pytest.skip("metric3d-demo datasets are not present")
    truth = {s.rgb.name: load_depth_gt(s) for s in load_dataset(nyu).samples[:1]}

    def oracle(rgb: np.ndarray, intrinsics: Any) -> Prediction:
        depth = next(iter(truth.values()))
        return Prediction(depth, None, np.ones_like(depth), None, intrinsics, "oracle")

    from metrocli.cli.common import setup_logging

    setup_logging(0)  # as `metro eval` does: warnings on stderr
    exact = evaluate_dataset(nyu, EvalOptions(limit=1), predict=oracle, progress=False)
    assert exact.mean_depth["abs_rel"] < 1e-6 and "implausible" not in capsys.readouterr().err
    # the same PNGs read as 10 µm units: a hundred times nearer, flagged before any prediction
    wrong = evaluate_dataset(nyu, EvalOptions(limit=1, depth_scale=1e-5), predict=oracle, progress=False)
    assert wrong.mean_depth["abs_rel"] > 50 and "implausible" in capsys.readouterr().err


def test_no_command_writes_over_its_inputs(
    tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metrocli.synth.multiview import ROOM_VIEWS

    name = ROOM_VIEWS[0].name
    folder = _room(tmp_path / "in", [name])
    photo, depth = folder / f"{name}.jpg", folder / f"{name}.depth.png"
    before = _hashes(folder)
    line = ["--line", "10,10,50,40"]
    for args in (
        ["measure", str(photo), "--depth", str(depth), *line, "--annotate", str(photo)],
        [
            "measure",
            str(photo),
            "--depth",
            str(depth),
            *line,
            "--annotate",
            f"{folder}/../in/{name}.depth.png",
        ],
        ["reconstruct", str(photo), "--depth", str(depth), "-o", str(depth)],
        ["reconstruct", str(photo), "-o", str(photo)],
    ):
        assert run_cli(cli, args) == 2, args
        err = capsys.readouterr().err
        assert "never writes over an input" in err and err.count("\n") == 1
    assert _hashes(folder) == before
    nyu = shared_dir / "datasets" / "metric3d-demo" / "nyu_demo"
    if (nyu / "test_annotations.json").is_file():
        dataset = tmp_path / "nyu"
        shutil.copytree(nyu, dataset)
        before = _hashes(dataset)
        assert run_cli(cli, ["eval", str(dataset), "-o", str(dataset / "test_annotations.json")]) == 2
        assert "never writes over an input" in capsys.readouterr().err
        assert _hashes(dataset) == before


def test_separate_recursive_tree_with_same_stems_and_the_output_inside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metrocli.synth.multiview import ROOM_VIEWS

    monkeypatch.setenv("METRO_CACHE_DIR", str(tmp_path / "cache"))
    name = ROOM_VIEWS[0].name
    tree = tmp_path / "tree"
    _room(tree / "sa", [name])
    _room(tree / "sb", [name])
    out = tree / "meshes"  # the output folder inside the tree is never read as input
    args = [str(tree), "-o", str(out), "--separate", "--recursive", "--points-only", "--focal-px", "120"]
    code, recs, err = _reconstruct(capsys, *args, "--depth-dir", str(tree / "sa"))
    assert code == 0, err
    outputs = sorted(Path(r["output"]).name for r in recs)
    assert len(outputs) == 2 and outputs[0] != outputs[1] and all(o.startswith(f"{name}-") for o in outputs)
    code, recs, err = _reconstruct(capsys, *args, "--depth-dir", str(tree / "sa"))
    assert [r["skipped"] for r in recs] == [True, True] and len(recs) == 2
    assert run_cli(cli, ["reconstruct", str(tree), "-o", str(tmp_path / "s.ply"), "--recursive"]) == 2
