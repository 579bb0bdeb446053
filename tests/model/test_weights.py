"""Weights cache, integrity sidecars and the offline path of `pull` (the hub is really unreachable here)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import threading
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


class LocalHub:
    """A local HTTP server speaking the Hugging Face ``resolve`` protocol (HEAD metadata, ranged GET) for one
    file, so that the real ``huggingface_hub`` client code of :func:`pull` runs end to end without internet.
    ``advertised_sha256`` may differ from the served bytes; ``drop_first_get`` cuts the first body midway."""

    def __init__(self, data: bytes, *, advertised_sha256: str | None = None, drop_first_get: bool = False):
        self.data = data
        self.sha256 = advertised_sha256 or hashlib.sha256(data).hexdigest()
        self.drop_first_get = drop_first_get
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _headers(self, start: int) -> None:
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", "c0ffee" + "0" * 34)
                self.send_header("ETag", f'"{hub.sha256}"')
                self.send_header("Content-Length", str(len(hub.data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(hub.data) - 1}/{len(hub.data)}")
                self.end_headers()

            def do_HEAD(self) -> None:
                hub.requests.append(("HEAD", self.path, None))
                self._headers(0)

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                hub.requests.append(("GET", self.path, rng))
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self._headers(start)
                first = sum(1 for r in hub.requests if r[0] == "GET") == 1
                if hub.drop_first_get and first:
                    self.wfile.write(hub.data[start : start + len(hub.data) // 3])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(hub.data[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def payload() -> bytes:
    return os.urandom(300_000)


def test_pull_downloads_verifies_and_records(cache: Path, payload: bytes) -> None:
    hub = LocalHub(payload, drop_first_get=True)
    try:
        path = W.pull("vit-small", progress=False, endpoint=hub.endpoint)
    finally:
        hub.close()
    assert path == cache / "metric_depth_vit_small_800k.pth"
    assert path.read_bytes() == payload  # complete despite the connection dropped midway
    meta = W.read_meta(path)
    assert meta is not None and meta["size"] == len(payload) and meta["sha256_from_hub"] is True
    assert meta["sha256"] == hashlib.sha256(payload).hexdigest() and meta["commit"].startswith("c0ffee")
    assert all(r[1] == "/JUGGHM/Metric3D/resolve/main/metric_depth_vit_small_800k.pth" for r in hub.requests)
    assert sum(r[0] == "GET" for r in hub.requests) >= 2
    assert W.resolve_weights("vit-small") == path

    # Cached and intact: no network at all (the hub is gone now).
    assert W.pull("vit-small", progress=False, endpoint=hub.endpoint) == path

    # --force downloads again.
    hub2 = LocalHub(payload)
    try:
        assert W.pull("vit-small", progress=False, force=True, endpoint=hub2.endpoint) == path
    finally:
        hub2.close()
    assert [r[0] for r in hub2.requests].count("GET") == 1 and path.read_bytes() == payload


def test_pull_rejects_bytes_that_do_not_match_the_hub_hash(cache: Path, payload: bytes) -> None:
    hub = LocalHub(payload, advertised_sha256="ab" * 32)
    try:
        with pytest.raises(WeightsError, match=r"failed verification \(sha256"):
            W.pull("vit-small", progress=False, endpoint=hub.endpoint)
    finally:
        hub.close()
    path = cache / PRESETS["vit-small"].filename
    assert not path.exists() and not W.meta_path(path).exists()
    with pytest.raises(WeightsError, match="metro weights pull vit-small"):
        W.resolve_weights("vit-small")


def test_pull_repairs_a_corrupt_cached_file(cache: Path, payload: bytes) -> None:
    hub = LocalHub(payload)
    try:
        path = W.pull("vit-small", progress=False, endpoint=hub.endpoint)
        path.write_bytes(payload[:1000])  # truncated behind our back
        assert W.pull("vit-small", progress=False, endpoint=hub.endpoint) == path
    finally:
        hub.close()
    assert path.read_bytes() == payload
