"""Official Metric3D checkpoints: the local cache, downloads from the Hugging Face hub, and integrity checks.

Cache layout (``cache_dir()``: ``$METRO_CACHE_DIR``, ``$XDG_CACHE_HOME/metrocli`` or ``~/.cache/metrocli``)::

    <cache>/metric_depth_vit_small_800k.pth            the checkpoint, exactly as published
    <cache>/metric_depth_vit_small_800k.pth.meta.json  {"repo", "filename", "size", "sha256", "commit", ...}

:func:`pull` downloads with ``huggingface_hub.hf_hub_download`` (resumable; progress on stderr), then
checks the file's size and sha256 against the hub's metadata before recording them in the sidecar.
:func:`resolve_weights` refuses a cached file whose size differs from the recorded one; :func:`verify_file`
also re-hashes it.
This module does not import torch: loading a checkpoint is :mod:`metrocli.model.checkpoint`'s job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from metrocli.atomic import write_text_atomic
from metrocli.errors import WeightsError
from metrocli.model.presets import PRESETS, get_preset

log = logging.getLogger("metrocli.model.weights")

#: Seconds to wait for the hub's answer to the metadata request before calling it unreachable.
HUB_TIMEOUT_S = 10.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def cache_dir() -> Path:
    """Folder of the downloaded checkpoints: ``$METRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/metrocli``, else
    ``~/.cache/metrocli``. Not created here."""
    env = os.environ.get("METRO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "metrocli"


def cached_path(name: str) -> Path:
    """Where the official checkpoint of preset ``name`` lives in the cache (whether or not it is there)."""
    return cache_dir() / get_preset(name).filename


def meta_path(weights_file: Path) -> Path:
    """The sidecar ``<file>.meta.json`` that records the verified size and sha256 of a downloaded file."""
    return weights_file.with_name(weights_file.name + ".meta.json")


def read_meta(weights_file: Path) -> dict | None:
    """The sidecar of ``weights_file`` as a dict, or None when it is absent or unreadable."""
    try:
        meta = json.loads(meta_path(weights_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _repull_hint(name: str) -> str:
    return f"run `metro weights pull {name} --force` to download it again"


def check_cached_size(name: str, path: Path) -> None:
    """Raise :class:`WeightsError` when ``path``'s size differs from the size recorded at download."""
    meta = read_meta(path)
    if meta is None or not isinstance(meta.get("size"), int):
        return
    size = path.stat().st_size
    if size != meta["size"]:
        raise WeightsError(
            f"cached weights {path} are corrupt ({size} bytes, {meta['size']} expected): {_repull_hint(name)}"
        )


def check_weights_file(path: Path) -> Path:
    """``path``, or :class:`WeightsError` naming it when it is missing or not a file."""
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if not path.is_file():
        raise WeightsError(f"weights file {path} is not a file")
    return path


def resolve_weights(name: str, weights: str | os.PathLike[str] | None = None) -> Path:
    """The checkpoint file to load for preset ``name``.

    ``weights`` given: that file (``WeightsError`` naming it when it is missing or not a file). Otherwise the
    cached official checkpoint, size-checked against its sidecar; ``WeightsError`` with the hint to run
    ``metro weights pull NAME`` or pass ``--weights FILE`` when it is not cached.
    """
    if weights is not None:
        return check_weights_file(Path(weights).expanduser())
    path = cached_path(name)
    if not path.is_file():
        raise WeightsError(
            f"no weights for {name} in {cache_dir()}: run `metro weights pull {name}` or pass --weights FILE"
        )
    check_cached_size(name, path)
    return path


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class HubFile:
    """What the hub says about one file: size in bytes, sha256 (LFS files) and the commit it resolves to."""

    size: int | None
    sha256: str | None
    commit: str | None


def _unreachable(name: str, exc: BaseException) -> WeightsError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return WeightsError(
        f"cannot reach the Hugging Face hub to download {name} weights ({reason}); "
        "check the network, or pass --weights FILE"
    )


def hub_metadata(name: str, timeout_s: float = HUB_TIMEOUT_S, endpoint: str | None = None) -> HubFile:
    """Ask the hub for size/sha256/commit of preset ``name``'s file (one request, no retries).

    ``endpoint``: hub URL (default: ``$HF_ENDPOINT`` or https://huggingface.co).

    Raises :class:`WeightsError` when the hub cannot be reached (offline, DNS, timeout, HTTP error).
    """
    preset = get_preset(name)
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(preset.hf_repo, preset.filename, endpoint=endpoint)
        meta = get_hf_file_metadata(url, timeout=timeout_s, endpoint=endpoint)
    except Exception as exc:  # httpx/requests errors, OfflineModeIsEnabled, HfHubHTTPError, ...
        raise _unreachable(name, exc) from exc
    etag = (meta.etag or "").strip('"').lower()
    return HubFile(
        size=meta.size if isinstance(meta.size, int) else None,
        sha256=etag if _SHA256.match(etag) else None,
        commit=meta.commit_hash,
    )


