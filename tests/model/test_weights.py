"""Weights cache, integrity sidecars and the offline path of `pull` (the hub is really unreachable here)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import pytest

from metrocli.errors import WeightsError
from metrocli.model import weights as W
from metrocli.model.presets import PRESETS


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("METRO_CACHE_DIR", str(d))
    return d


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METRO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "xdg" / "metrocli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert W.cache_dir() == tmp_path / "home" / ".cache" / "metrocli"
    monkeypatch.setenv("METRO_CACHE_DIR", str(tmp_path / "mine"))
    assert W.cache_dir() == tmp_path / "mine"


def test_cached_path_uses_official_filename(cache: Path) -> None:
    for name, preset in PRESETS.items():
        assert W.cached_path(name) == cache / preset.filename
    assert W.cached_path("vit-small").name == "metric_depth_vit_small_800k.pth"


def test_resolve_explicit_file(cache: Path, tmp_path: Path) -> None:
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert W.resolve_weights("vit-small", f) == f
    with pytest.raises(WeightsError, match=r"nope\.pth does not exist"):
        W.resolve_weights("vit-small", tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="is not a file"):
        W.resolve_weights("vit-small", tmp_path)


def test_resolve_not_cached_gives_the_hint(cache: Path) -> None:
    with pytest.raises(WeightsError) as info:
        W.resolve_weights("vit-small")
    msg = str(info.value)
    assert "metro weights pull vit-small" in msg and "--weights" in msg and str(cache) in msg
    assert "\n" not in msg


def _fake_download(cache: Path, name: str, data: bytes) -> tuple[Path, W.HubFile]:
    path = cache / PRESETS[name].filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, W.HubFile(size=len(data), sha256=hashlib.sha256(data).hexdigest(), commit="c" * 40)


def test_record_download_writes_sidecar_and_resolves(cache: Path) -> None:
    data = b"checkpoint bytes" * 100
    path, hub = _fake_download(cache, "vit-small", data)
    W.record_download("vit-small", path, hub)
    meta = json.loads(W.meta_path(path).read_text())
    assert meta["size"] == len(data) and meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["sha256_from_hub"] is True and meta["repo"] == "JUGGHM/Metric3D"
    assert W.resolve_weights("vit-small") == path
    assert W.verify_file("vit-small", path) == {"size": len(data), "sha256": meta["sha256"], "recorded": True}
    rows = {r.name: r for r in W.list_weights()}
    assert rows["vit-small"].cached and rows["vit-small"].size_bytes == len(data)
    assert not rows["vit-large"].cached and rows["vit-large"].size_bytes is None


def test_record_download_rejects_a_bad_hash_and_deletes_it(cache: Path) -> None:
    path, hub = _fake_download(cache, "vit-small", b"abc" * 10)
    bad = W.HubFile(size=hub.size, sha256="0" * 64, commit=None)
    with pytest.raises(WeightsError, match="failed verification"):
        W.record_download("vit-small", path, bad)
    assert not path.exists() and not W.meta_path(path).exists()


def test_record_download_rejects_a_bad_size(cache: Path) -> None:
    path, _ = _fake_download(cache, "vit-small", b"abc" * 10)
    with pytest.raises(WeightsError, match=r"the hub says 31"):
        W.record_download("vit-small", path, W.HubFile(size=31, sha256=None, commit=None))
    assert not path.exists()


def test_truncated_cached_file_is_detected_with_repull_hint(cache: Path) -> None:
    data = bytes(range(256)) * 64
    path, hub = _fake_download(cache, "vit-small", data)
    W.record_download("vit-small", path, hub)
    path.write_bytes(data[:1000])  # e.g. a disk-full copy or a killed rsync
    with pytest.raises(WeightsError) as info:
        W.resolve_weights("vit-small")
    assert "corrupt" in str(info.value) and "metro weights pull vit-small --force" in str(info.value)
    assert not {r.name: r for r in W.list_weights()}["vit-small"].cached


def test_same_size_but_altered_file_fails_verify(cache: Path) -> None:
    data = b"\x00" * 4096
    path, hub = _fake_download(cache, "vit-small", data)
    W.record_download("vit-small", path, hub)
    path.write_bytes(b"\x01" + data[1:])
    assert W.resolve_weights("vit-small") == path  # size check only on every use
    with pytest.raises(WeightsError, match=r"sha256 differs.*--force"):
        W.verify_file("vit-small", path)


def test_pull_with_unreachable_hub_fails_fast_with_one_line(cache: Path) -> None:
    # A closed local port: a hub that really cannot be reached, on any machine.
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        W.pull("vit-small", progress=False, endpoint="http://127.0.0.1:9")
    msg = str(info.value)
    assert msg.startswith("cannot reach the Hugging Face hub to download vit-small weights")
    assert "--weights FILE" in msg and "\n" not in msg
    assert not (cache / PRESETS["vit-small"].filename).exists()
    assert time.monotonic() - start < 60  # no endless retries


def _hub_resolvable() -> bool:
    try:
        socket.getaddrinfo("huggingface.co", 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_hub_resolvable(), reason="the hub is reachable: this would download real weights")
def test_pull_offline_against_the_real_hub(cache: Path) -> None:
    with pytest.raises(WeightsError, match=r"cannot reach the Hugging Face hub.*check the network"):
        W.pull("vit-small", progress=False)
