"""`metro info`: table and JSON Lines output, batches with bad files, focal options, no heavy imports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metrocli.camera.exif_write import write_jpeg
from metrocli.cli.main import cli

HEAVY = ("torch", "timm", "open3d")
REQUIRED_KEYS = {
    "path",
    "width",
    "height",
    "focal_px",
    "focal_source",
    "cx",
    "cy",
    "orientation",
    "make",
    "model",
}


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400 x 300 stored photo with orientation 6 (displayed 300 x 400) and a 26 mm 35 mm-equivalent."""
    path = tmp_path_factory.mktemp("info") / "phone.jpg"
    rgb = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    write_jpeg(path, rgb, make="Apple", model="iPhone 12", focal_35mm=26, orientation=6)
    return path


def _run(*args: str):
    result = CliRunner().invoke(cli, ["info", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def test_help() -> None:
    result = CliRunner().invoke(cli, ["info", "--help"])
    assert result.exit_code == 0
    for word in ("Usage:", "FILES", "--json", "--focal-px", "--fov", "focal_source"):
        assert word in result.output


def test_json_for_one_photo(photo: Path) -> None:
    result = _run("--json", str(photo))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert set(obj) >= REQUIRED_KEYS
    assert {"focal_35mm", "fov_deg", "warnings"} <= set(obj)
    assert (obj["width"], obj["height"], obj["orientation"]) == (300, 400, 6)
    assert (obj["make"], obj["model"]) == ("Apple", "iPhone 12")
    # f = 26 · √(300² + 400²) / √(36² + 24²) = 26 · 500 / 43.26662 = 300.46 px
    assert obj["focal_source"] == "exif-35mm"
    assert obj["focal_px"] == pytest.approx(26 * 500 / math.hypot(36, 24))
    assert obj["focal_35mm"] == pytest.approx(26.0)
    assert (obj["cx"], obj["cy"]) == (150.0, 200.0)
    assert obj["path"] == str(photo)


def test_table_output(photo: Path) -> None:
    result = _run(str(photo))
    assert result.exit_code == 0
    out = result.stdout
    for text in (
        "phone.jpg",
        "300",
        "400",
        "exif-35mm",
        "Apple iPhone 12",
        "300.5",
        "150.0",
        "200.0",
        "26.0 mm",
    ):
        assert text in out, out


def test_focal_options(photo: Path) -> None:
    obj = json.loads(_run("--json", "--focal-px", "1000", str(photo)).stdout)
    assert (obj["focal_px"], obj["focal_source"]) == (1000.0, "user")
    obj = json.loads(_run("--json", "--fov", "90", str(photo)).stdout)
    assert obj["focal_px"] == pytest.approx(150.0)  # 300 px wide / (2 tan 45°)
    assert obj["fov_deg"] == pytest.approx(90.0)
    assert _run("--focal-px", "10", "--fov", "60", str(photo)).exit_code == 2
    assert _run("--focal-px", "-5", str(photo)).exit_code == 2
    assert _run("--fov", "200", str(photo)).exit_code == 2


def test_no_files_is_usage_error() -> None:
    assert _run().exit_code == 2


def test_bad_files_keep_the_batch_going(photo: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(photo.read_bytes()[:2000])
    missing = tmp_path / "missing.heic"
    result = _run("--json", str(text), str(photo), str(empty), str(truncated), str(missing), str(photo))
    assert result.exit_code == 1
    objs = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [o["path"] for o in objs] == [str(photo), str(photo)]
    errors = [line for line in result.stderr.splitlines() if line.startswith("metro: error:")]
    assert len(errors) == 4
    for bad, line in zip((text, empty, truncated, missing), errors, strict=True):
        assert str(bad) in line
    assert "2 of 6 photos succeeded" in result.stderr


def test_default_focal_warns_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    write_jpeg(path, np.zeros((30, 40, 3), np.uint8), make="Nobody", model="Nothing")
    result = _run("--json", str(path))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["focal_source"] == "default"
    assert "UNRELIABLE" in result.stderr
    assert "UNRELIABLE" not in result.stdout.split('"warnings"')[0]


def test_every_corpus_file(exif_samples: Path) -> None:
    """Every file of ../shared/exif-samples, including jpg/invalid, jpg/tests, corrupted.jpg and the READMEs:
    never a traceback, exit 0/1 only, JSON Lines parse, each bad file gets one error line naming it."""
    files = sorted(p for p in exif_samples.rglob("*") if p.is_file())
    assert len(files) > 90
    result = _run("--json", *map(str, files))
    assert result.exit_code in (0, 1)
    objs = [json.loads(line) for line in result.stdout.strip().splitlines()]
    errors = [line for line in result.stderr.splitlines() if line.startswith("metro: error:")]
    assert len(objs) + len(errors) == len(files)
    good = {o["path"] for o in objs}
    for obj in objs:
        assert set(obj) >= REQUIRED_KEYS
        assert obj["width"] > 0 and obj["height"] > 0
        assert obj["focal_px"] > 0 and math.isfinite(obj["focal_px"])
        assert obj["focal_source"] in {"exif-focal-plane", "exif-35mm", "sensor-table", "default"}
        assert (obj["cx"], obj["cy"]) == (obj["width"] / 2, obj["height"] / 2)
    for line in errors:
        assert any(str(f) in line for f in files if str(f) not in good), line
    # every image in the corpus is readable; the non-images (READMEs) are the failures
    failed = [f for f in files if str(f) not in good]
    assert all(f.name == "README" for f in failed), failed
    assert str(exif_samples / "jpg" / "corrupted.jpg") in good
    assert all(str(p) in good for p in (exif_samples / "jpg" / "invalid").glob("*.jpg"))


@pytest.mark.parametrize("name", ["jpg/invalid/README", "jpg/corrupted.jpg", "jpg/tests/30-type_error.jpg"])
def test_single_corpus_files_real_process(exif_samples: Path, name: str) -> None:
    """Through the real entry point (exit codes from run_cli), and checking nothing heavy is imported."""
    code = (
        "import sys\n"
        "from metrocli.cli.common import run_cli\n"
        "from metrocli.cli.main import cli\n"
        f"rc = run_cli(cli, ['info', '--json', {str(exif_samples / name)!r}])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "HEAVY []" in proc.stderr
    if name.endswith("README"):
        assert proc.returncode == 1
        assert proc.stdout == ""
        errors = [line for line in proc.stderr.splitlines() if line.startswith("metro: error:")]
        assert len(errors) == 1 and name in errors[0]
    else:
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["width"] > 0


def test_root_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from metrocli.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['info', '--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