def pull(name: str, progress: bool = True, force: bool = False, endpoint: str | None = None) -> Path:
    """Download the official checkpoint of preset ``name`` into the cache and return its path.

    Resumable (an interrupted download continues from its partial file); progress on stderr. The file is
    checked against the hub's size and sha256 before its sidecar is written; a mismatch deletes it and
    raises :class:`WeightsError`. Already cached and intact (size matches the sidecar): returned as is,
    unless ``force``. ``endpoint``: hub URL (default: ``$HF_ENDPOINT`` or https://huggingface.co).
    """
    preset = get_preset(name)
    target = cache_dir() / preset.filename
    if target.is_file() and not force and read_meta(target) is not None:
        try:
            check_cached_size(name, target)
        except WeightsError:
            force = True  # corrupt: download it again from scratch
        else:
            return target
    expected = hub_metadata(name, endpoint=endpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    if force:
        with contextlib.suppress(OSError):
            meta_path(target).unlink()
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        if not progress:
            disable_progress_bars()
        try:
            downloaded = Path(
                hf_hub_download(
                    preset.hf_repo,
                    preset.filename,
                    local_dir=target.parent,
                    force_download=force,
                    etag_timeout=HUB_TIMEOUT_S,
                    endpoint=endpoint,
                )
            )
        finally:
            if not progress:
                enable_progress_bars()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise _unreachable(name, exc) from exc
    if downloaded.resolve() != target.resolve():  # pragma: no cover - local_dir puts it at target
        os.replace(downloaded, target)
    return record_download(name, target, expected)


def record_download(name: str, path: Path, expected: HubFile) -> Path:
    """Check ``path`` against the hub's ``expected`` size/sha256 and write its sidecar; WeightsError (and the
    file removed) on a mismatch."""
    size = path.stat().st_size
    digest = sha256_file(path)
    problem = None
    if expected.size is not None and size != expected.size:
        problem = f"{size} bytes, the hub says {expected.size}"
    elif expected.sha256 is not None and digest != expected.sha256:
        problem = f"sha256 {digest[:12]}…, the hub says {expected.sha256[:12]}…"
    if problem:
        with contextlib.suppress(OSError):
            path.unlink()
        raise WeightsError(
            f"downloaded weights {path} failed verification ({problem}); it was deleted: try again"
        )
    meta = {
        "model": name,
        "repo": get_preset(name).hf_repo,
        "filename": path.name,
        "size": size,
        "sha256": digest,
        "sha256_from_hub": expected.sha256 is not None,
        "commit": expected.commit,
    }
    write_text_atomic(meta_path(path), json.dumps(meta, indent=2) + "\n")
    return path


def verify_file(name: str | None, path: Path) -> dict:
    """Integrity check of a checkpoint against its sidecar (size and sha256), if it has one.

    Returns ``{"size": int, "sha256": str, "recorded": bool}``; raises :class:`WeightsError` on a mismatch
    (with the re-pull hint when ``name`` is known).
    """
    size = path.stat().st_size
    digest = sha256_file(path)
    meta = read_meta(path)
    if meta is not None:
        hint = _repull_hint(name) if name else "download it again"
        if isinstance(meta.get("size"), int) and size != meta["size"]:
            raise WeightsError(f"weights {path} are corrupt ({size} bytes, {meta['size']} expected): {hint}")
        if isinstance(meta.get("sha256"), str) and digest != meta["sha256"]:
            raise WeightsError(f"weights {path} are corrupt (sha256 differs from the recorded one): {hint}")
    return {"size": size, "sha256": digest, "recorded": meta is not None}


@dataclass(frozen=True)
class WeightsStatus:
    """One row of ``metro weights list``."""

    name: str
    filename: str
    path: Path
    cached: bool
    size_bytes: int | None
    hf_repo: str


def list_weights() -> list[WeightsStatus]:
    """Status of every preset's official checkpoint in the cache."""
    rows = []
    for name, preset in PRESETS.items():
        path = cache_dir() / preset.filename
        cached = path.is_file()
        meta = read_meta(path) if cached else None
        size = path.stat().st_size if cached else None
        if meta is not None and isinstance(meta.get("size"), int) and size != meta["size"]:
            cached = False
        rows.append(WeightsStatus(name, preset.filename, path, cached, size, preset.hf_repo))
    return rows
