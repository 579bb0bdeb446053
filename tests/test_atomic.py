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

REPO = Path(__file__).resolve().parents[1]

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


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_special_files_are_never_replaced(tmp_path: Path) -> None:
    from metrocli.errors import OutputError

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.ply"
    folder.mkdir()
    regular = tmp_path / "real.json"
    regular.write_text("keep")
    link = tmp_path / "link.json"
    link.symlink_to(regular)
    targets = {fifo: "a special file", folder: "a folder", link: "a symbolic link"}
    if os.geteuid() == 0:  # a character device, as /dev/null is: only root may create one
        dev = tmp_path / "null.png"
        os.mknod(dev, 0o600 | 0o020000, os.makedev(1, 3))
        targets[dev] = "a device"
    for target, kind in targets.items():
        with pytest.raises(OutputError, match=kind):
            write_bytes_atomic(target, b"data")
    assert fifo.is_fifo() and folder.is_dir() and link.is_symlink() and regular.read_text() == "keep"
    if os.geteuid() == 0:
        assert (tmp_path / "null.png").is_char_device()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_long_names_keep_the_temp_name_within_the_file_system_limit(tmp_path: Path) -> None:
    name = "é" * 120 + ".depth.npy"  # 250 bytes in UTF-8, as long as ext4 allows with the suffix
    assert len(os.fsencode(name)) <= 255
    seen: list[str] = []
    with atomic_path(tmp_path / name) as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"x")
    assert len(os.fsencode(seen[0])) <= 255 and seen[0].endswith(".tmp.npy")
    assert (tmp_path / name).read_bytes() == b"x"


def test_stale_temps_of_killed_runs_are_removed_live_ones_kept(tmp_path: Path) -> None:
    from metrocli.atomic import remove_stale_temps

    target = tmp_path / "room.normal.npy"
    proc, tmp = _start_writer(target)  # a live writer: its temp must survive a cleanup
    try:
        dead = tmp_path / f".room.depth.metro-{_dead_pid()}-abc123_x.tmp.npy"
        dead.write_bytes(b"truncated")
        unrelated = tmp_path / ".room.depth.tmp.npy"  # not our pattern: never touched
        unrelated.write_bytes(b"user file")
        assert remove_stale_temps(tmp_path) == [dead]
        assert not dead.exists() and unrelated.exists() and tmp.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert remove_stale_temps(tmp_path) == [tmp]  # now its writer is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == [".room.depth.tmp.npy"]
