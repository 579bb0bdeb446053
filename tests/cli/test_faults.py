"""Faults and odd input (#21, #22): outputs checked before any work, every write checked end to end, signals,
odd numbers and odd names. Each case runs on real files (a character device from mknod, a file-size limit for
a full disk, real signals to real ``python -m metrocli.cli.main`` processes)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrocli.cli.common import one_line, run_cli
from metrocli.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
MISSING_WEIGHTS = "/nonexistent/metro-weights.pth"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def metro(*args: str | Path, cwd: Path | None = None, **popen) -> subprocess.CompletedProcess[str]:
    """Run ``python -m metrocli.cli.main ARGS`` in a real subprocess."""
    cmd = [sys.executable, "-m", "metrocli.cli.main", *map(os.fsdecode, args)]
    env = popen.pop("env", _env())
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300, **popen)


@pytest.fixture()
def scene(tmp_path: Path) -> dict[str, Path]:
    """A small photo (PNG, no EXIF) with a sensor depth map: a slanted plane 1.5-2.5 m away."""
    rng = np.random.default_rng(0)
    h, w = 48, 64
    photo = tmp_path / "in" / "photo.png"
    photo.parent.mkdir()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photo)
    depth = tmp_path / "in" / "photo.depth.npy"
    np.save(depth, np.linspace(1.5, 2.5, w, dtype=np.float32)[None, :].repeat(h, axis=0))
    return {"photo": photo, "depth": depth, "root": tmp_path}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(("metro: error:", "Error:"))]


# ------------------------------------------------------------------------------------- outputs checked first
def _bad_outputs(scene: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """(id, argv, expected words) of outputs that must be refused before any work, as usage errors."""
    root, photo, depth = scene["root"], scene["photo"], scene["depth"]
    (root / "dir.ply").mkdir()
    (root / "scenes").mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(photo, root / "scenes" / name)
    (root / "scenes" / "samples.json").write_text('{"mine": true}\n')
    os.mknod(root / "dev.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.link(photo, root / "hardlink.png")
    os.link(depth, root / "depth-link.ply")  # the sensor depth map under another name
    (root / "afile").write_text("x")
    measure = ["measure", str(photo), "--depth", str(depth), "--line", "1,1,30,30"]
    recon = ["reconstruct", str(photo), "--depth", str(depth), "--focal-px", "60"]
    weights = ["--weights", MISSING_WEIGHTS]
    return [
        ("annotate-onto-photo", [*measure, "--annotate", str(photo)], "input"),
        ("annotate-onto-hardlink", [*measure, "--annotate", str(root / "hardlink.png")], "input"),
        ("annotate-not-png", [*measure, "--annotate", str(root / "x.jpg")], ".png"),
        ("annotate-char-device", [*measure, "--annotate", str(root / "dev.png")], "device"),
        ("annotate-under-file", [*measure, "--annotate", str(root / "afile" / "x.png")], "not a folder"),
        ("reconstruct-onto-dir", [*recon, "-o", str(root / "dir.ply")], "folder"),
        ("reconstruct-onto-depth-by-inode", [*recon, "-o", str(root / "depth-link.ply")], "input"),
        ("reconstruct-onto-device", [*recon, "-o", str(root / "dev.png")], ".ply"),
        (
            "reconstruct-folder-foreign-json",
            ["reconstruct", str(root / "scenes"), "-o", str(root / "scenes" / "samples.ply"), *weights],
            "samples.json",
        ),
        ("depth-out-is-file", ["depth", str(photo), "-o", str(root / "afile" / "sub"), *weights], "folder"),
        (
            "separate-out-is-file",
            ["reconstruct", str(photo), "--separate", "-o", str(root / "afile"), "--depth", str(depth)],
            "folder",
        ),
    ]


def test_bad_outputs_are_one_usage_error_before_any_work(
    scene: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _bad_outputs(scene)
    before = _files(scene["root"])
    photo_bytes = scene["photo"].read_bytes()
    json_bytes = (scene["root"] / "scenes" / "samples.json").read_bytes()
    for case_id, argv, words in cases:
        code = run_cli(cli, argv)
        err = capsys.readouterr().err
        lines = _error_lines(err)
        assert code == 2, (case_id, code, err)
        assert len(lines) == 1 and "unexpected" not in err, (case_id, err)
        assert words in lines[0], (case_id, lines[0])
        assert _files(scene["root"]) == before, case_id
    assert scene["photo"].read_bytes() == photo_bytes
    assert (scene["root"] / "scenes" / "samples.json").read_bytes() == json_bytes
    assert stat.S_ISCHR(os.lstat(scene["root"] / "dev.png").st_mode)


@pytest.mark.slow
def test_eval_output_onto_its_annotations_is_refused(
    shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = shared_dir / "datasets" / "metric3d-demo" / "nyu_demo"
    if not src.is_dir():
        pytest.skip("metric3d-demo is not present")
    ds = tmp_path / "nyu_demo"
    shutil.copytree(src, ds)
    ann = (ds / "test_annotations.json").read_bytes()
    frame = next((ds / "rgb").iterdir())
    for target in (ds / "test_annotations.json", frame):
        code = run_cli(cli, ["eval", str(ds), "--weights", MISSING_WEIGHTS, "-o", str(target)])
        err = capsys.readouterr().err
        assert code == 2 and "input" in err and len(_error_lines(err)) == 1, err
    assert (ds / "test_annotations.json").read_bytes() == ann
    # an acceptable output passes the check and the run fails later, on the missing weights (exit 1)
    assert run_cli(cli, ["eval", str(ds), "--weights", MISSING_WEIGHTS, "-o", str(tmp_path / "r.json")]) == 1


def test_our_scene_json_may_be_replaced(tmp_path: Path) -> None:
    from metrocli.pipeline.outputs import check_sibling, is_scene_json

    sibling = tmp_path / "scene.json"
    sibling.write_text(json.dumps({"version": 1, "mesh": "scene.ply", "photos": []}))
    assert is_scene_json(sibling, "scene.ply") and not is_scene_json(sibling, "other.ply")
    assert check_sibling(sibling, ours=True, owner=tmp_path / "scene.ply") == sibling


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_read_only_output_folder_fails_before_the_model(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        photo = tmp_path / "p.png"
        Image.new("RGB", (16, 12)).save(photo)
        res = metro("depth", photo, "-o", ro / "out", "--weights", MISSING_WEIGHTS)
        assert res.returncode == 2 and "read-only file system" in res.stderr, res.stderr
        assert len(_error_lines(res.stderr)) == 1
    finally:
        subprocess.run(["umount", str(ro)])


# --------------------------------------------------------------------------------- every write checked
def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("suffix", [".ply", pytest.param(".obj", marks=pytest.mark.slow)])
def test_full_disk_is_one_line_exit_1_and_no_file(scene: dict[str, Path], suffix: str) -> None:
    out = scene["root"] / "out" / f"mesh{suffix}"
    res = metro(
        "reconstruct",
        scene["photo"],
        "--depth",
        scene["depth"],
        "--focal-px",
        "60",
        "-o",
        out,
        preexec_fn=_limit_file_size(20_000),
    )
    assert res.returncode == 1, res.stderr
    assert "RPly" not in res.stderr and "unexpected" not in res.stderr
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and "file too large" in lines[0] and str(out) in lines[0], res.stderr
    assert list(out.parent.iterdir()) == []  # neither the mesh nor a temporary
    # without the limit the same command succeeds, and the PLY matches its header
    assert (
        metro(
            "reconstruct", scene["photo"], "--depth", scene["depth"], "--focal-px", "60", "-o", out
        ).returncode
        == 0
    )
    if suffix == ".ply":
        from metrocli.io.geometry_io import ply_expected_bytes

        assert ply_expected_bytes(out) == out.stat().st_size


@pytest.mark.slow
def test_full_disk_in_depth_maps(scene: dict[str, Path], seeded_weights) -> None:
    out = scene["root"] / "maps"
    weights = seeded_weights("vit-small")
    res = metro(
        "depth",
        scene["photo"],
        "-o",
        out,
        "--weights",
        weights,
        "--device",
        "cpu",
        "--focal-px",
        "60",
        preexec_fn=_limit_file_size(3_000),
    )
    assert res.returncode == 1 and "unexpected" not in res.stderr, res.stderr
    assert any("file too large" in line for line in _error_lines(res.stderr)), res.stderr
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_non_finite_positions_are_never_written(tmp_path: Path) -> None:
    from metrocli.errors import ReconstructionError
    from metrocli.geometry.pointcloud import PointCloud
    from metrocli.io.geometry_io import write_point_cloud

    points = np.ones((10, 3), np.float32)
    points[3] = np.inf
    with pytest.raises(ReconstructionError, match="1 of 10 points are not finite"):
        write_point_cloud(tmp_path / "c.ply", PointCloud(points))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------- signals
@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["TERM", "HUP"])
def test_signal_mid_write_removes_temps(tmp_path: Path, sig: int, code: int) -> None:
    # a big enough mesh that its write takes a while: the signal lands while the temporary exists
    h, w = 960, 1280
    photo = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photo)
    depth = tmp_path / "big.npy"
    np.save(depth, np.full((h, w), 2.0, np.float32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    stale = out_dir / ".mesh.metro-4194999-deadbeef.tmp.ply"  # left by a killed run (no such pid)
    stale.write_bytes(b"partial")
    cmd = [
        sys.executable,
        "-m",
        "metrocli.cli.main",
        "reconstruct",
        str(photo),
        "--depth",
        str(depth),
        "--focal-px",
        "900",
        "-o",
        str(out_dir / "mesh.ply"),
    ]
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    saw_temp = False
    while time.monotonic() < deadline and proc.poll() is None:
        temps = [p for p in out_dir.iterdir() if ".tmp" in p.name and p != stale]
        if temps:
            saw_temp = True
            break
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert saw_temp, "the run finished before its output was being written"
    mesh = out_dir / "mesh.ply"
    if mesh.exists() and proc.returncode == 0:
        # the signal lost the race against the rename and the exit: the output is then complete
        from metrocli.io.geometry_io import ply_expected_bytes

        assert ply_expected_bytes(mesh) == mesh.stat().st_size
        assert list(out_dir.iterdir()) == [mesh]
        return
    assert proc.returncode == code, err
    assert len(_error_lines(err)) == 1 and f"stopped by {signal.Signals(sig).name}" in err, err
    # no temporary and the stale one is gone; the mesh only if it was complete before the signal
    assert [p for p in out_dir.iterdir() if p != mesh] == []
    if mesh.exists():
        from metrocli.io.geometry_io import ply_expected_bytes

        assert ply_expected_bytes(mesh) == mesh.stat().st_size


def test_sigterm_during_work_exits_143(scene: dict[str, Path]) -> None:
    # a real process stopped while it is starting its work: exit 143, one line
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time, signal, sys\n"
            "from metrocli.cli.common import run_cli\n"
            "import click\n"
            "@click.command()\n"
            "def slow():\n"
            "    print('ready', flush=True)\n"
            "    time.sleep(60)\n"
            "sys.exit(run_cli(slow, []))\n",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().endswith("metro: error: stopped by SIGTERM"), err


@pytest.mark.slow
def test_stale_temps_of_killed_runs_are_removed_before_a_run(scene: dict[str, Path]) -> None:
    out_dir = scene["root"] / "sep"
    out_dir.mkdir()
    stale = out_dir / ".photo.metro-4194999-x1y2z3ab.tmp.ply"
    stale.write_bytes(b"partial")
    res = metro(
        "reconstruct",
        scene["photo"],
        "--separate",
        "--depth",
        scene["depth"],
        "--focal-px",
        "60",
        "-o",
        out_dir,
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["photo.ply"]


# --------------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    "option",
    [
        ["--focal-px", "1e-308"],
        ["--focal-px", "5e-324"],
        ["--focal-px", "1e7"],
        ["--focal-px", "nan"],
        ["--fov", "179.9999999"],
        ["--fov", "0.5"],
        ["--fov", "inf"],
        ["--threads", "100000"],
        ["--threads", "99999999999999999999"],
        ["--threads", "0"],
    ],
    ids=lambda o: "=".join(o),
)
def test_out_of_range_numbers_are_usage_errors(
    scene: dict[str, Path], option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "depth",
        str(scene["photo"]),
        "-o",
        str(scene["root"] / "o"),
        "--weights",
        MISSING_WEIGHTS,
        *option,
    ]
    assert run_cli(cli, argv) == 2
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "unexpected" not in err, err
    assert not (scene["root"] / "o").exists()


def test_json_nulls_for_non_finite_values_come_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from metrocli.pipeline.jsonsafe import json_ready

    with caplog.at_level("WARNING", logger="metrocli"):
        assert json_ready({"a": [1.0, float("inf")], "b": np.float32("nan")}) == {"a": [1.0, None], "b": None}
    assert "a[1], b" in caplog.text
    assert json.dumps(json_ready({"x": float("-inf")}, warn=False), allow_nan=False) == '{"x": null}'


# ----------------------------------------------------------------------------------------------------- names
def test_one_line_escapes_control_characters_and_odd_bytes() -> None:
    assert one_line("a\nb\tc\x1b[31m") == "a\\nb\\tc\\x1b[31m"
    assert one_line(os.fsdecode(b"bad\xff\xfe.jpg")) == "bad\\xff\\xfe.jpg"
    assert one_line("café 測") == "café 測"


@pytest.mark.slow
def test_odd_file_names_end_to_end(scene: dict[str, Path]) -> None:
    d = scene["root"] / "names"
    d.mkdir()
    odd = os.fsdecode(b"bad\xff\xfename.png")
    shutil.copy(scene["photo"], d / odd)
    newline = d / "new\nline.png"
    newline.write_bytes(b"not an image")
    line = ["--depth", str(scene["depth"]), "--focal-px", "60", "--line", "1,1,30,30"]
    for env in (_env(), _env(PYTHONIOENCODING="utf-8")):
        res = metro("measure", d / odd, *line, "--json", env=env)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["image"].endswith("name.png")
        res = metro("measure", d / odd, *line, "--annotate", d / (odd + ".out.png"), env=env)
        assert res.returncode == 0 and (d / (odd + ".out.png")).is_file(), res.stderr
    res = metro("measure", newline, "--depth", scene["depth"], "--focal-px", "60", "--line", "1,1,3,3")
    assert res.returncode in (1, 2)
    assert len(res.stderr.strip().splitlines()) == 1 and "new\\nline.png" in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------------- images
@pytest.mark.slow
def test_truncated_heic_and_jpeg_are_reported(exif_samples: Path, tmp_path: Path) -> None:
    heic = next(exif_samples.rglob("IMG_5195.HEIC"), None)
    if heic is None:
        pytest.skip("IMG_5195.HEIC is not present")
    cut = tmp_path / "cut.HEIC"
    cut.write_bytes(heic.read_bytes()[:416642])
    res = metro("info", cut)
    assert res.returncode == 1 and "truncated" in res.stderr and len(_error_lines(res.stderr)) == 1, (
        res.stderr
    )
    assert metro("info", heic).returncode == 0
    jpg = tmp_path / "cut.jpg"
    buf = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(buf)
    jpg.write_bytes(buf.read_bytes()[: buf.stat().st_size // 2])
    res = metro("info", jpg)
    assert res.returncode == 1 and len(_error_lines(res.stderr)) == 1, res.stderr


def test_eval_reports_an_oversized_frame_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import metrocli.camera.image as image
    from metrocli.pipeline.evaluate import EvalOptions, evaluate_dataset
    from metrocli.prediction import Prediction

    files = []
    for k, (h, w) in enumerate([(24, 32), (60, 80), (24, 32)]):
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(tmp_path / f"rgb{k}.png")
        Image.fromarray(np.full((h, w), 2000, np.uint16)).save(tmp_path / f"d{k}.png")
        files.append(
            {
                "rgb": f"rgb{k}.png",
                "depth": f"d{k}.png",
                "depth_scale": 1000.0,
                "cam_in": [30.0, 30.0, w / 2, h / 2],
            }
        )
    (tmp_path / "test_annotations.json").write_text(json.dumps({"files": files}))
    monkeypatch.setattr(image, "MAX_PIXELS", 2000)

    def predict(rgb: np.ndarray, intrinsics):  # exact depth
        depth = np.full(rgb.shape[:2], 2.0, np.float32)
        return Prediction(depth, None, np.ones_like(depth), None, intrinsics, "oracle")

    report = evaluate_dataset(tmp_path, EvalOptions(), predict=predict, progress=False)
    assert [s.name for s in report.samples] == ["rgb0.png", "rgb2.png"]
    assert [n for n, _ in report.failed] == ["rgb1.png"] and "limit" in report.failed[0][1]


# ------------------------------------------------------------------------------------ commands x bad inputs
def _bomb_png(path: Path) -> None:
    """A tiny PNG whose header claims 100000 x 100000 pixels."""
    import struct
    import zlib

    buf = path.with_suffix(".tmp.png")
    Image.new("L", (1, 1)).save(buf)
    data = bytearray(buf.read_bytes())
    buf.unlink()
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", 100_000, 100_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


def _bad_inputs(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir()
    bad = {
        "empty": folder / "empty.jpg",
        "text": folder / "text.jpg",
        "truncated": folder / "cut.jpg",
        "missing": folder / "missing.jpg",
        "bomb": folder / "bomb.png",
        "odd-name": folder / os.fsdecode(b"odd\xff\n.jpg"),
        "folder": folder / "folder.jpg",
    }
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("hello, not a photo\n")
    full = folder / "full.tmp.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    bad["truncated"].write_bytes(full.read_bytes()[:600])
    full.unlink()
    _bomb_png(bad["bomb"])
    bad["odd-name"].write_bytes(b"\x00garbage")
    bad["folder"].mkdir()
    return bad


def test_fuzz_commands_cross_bad_inputs(scene: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command x every bad photo: exit 1 or 2, exactly one message line naming the failure, never an
    "unexpected" error class, and no file created anywhere (the --separate output folder may be)."""
    root = scene["root"]
    bad = _bad_inputs(root / "bad", scene["photo"])
    out = root / "out"
    sensor = ["--depth", str(scene["depth"]), "--focal-px", "60"]
    commands = {
        "info": lambda x: ["info", x],
        "measure": lambda x: ["measure", x, *sensor, "--line", "1,1,3,3"],
        "reconstruct": lambda x: ["reconstruct", x, *sensor, "-o", str(out / "m.ply")],
        "separate": lambda x: ["reconstruct", x, "--separate", *sensor, "-o", str(out / "sep")],
    }
    before = _files(root)
    for cmd_name, argv_of in commands.items():
        for bad_name, path in bad.items():
            if bad_name == "folder" and cmd_name in ("reconstruct", "separate"):
                continue  # a folder is a valid INPUT of reconstruct
            code = run_cli(cli, argv_of(str(path)))
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if line.strip()]
            where = (cmd_name, bad_name, err)
            assert code in (1, 2), where
            assert len(_error_lines(err)) == 1 and "unexpected" not in err, where
            assert len([line for line in lines if "error" in line.lower()]) == 1, where
            new = _files(root) - before
            assert all(p.is_dir() and p in (out, out / "sep") for p in new), where  # at most the -o folder


