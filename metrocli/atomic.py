"""Atomic file writes: a temporary file in the destination folder, renamed over the target when complete.

A crash or Ctrl-C leaves either the old file or no file, never a truncated one. Temporary files are hidden
and carry the writing process's id (``.<stem>.metro-<pid>-<random>.tmp<suffix>``), so that a later run can
tell the leftovers of a killed process from the temporaries of a live one (:func:`remove_stale_temps`).
Only regular files (or new paths) are ever replaced: a device node, a folder, a FIFO or a symbolic link at the
target is refused with :class:`~metrocli.errors.OutputError` before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from metrocli.errors import OutputError, WriteError

#: Longest file name (bytes) of the file systems we write to (ext4, XFS, btrfs, APFS, NTFS: 255).
NAME_MAX_BYTES = 255
#: Marker in temporary names: ``.<stem>.metro-<pid>-<random>.tmp<suffix>``.
_TEMP_RE = re.compile(r"^\..*\.metro-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp(\.[^./]*)?$")
#: Room in a temporary name besides the stem: ``.`` + ``.metro-<pid>-`` + 8 random + ``.tmp`` + suffix.
_TEMP_OVERHEAD_BYTES = 1 + len(".metro-4294967295-") + 8 + len(".tmp")


def check_output_target(target: str | os.PathLike[str]) -> Path:
    """``target`` as a Path if it may be (re)written: a new path or an existing regular file.

    Raises:
        OutputError: ``target`` is a folder, a symbolic link, a device, a FIFO or a socket.
    """
    target = Path(target)
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise OutputError(f"{target}: cannot be written ({exc.strerror or exc})") from None
    if stat.S_ISREG(mode):
        return target
    kind = (
        "a folder"
        if stat.S_ISDIR(mode)
        else "a symbolic link"
        if stat.S_ISLNK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a special file"
    )
    raise OutputError(f"{target} is {kind}; metro only replaces regular files")


def _temp_stem(stem: str, suffix: str) -> str:
    """``stem`` shortened (at a character boundary) so the temporary name fits in :data:`NAME_MAX_BYTES`."""
    room = NAME_MAX_BYTES - _TEMP_OVERHEAD_BYTES - len(os.fsencode(suffix))
    while len(os.fsencode(stem)) > room and stem:
        stem = stem[:-1]
    return stem


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or an absurd pid): never remove its files
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed metro processes left in ``folder``; returns what was removed.

    Only hidden files of this module's naming pattern whose writing process no longer exists are removed: the
    temporaries of a run still in progress (another metro process) are left alone.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same suffix); on success it is renamed onto ``target``.

    The temporary name is hidden (``.<stem>.metro-<pid>-<random>.tmp<suffix>``, the stem shortened when the
    name would exceed the file-system limit) so resumable batches never mistake it for output. On any
    exception, including KeyboardInterrupt, the temporary file is removed and ``target`` is untouched.

    Raises:
        OutputError: ``target`` exists and is not a regular file (:func:`check_output_target`).
    """
    target = check_output_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = _temp_stem(target.stem, target.suffix)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{stem}.metro-{os.getpid()}-", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    with contextlib.suppress(OSError):  # mkstemp makes 0600 files; outputs get the usual umask permissions
        os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        try:
            yield tmp_path
            if not tmp_path.exists() or (tmp_path.stat().st_size == 0 and not _allow_empty(target)):
                raise WriteError(f"nothing was written for {target}")
            _fsync(tmp_path)  # a full disk may only show here (delayed allocation)
            check_output_target(target)  # it may have changed while we wrote
            os.replace(tmp_path, target)
        except WriteError:
            raise
        except OSError as exc:
            if exc.errno is None:  # numpy's "N requested and M written": find the file system's reason
                exc = _probe_room(tmp_path) or exc
            raise write_error(target, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


#: errno values of a write that failed for lack of room or rights: reported as ``<reason>: <target>``.
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system or the process limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "input/output error",
}


def write_error(target: str | os.PathLike[str], exc: OSError) -> WriteError:
    """One clean :class:`~metrocli.errors.WriteError` for an OSError met while writing ``target``
    (``no space left on device: /full/out.ply``)."""
    reason = _WRITE_ERRNOS.get(exc.errno or -1) or (exc.strerror or str(exc) or type(exc).__name__).lower()
    return WriteError(f"{reason}: {os.fspath(target)}")


def diagnose_short_write(tmp: Path, target: str | os.PathLike[str], expected_bytes: int) -> WriteError:
    """Why the writer of ``tmp`` (a library that reports no errno) stopped short of ``expected_bytes``:
    reserving that room tells (no space, file too large); otherwise a generic message."""
    try:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, expected_bytes)
        finally:
            os.close(fd)
    except OSError as exc:
        return write_error(target, exc)
    except AttributeError:  # no posix_fallocate (macOS)
        pass
    size = tmp.stat().st_size if tmp.exists() else 0
    return WriteError(f"could not write {os.fspath(target)} ({size} of {expected_bytes} bytes written)")


def _probe_room(tmp: Path) -> OSError | None:
    """The error that writing more to ``tmp`` meets (no space, file too large), or None. ``tmp`` is about to
    be deleted, so what the probe writes does not matter."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        return exc
    try:
        for _ in range(16):
            os.write(fd, bytes(1 << 16))
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
