"""Atomic file writes: a temporary file in the destination folder, renamed over the target when complete.

A crash or Ctrl-C leaves either the old file or no file, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same suffix); on success it is renamed onto ``target``.

    The temporary name is hidden (``.name.tmpXXXX.ext``) so resumable batches never mistake it for output. On
    any exception, including KeyboardInterrupt, the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    with contextlib.suppress(OSError):  # mkstemp makes 0600 files; outputs get the usual umask permissions
        os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        if not tmp_path.exists() or (tmp_path.stat().st_size == 0 and not _allow_empty(target)):
            raise OSError(f"nothing was written for {target}")
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _allow_empty(target: Path) -> bool:
    return target.suffix in {".txt", ".json", ".jsonl"}


def write_atomic(target: str | os.PathLike[str], writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``target`` atomically. Returns ``target``."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically (fsynced before the rename)."""

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return write_atomic(target, _write)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    return write_bytes_atomic(target, text.encode("utf-8"))
