"""Atomic writes survive a kill midway: the target is either the old file or absent, never truncated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from metrocli.atomic import atomic_path, write_bytes_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[2]

# Writes 1 MiB chunks through atomic_path forever, announcing on stdout once data has reached the disk.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from metrocli.atomic import atomic_path

    target = sys.argv[1]
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            for i in range(10_000):
                fh.write(b"N" * (1 << 20))
                fh.flush()
                os.fsync(fh.fileno())
                if i == 3:
                    print(tmp, flush=True)
                time.sleep(0.01)
    """
)


def _start_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())  # blocks until 4 MiB are written to the temp file
    assert tmp.parent == target.parent and tmp.stat().st_size >= 4 << 20
    return proc, tmp


@pytest.mark.parametrize("old", [b"old complete content\n", None], ids=["old-file", "no-old-file"])
def test_sigkill_midway_leaves_old_file_or_nothing(tmp_path: Path, old: bytes | None) -> None:
    target = tmp_path / "scene.depth.npy"
    if old is not None:
        target.write_bytes(old)
    proc, tmp = _start_writer(target)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    if old is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == old
    # A hard kill cannot clean up: what remains is only the hidden temp file, never the output name.
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert leftovers == [tmp]
    assert tmp.name.startswith(".scene.depth.") and ".tmp" in tmp.name


def test_sigint_midway_removes_the_temp_and_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "scene.depth.png"
    target.write_bytes(b"old png")
    proc, tmp = _start_writer(target)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt inside the with-block
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert target.read_bytes() == b"old png"
    assert not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.depth.png"]


def test_keyboard_interrupt_inside_atomic_path(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text('{"old": true}')
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text('{"new": tr')
        raise KeyboardInterrupt
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_exception_inside_atomic_path_without_old_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "new.ply"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".ply" and tmp.parent == target.parent
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer crashed")
    assert list(target.parent.iterdir()) == []


def test_nothing_written_is_an_error_and_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "map.npy"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="nothing was written"), atomic_path(target):
        pass  # the writer forgot to write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["map.npy"]


def test_successful_writes_replace(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    write_bytes_atomic(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    write_text_atomic(tmp_path / "b.json", "")
    assert (tmp_path / "b.json").read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]


def test_outputs_get_umask_permissions_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        target = write_bytes_atomic(tmp_path / "x.png", b"data")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o640
