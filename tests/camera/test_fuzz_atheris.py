"""A bounded coverage-guided fuzz run (atheris/libFuzzer) of ``load_photo`` on arbitrary file contents.

The fuzzer runs in a subprocess for at most 2000 inputs / 15 s, starting from small valid photos (JPEG with
phone EXIF in both byte orders, PNG, TIFF, WebP). Any exception other than a MetroError is a crash: libFuzzer
stops, prints the traceback and exits non-zero, and the test fails showing it.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrocli.camera.exif_write import write_jpeg

HARNESS = textwrap.dedent(
    """
    import logging
    import os
    import sys
    import tempfile
    import warnings

    import atheris

    with atheris.instrument_imports(include=["metrocli", "exifread"]):
        from metrocli.camera.photo import load_photo
        from metrocli.errors import MetroError

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    PATH = os.path.join(tempfile.mkdtemp(prefix="metro-fuzz-"), "input.jpg")


    def test_one_input(data: bytes) -> None:
        with open(PATH, "wb") as fh:
            fh.write(data)
        try:
            photo = load_photo(PATH)
        except MetroError as exc:
            if "\\n" in str(exc):
                raise AssertionError(f"multi-line error message: {exc!r}") from exc
            return
        k = photo.intrinsics
        if not (k.fx > 0 and k.width == photo.image.shape[1] and k.height == photo.image.shape[0]):
            raise AssertionError(f"inconsistent photo: {k}")


    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
    """
)


def _seeds(folder: Path) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)
    write_jpeg(
        folder / "phone.jpg",
        rgb,
        make="Apple",
        model="iPhone 13 Pro Max",
        focal_length_mm=5.7,
        focal_35mm=26,
        focal_plane_res_per_mm=700.0,
        exif_image_size=(4032, 3024),
        orientation=6,
    )
    write_jpeg(folder / "table.jpg", rgb, make="Jolla", model="Jolla", focal_length_mm=4.0, orientation=3)
    for fmt in ("PNG", "TIFF", "WEBP"):
        buf = io.BytesIO()
        exif = Image.Exif()
        exif[0x0112] = 8
        Image.fromarray(rgb).save(buf, fmt, exif=exif.tobytes())
        (folder / f"seed.{fmt.lower()}").write_bytes(buf.getvalue())


def test_atheris_fuzz_load_photo(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip(
            "atheris is not installed (it is built for x86_64 Linux only); the hypothesis tests cover this"
        )
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _seeds(corpus)
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    cmd = [
        sys.executable,
        str(harness),
        str(corpus),
        "-runs=2000",
        "-max_total_time=15",
        "-timeout=10",
        "-rss_limit_mb=3072",
        "-max_len=8192",
        "-seed=12345",
        f"-artifact_prefix={tmp_path}/",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    output = result.stdout + result.stderr
    if result.returncode != 0 and "Failed to set up" in output:  # pragma: no cover - exotic platforms
        pytest.skip(f"atheris cannot run here: {output[-300:]}")
    assert result.returncode == 0, output[-4000:]
    assert "Done" in output or "INFO:" in output, output[-2000:]
