"""Shared test fixtures. Data from ../shared is read in place and tests skip cleanly when it is absent."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI explores a fixed set of examples (a red CI must be reproducible); local runs explore new ones each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("METRO_SHARED_DIR", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "metric3d"
SEED = 4321


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (or $METRO_SHARED_DIR); skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    """../shared/fixtures/metric3d: official-implementation outputs for seeded weights."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures/metric3d is not present")
    return FIXTURES


@pytest.fixture(scope="session")
def exif_samples(shared_dir: Path) -> Path:
    """../shared/exif-samples: real camera and phone photos."""
    path = shared_dir / "exif-samples"
    if not path.is_dir():
        pytest.skip("../shared/exif-samples is not present")
    return path


@pytest.fixture(scope="session")
def seeded_weights(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``seeded_weights("vit-small")`` -> path of an official-format checkpoint with seeded values.

    Built once per session from ``<variant>.keys.json`` with the fixture's ``seedweights.make_state_dict``
    (seed 4321), saved as ``{"model_state_dict": sd}`` like the published files.
    """
    import json

    import torch

    spec = importlib.util.spec_from_file_location("seedweights", fixtures_dir / "seedweights.py")
    seedweights = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(seedweights)
    cache: dict[str, Path] = {}
    out_dir = tmp_path_factory.mktemp("seeded-weights")

    def make(variant: str) -> Path:
        if variant not in cache:
            keys_file = fixtures_dir / f"{variant}.keys.json"
            if not keys_file.is_file():
                pytest.skip(f"{keys_file} is not present")
            shapes = json.loads(keys_file.read_text())
            sd = seedweights.make_state_dict(shapes, seed=SEED)
            path = out_dir / f"{variant}.seed{SEED}.pth"
            torch.save({"model_state_dict": sd}, path)
            cache[variant] = path
        return cache[variant]

    return make


def _half_tilted(normal: np.ndarray, tilt_deg: float) -> np.ndarray:
    """``normal`` (H, W, 3) turned about the camera's x axis by ``+tilt_deg`` on the left half of the image
    and ``-tilt_deg`` on the right: a normal error shared by large parts of the image (issue 15)."""
    w = normal.shape[1]
    angle = np.radians(tilt_deg) * np.where(np.arange(w) < w / 2, 1.0, -1.0)[None, :]
    c, s = np.cos(angle), np.sin(angle)
    n0, n1, n2 = normal[..., 0], normal[..., 1], normal[..., 2]
    return np.stack([n0, c * n1 - s * n2, s * n1 + c * n2], -1).astype(np.float32)


@pytest.fixture(scope="session")
def half_tilted():
    """:func:`_half_tilted`: predicted normals with a tilt shared by each half of the image."""
    return _half_tilted
