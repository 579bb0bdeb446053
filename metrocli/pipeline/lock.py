"""One writer per output folder: an advisory lock (``fcntl.flock``) on the folder itself.

Two ``metro`` runs writing into one folder would each skip or overwrite the other's half-finished work and
both report success. :func:`output_lock` makes the second run wait up to ``wait_s`` seconds for the first,
then refuse with a clear message. The lock is released when the run ends, however it ends (the kernel drops
it when the process dies), so a killed run never leaves a stale lock behind. The folder's own descriptor is
locked rather than a lock file in it, so that no file is ever added beside the user's outputs (``metro
reconstruct FOLDER -o ~/scans/room.ply`` leaves only ``room.ply`` and ``room.json`` in ``~/scans``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from metrocli.errors import MetroError

log = logging.getLogger("metrocli.pipeline.lock")

#: Seconds a second run waits for the first by default (``$METRO_LOCK_WAIT_S`` overrides).
DEFAULT_WAIT_S = 0.0


class OutputBusyError(MetroError):
    """Another metro process is writing into the same output folder."""


def _wait_default() -> float:
    try:
        return max(0.0, float(os.environ.get("METRO_LOCK_WAIT_S", DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str], *, wait_s: float | None = None) -> Iterator[None]:
    """Hold the lock of output ``folder`` (created if needed) for the duration of the ``with`` block.

    Raises:
        OutputBusyError: another process holds it for more than ``wait_s`` seconds.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory folder locks; runs are not serialised there
        yield
        return
    wait_s = _wait_default() if wait_s is None else wait_s
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OutputBusyError(
                        f"{folder}: another metro run is writing here; wait for it to finish "
                        "or choose another output folder"
                    ) from None
                if not told:
                    log.warning("%s: waiting for another metro run to finish", folder)
                    told = True
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock
