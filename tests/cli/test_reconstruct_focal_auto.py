"""`metro reconstruct --focal exif|auto` (CliRunner, real rendered files).

The accuracy of the self-calibration inside reconstruct is tested on rendered predictions in
tests/pipeline/test_multiview_focal_auto.py; with the seeded (untrained) weights the model's output here is
meaningless, so these tests check the option handling and what a real forward reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from metrocli.cli.common import run_cli
from metrocli.cli.main import cli
from metrocli.synth.multiview import ROOM_VIEWS, render_views, write_views


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mv_01.jpg (phone EXIF) + mv_01.depth.png, and nofocal.png (no metadata) in one folder."""
    folder = tmp_path_factory.mktemp("room_focal")
    renders = render_views(320, 240)[:1]
    write_views(folder, list(renders), views=ROOM_VIEWS[:1])
    Image.fromarray(renders[0].rgb).save(folder / "nofocal.png")
    return folder


def exit_code(capsys, *args: str) -> tuple[int, str]:
    code = run_cli(cli, ["reconstruct", *args])
    return code, capsys.readouterr().err


def test_help_lists_focal_auto() -> None:
    result = CliRunner().invoke(cli, ["reconstruct", "--help"])
    assert result.exit_code == 0
    assert "--focal [exif|auto]" in result.output and "--focal auto" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--focal-px", "500"], "not both"),
        (["--fov", "60"], "not both"),
        (["--model", "convnext-tiny"], "ViT"),
        (["--depth", "mv_01.depth.png"], "sensor depth"),
        (["--depth-dir", "."], "sensor depth"),
    ],
    ids=["focal-px", "fov", "v1-model", "depth", "depth-dir"],
)
def test_focal_auto_usage_errors(
    photos: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    extra = [str(photos / e) if e in ("mv_01.depth.png", ".") else e for e in extra]
    out = tmp_path / "x.ply"
    code, err = exit_code(capsys, str(photos / "mv_01.jpg"), "-o", str(out), "--focal", "auto", *extra)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_focal_auto_usage_errors_for_folders(photos: Path, tmp_path: Path, capsys) -> None:
    for mode in ([], ["--separate"]):
        out = tmp_path / ("sep" if mode else "scene.ply")
        code, err = exit_code(
            capsys, str(photos), "-o", str(out), *mode, "--depth-dir", str(photos), "--focal", "auto"
        )
        assert code == 2 and "sensor depth" in err, err
        assert not out.exists()


def test_default_exif_mode_reports_no_selfcal(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.ply"
    args = [str(photos / "mv_01.jpg"), "-o", str(out), "--depth", str(photos / "mv_01.depth.png"), "--json"]
    result = CliRunner().invoke(cli, ["reconstruct", *args, "--focal", "exif"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip())
    assert line["focal_source"].startswith("exif")
    assert "selfcal" not in line and "focal_uncertainty_px" not in line


def check_record(rec: dict, photo_source: str) -> None:
    """A self-calibrated focal with its uncertainty, or a fallback to the photo's own focal with a warning."""
    selfcal = rec["selfcal"]
    assert selfcal["photo_focal_source"] == photo_source
    assert rec["focal_px"] == pytest.approx(selfcal["focal_px"])
    if rec["focal_source"] == "self-calibrated":
        assert not selfcal["fallback"] and selfcal["warning"] is None
        assert rec["focal_uncertainty_px"] > 0 and selfcal["disagreement"] is not None
    else:
        assert rec["focal_source"] == photo_source
        assert selfcal["fallback"] and "self-calibration" in selfcal["warning"]
        assert rec["focal_uncertainty_px"] is None and selfcal["disagreement"] is None
        assert rec["focal_px"] == pytest.approx(selfcal["photo_focal_px"])


@pytest.mark.slow
def test_focal_auto_single_and_separate_with_the_seeded_model(
    photos: Path, tmp_path: Path, seeded_weights
) -> None:
    model = ["--weights", str(seeded_weights("vit-small")), "--threads", "1"]
    out = tmp_path / "one.ply"
    result = CliRunner().invoke(
        cli, ["reconstruct", str(photos / "nofocal.png"), "-o", str(out), *model, "--focal", "auto", "--json"]
    )
    assert result.exit_code == 0, result.output
    check_record(json.loads(result.stdout.strip()), "default")
    assert out.is_file()

    # --separate on a folder with the JPEG only (EXIF focal: cross-checked)
    auto = ["--focal", "auto", "--points-only", "--json"]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "mv_01.jpg").write_bytes((photos / "mv_01.jpg").read_bytes())
    result = CliRunner().invoke(
        cli,
        ["reconstruct", str(tmp_path / "in"), "--separate", "-o", str(tmp_path / "sep"), *model, *auto],
    )
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert line["photo"].endswith("mv_01.jpg") and not line["skipped"]
    from metrocli.camera.photo import load_photo

    check_record(line, load_photo(photos / "mv_01.jpg").intrinsics.focal_source)  # an EXIF source
