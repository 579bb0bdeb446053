"""`metro measure` end to end with CliRunner on rendered phone photos (real JPEG + EXIF, depth maps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import metrocli.synth as synth
import metrocli.synth.samples as samples
from metrocli.cli.common import run_cli
from metrocli.cli.main import cli


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 320 x 240 room photo (stored upright) and one stored rotated (orientation 6), with depth maps."""
    out = tmp_path_factory.mktemp("measure")
    scene = synth.room_scene()
    view = synth.render(
        scene, synth.intrinsics_for_lens(320, 240, 26.0), synth.look_at((1.0, 0.45, 1.55), (2.0, 2.9, 0.65))
    )
    upright = samples.write_sample(view, out / "room.jpg")
    rotated = samples.write_sample(view, out / "room_rot.jpg", orientation=6)
    np.save(out / "room.depth.npy", view.depth_m)  # displayed orientation, metres
    lines = samples.table_measurements(scene, view, inset_m=0.03)
    assert len(lines) == 2
    return {
        "photo": upright.photo,
        "png": upright.depth,
        "npy": out / "room.depth.npy",
        "rotated": rotated.photo,
        "rotated_png": rotated.depth,
        "lines": lines,
        "args": [
            a for line in lines for a in ("--line", ",".join(map(str, line["from_px"] + line["to_px"])))
        ],
    }


def invoke(*args: str | Path):
    return CliRunner().invoke(cli, ["measure", *map(str, args)])


def test_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for opt in (
        "--line",
        "--depth",
        "--depth-scale",
        "--focal-px",
        "--fov",
        "--model",
        "--weights",
        "--json",
    ):
        assert opt in result.output
    assert "--annotate" in result.output and "U1,V1,U2,V2" in result.output


def test_table_output(room: dict) -> None:
    result = invoke(room["photo"], "--depth", room["png"], *room["args"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "exif-focal-plane" in out and "sensor" in out
    assert "1.140" in out and "114.0" in out  # table length: metres and centimetres
    assert "0.740" in out and "74.0" in out  # table width
    assert "distance (m)" in out and "±" in out


def test_units(room: dict) -> None:
    result = invoke(room["photo"], "--depth", room["png"], "--units", "in", *room["args"])
    assert result.exit_code == 0, result.output
    assert "distance (in)" in result.output and "44.9" in result.output  # 1.140 m = 44.88 in
    result = invoke(room["photo"], "--depth", room["png"], "--units", "ft", "--json", *room["args"])
    obj = json.loads(result.output)
    assert obj["unit"] == "ft"
    for m in obj["measurements"]:
        assert m["distance"] == pytest.approx(m["distance_m"] / 0.3048)
        assert m["uncertainty"] == pytest.approx(m["uncertainty_m"] / 0.3048)
    assert invoke(room["photo"], "--depth", room["png"], "--units", "yd", *room["args"]).exit_code == 2


def test_intrinsics_and_camera_file(room: dict, tmp_path: Path) -> None:
    from PIL import Image

    base = json.loads(invoke(room["photo"], "--depth", room["png"], "--json", *room["args"]).output)
    w, h = Image.open(room["photo"]).size  # stored upright (orientation 1)
    f = base["focal_px"]
    args = ["--depth", room["png"], "--json", *room["args"]]
    same = json.loads(invoke(room["photo"], *args, "--intrinsics", f"{f},{f},{w / 2},{h / 2}").output)
    assert same["focal_source"] == "user"
    for a, b in zip(same["measurements"], base["measurements"], strict=True):
        assert a["from_m"] == pytest.approx(b["from_m"]) and a["distance_m"] == pytest.approx(b["distance_m"])
    shifted = json.loads(invoke(room["photo"], *args, "--intrinsics", f"{f},{f},{w / 2 + 40},{h / 2}").output)
    assert shifted["measurements"][0]["from_m"][0] != pytest.approx(base["measurements"][0]["from_m"][0])
    cameras = tmp_path / "cameras.txt"
    cameras.write_text(f"1 PINHOLE {w} {h} {f} {f} {w / 2 + 40} {h / 2}\n")
    from_file = json.loads(invoke(room["photo"], *args, "--camera", str(cameras)).output)
    assert from_file["measurements"] == shifted["measurements"]
    both = invoke(room["photo"], *args, "--camera", str(cameras), "--intrinsics", "1,1,1,1")
    assert both.exit_code == 2 and "not both" in both.output
    assert invoke(room["photo"], *args, "--intrinsics", "1,2,3").exit_code == 2


def test_json_schema_and_values(room: dict, tmp_path: Path) -> None:
    result = invoke(room["photo"], "--depth", room["png"], "--json", *room["args"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1  # exactly one object
    obj = json.loads(lines[0])
    # issue 15: the focal length's sigma, the depth source, the error model and the warnings
    assert set(obj) == {
        "image",
        "focal_px",
        "focal_source",
        "focal_sigma_px",
        "depth_source",
        "error_model",
        "warnings",
        "measurements",
        "failed",
    }
    assert obj["failed"] == []
    assert obj["image"] == str(room["photo"]) and obj["focal_source"] == "exif-focal-plane"
    assert obj["depth_source"] == "sensor" and obj["warnings"] == []
    assert 0 < obj["focal_sigma_px"] < 0.01 * obj["focal_px"]
    assert len(obj["measurements"]) == 2
    for m, truth in zip(obj["measurements"], room["lines"], strict=True):
        assert set(m) == {
            "from_px",
            "to_px",
            "from_m",
            "to_m",
            "distance_m",
            "uncertainty_m",
            "sigma_m",
            "contributors",
        }
        assert m["sigma_m"] == m["uncertainty_m"]
        assert set(m["contributors"]) <= {"focal", "quantisation", "picking"}
        assert m["from_px"] == truth["from_px"] and m["to_px"] == truth["to_px"]
        assert len(m["from_m"]) == 3 and len(m["to_m"]) == 3
        assert m["distance_m"] == pytest.approx(truth["true_m"], rel=0.005)
        assert m["distance_m"] == pytest.approx(np.linalg.norm(np.subtract(m["from_m"], m["to_m"])))
        # the EXIF focal length (0.5 %), 1 mm quantisation and half-pixel picking, which dominates on this
        # 320 x 240 photo (a pixel is ~2 cm along the grazing table top); millimetres at full size
        assert 0 < m["uncertainty_m"] < 0.03
        assert m["contributors"]["picking"] > m["contributors"]["quantisation"]
        assert abs(m["distance_m"] - truth["true_m"]) <= 2 * m["uncertainty_m"]


def test_depth_formats_and_stored_orientation(room: dict) -> None:
    truths = [line["true_m"] for line in room["lines"]]
    for photo, depth in (
        (room["photo"], room["npy"]),  # .npy metres, displayed size
        (room["rotated"], room["rotated_png"]),  # 16-bit mm PNG in the stored (rotated) layout
        (room["rotated"], room["npy"]),  # a displayed-size map of the rotated photo
    ):
        result = invoke(photo, "--depth", depth, "--json", *room["args"])
        assert result.exit_code == 0, result.output
        got = [m["distance_m"] for m in json.loads(result.output)["measurements"]]
        np.testing.assert_allclose(got, truths, rtol=0.005)
    # --depth-scale: the same PNG read as 2 mm units doubles every distance
    result = invoke(room["photo"], "--depth", room["png"], "--depth-scale", "0.002", "--json", *room["args"])
    got = [m["distance_m"] for m in json.loads(result.output)["measurements"]]
    np.testing.assert_allclose(got, np.multiply(truths, 2), rtol=0.005)


def test_focal_override_changes_the_result(room: dict) -> None:
    result = invoke(room["photo"], "--depth", room["png"], "--focal-px", "500", "--json", *room["args"])
    obj = json.loads(result.output)
    assert obj["focal_px"] == 500 and obj["focal_source"] == "user"
    assert obj["measurements"][0]["distance_m"] < 0.9 * room["lines"][0]["true_m"]


def test_annotate_writes_a_png(room: dict, tmp_path: Path) -> None:
    out = tmp_path / "shared" / "room-measured.png"
    result = invoke(room["photo"], "--depth", room["png"], "--annotate", out, *room["args"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (320, 240)
        photo = np.asarray(Image.open(room["photo"]).convert("RGB"), dtype=int)
        assert np.abs(np.asarray(img.convert("RGB"), dtype=int) - photo).sum(axis=2).max() > 200
    assert [p.name for p in out.parent.iterdir()] == ["room-measured.png"]


def test_errors(room: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo, png = str(room["photo"]), str(room["png"])

    def run(*args: str) -> tuple[int, str]:
        code = run_cli(cli, ["measure", *args])
        return code, capsys.readouterr().err

    code, err = run(photo, "--depth", png, "--line", "10,10,400,20")
    assert code == 2 and "end point of line 1 (400, 20) is outside the 320x240 image" in err
    code, err = run(photo, "--depth", png, "--line", "10,10,20")
    assert code == 2 and "'10,10,20' is not four numbers" in err
    code, err = run(photo, "--depth", png, "--line", "a,b,c,d")
    assert code == 2 and "not four numbers" in err
    code, err = run(photo, "--depth", png, "--line", "nan,1,2,3")
    assert code == 2
    # invalid depth: a map with a hole
    depth = np.load(room["npy"])
    depth[:50, :50] = 0
    holed = tmp_path / "holed.npy"
    np.save(holed, depth)
    code, err = run(photo, "--depth", str(holed), "--line", "10,10,200,200")
    assert code == 1 and "start point of line 1 (10, 10) has no valid depth" in err
    # a depth map of the wrong size
    np.save(tmp_path / "small.npy", np.ones((10, 10), np.float32))
    code, err = run(photo, "--depth", str(tmp_path / "small.npy"), "--line", "10,10,20,20")
    assert code == 1 and "small.npy: depth map is 10x10" in err
    # a missing photo, and --focal-px with --fov
    code, err = run(str(tmp_path / "nope.jpg"), "--depth", png, "--line", "1,1,2,2")
    assert code == 1 and "nope.jpg" in err
    code, err = run(photo, "--focal-px", "300", "--fov", "60", "--line", "1,1,2,2")
    assert code == 2
    code, err = run(photo, "--depth", png, "--depth-scale", "-1", "--line", "1,1,2,2")
    assert code == 2
    for err_text in (err,):
        assert "Traceback" not in err_text


def test_no_line_and_no_display_is_a_usage_error(room: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = invoke(room["photo"], "--depth", room["png"])
    assert result.exit_code == 2
    assert "--line" in result.output and "display" in result.output


def test_picker_without_a_usable_display_is_a_usage_error(
    room: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $DISPLAY is set but no X server answers there: the picker cannot open, a clean usage error follows
    pytest.importorskip("tkinter")
    monkeypatch.setenv("DISPLAY", ":97")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = invoke(room["photo"], "--depth", room["png"])
    assert result.exit_code == 2, result.output
    assert "picker" in result.output and "--line" in result.output


@pytest.mark.slow
def test_model_path_with_seeded_weights(room: dict, seeded_weights, tmp_path: Path) -> None:
    weights = seeded_weights("vit-small")
    out = tmp_path / "a.png"
    result = invoke(
        room["photo"], "--weights", weights, "--device", "cpu", "--json", "--annotate", out, *room["args"]
    )
    assert result.exit_code == 0, result.output
    obj = json.loads(result.output)
    assert obj["focal_source"] == "exif-focal-plane"
    for m in obj["measurements"]:
        assert m["distance_m"] > 0 and m["uncertainty_m"] >= 0.05 * m["distance_m"]
    assert out.is_file()


def test_one_invalid_line_never_loses_the_valid_ones(
    room: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #14: every valid --line is printed, each invalid one reported (exit 1)."""
    depth = np.load(room["npy"])
    depth[:50, :50] = 0
    holed = tmp_path / "holed.npy"
    np.save(holed, depth)
    args = ["--depth", str(holed), "--line", "100,100,200,150", "--line", "10,10,200,200"]
    args += ["--line", "10,10,400,20", "--line", "120,110,220,160", "--json"]
    code = run_cli(cli, ["measure", str(room["photo"]), *args])
    captured = capsys.readouterr()
    assert code == 1
    obj = json.loads(captured.out)
    assert [m["from_px"] for m in obj["measurements"]] == [[100, 100], [120, 110]]
    # the JSON says which lines failed and why, the same words as stderr
    assert [f["line"] for f in obj["failed"]] == [2, 3]
    errors = captured.err.splitlines()
    assert [f["error"] in e for f, e in zip(obj["failed"], errors, strict=True)] == [True, True]
    assert "start point of line 2 (10, 10) has no valid depth" in errors[0]
    assert "end point of line 3 (400, 20) is outside" in errors[1] and len(errors) == 2


def test_display_check_comes_before_the_model(room: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import metrocli.cli.measure as measure_cli

    pytest.importorskip("tkinter")
    monkeypatch.setenv("DISPLAY", ":97")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    def no_model(*_: object, **__: object) -> None:
        raise AssertionError("the provider was built before the display was checked")

    monkeypatch.setattr(measure_cli, "build_provider", no_model)
    result = invoke(room["photo"])
    assert result.exit_code == 2 and "picker" in result.output