def test_depth_without_any_valid_model_depth_is_an_error(scene: dict[str, Path]) -> None:
    from dataclasses import replace

    from metrocli.errors import MetroError
    from metrocli.pipeline.depth import DepthRunner
    from metrocli.pipeline.provider import FocalMode, SensorDepth

    class NaNModel:  # a model whose output is NaN everywhere (what overflowing weights give)
        def __init__(self) -> None:
            self.inner = SensorDepth(scene["depth"], None, FocalMode(60.0))
            self.focal = self.inner.focal

        def key(self) -> dict:
            return self.inner.key()

        def prepare(self) -> None:
            pass

        def provide(self, photo):
            d = self.inner.provide(photo)
            nan = np.full_like(d.depth_m, np.nan)
            return replace(d, source="model", depth_m=nan, confidence=np.ones_like(nan))

    out = scene["root"] / "maps"
    with pytest.raises(MetroError, match="no valid depth"):
        DepthRunner(NaNModel(), out).run(scene["photo"])  # type: ignore[arg-type]
    assert not out.exists() or list(out.iterdir()) == []


def test_fuzz_commands_cross_bad_depth_maps(
    scene: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """measure and reconstruct x bad sensor depth maps: exit 1 or 2, one line, nothing written."""
    root = scene["root"]
    folder = root / "baddepth"
    folder.mkdir()
    bad = {
        "bomb": folder / "bomb.png",
        "text": folder / "text.png",
        "empty": folder / "empty.npy",
        "pickle": folder / "obj.npy",
        "rgb": folder / "rgb.png",
        "missing": folder / "missing.npy",
    }
    _bomb_png(bad["bomb"])
    bad["text"].write_text("not a depth map")
    bad["empty"].write_bytes(b"")
    np.save(bad["pickle"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    Image.new("RGB", (64, 48)).save(bad["rgb"])
    photo = str(scene["photo"])
    commands = {
        "measure": lambda d: ["measure", photo, "--depth", d, "--focal-px", "60", "--line", "1,1,3,3"],
        "reconstruct": lambda d: [
            "reconstruct",
            photo,
            "--depth",
            d,
            "--focal-px",
            "60",
            "-o",
            str(root / "m.ply"),
        ],
    }
    before = _files(root)
    for cmd_name, argv_of in commands.items():
        for bad_name, path in bad.items():
            code = run_cli(cli, argv_of(str(path)))
            err = capsys.readouterr().err
            where = (cmd_name, bad_name, err)
            assert code in (1, 2), where
            assert len(_error_lines(err)) == 1 and "unexpected" not in err, where
            assert _files(root) == before, where


@pytest.mark.parametrize(
    "argv",
    [
        ["measure", "{photo}", "--depth", "{depth}", "--line", "1,1,3,3", "--depth-scale", "1e300"],
        ["measure", "{photo}", "--depth", "{depth}", "--line", "1,1,3,3", "--depth-scale", "nan"],
        ["eval", "{root}", "--weights", MISSING_WEIGHTS, "--max-depth", "inf"],
        ["eval", "{root}", "--weights", MISSING_WEIGHTS, "--min-depth", "nan"],
    ],
    ids=["depth-scale-huge", "depth-scale-nan", "max-depth-inf", "min-depth-nan"],
)
def test_other_float_options_are_range_checked(
    scene: dict[str, Path], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(photo=scene["photo"], depth=scene["depth"], root=scene["root"]) for a in argv]
    assert run_cli(cli, argv) == 2
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "unexpected" not in err and "from" in err, err


def test_batch_lines_stay_one_line_per_item(capsys: pytest.CaptureFixture[str]) -> None:
    from metrocli.cli.common import BatchFailed, BatchReport

    report = BatchReport(what="photo")
    report.ok("good.jpg")
    report.fail("new\nline.jpg", "cannot decode")
    report.fail(os.fsdecode(b"odd\xff.jpg"), "empty")
    with pytest.raises(BatchFailed):
        report.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "metro: error: new\\nline.jpg: cannot decode",
        "metro: error: odd\\xff.jpg: empty",
        "1 of 3 photos succeeded; failed: new\\nline.jpg, odd\\xff.jpg",
    ]
