"""Output paths checked before any work: the one place that decides whether a command may write where asked.

Every command resolves its outputs here before it loads a model or reads a photo, so that a bad ``-o`` is one
usage error (exit 2) in a second rather than a failure after minutes of work. A path is refused when it

- is a folder, a device, a FIFO, a socket or a symbolic link (:func:`~metrocli.atomic.check_output_target`;
  only regular files or new paths are ever replaced),
- is one of the command's inputs (photo, depth map, dataset annotations, weights), by resolved path and inode,
- lies in a folder that cannot be created or written (probed with a real file, which also catches read-only
  mounts and root, for whom ``os.access`` always says yes),
- has a sibling the command would also write that is not ours (``reconstruct DIR -o DIR/samples.ply`` would
  replace an unrelated ``samples.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from metrocli.atomic import check_output_target
from metrocli.errors import OutputError

#: Extensions of the annotated picture (``measure --annotate``); it is written as PNG.
ANNOTATION_SUFFIXES = (".png",)


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    try:
        st = os.stat(path)
    except OSError:
        return path.resolve(), None
    return path.resolve(), (st.st_dev, st.st_ino)


def _is_input(path: Path, inputs: Iterable[str | os.PathLike[str] | None]) -> Path | None:
    """The input that ``path`` is (same resolved path, or same inode through another name), or None."""
    resolved, ident = _identity(path)
    for raw in inputs:
        if raw is None:
            continue
        other = Path(raw)
        o_resolved, o_ident = _identity(other)
        if o_resolved == resolved or (ident is not None and ident == o_ident):
            return other
    return None


def _existing_ancestor(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable_folder(folder: str | os.PathLike[str], *, option: str = "-o") -> Path:
    """``folder`` if it exists as a folder (or can be created) and a file can be written in it.

    Raises:
        OutputError: it is a file, its nearest existing ancestor is not a folder, or writing there fails.
    """
    folder = Path(folder)
    base = _existing_ancestor(folder)
    if not base.is_dir():
        where = folder if base == Path(os.path.abspath(folder)) else base
        raise OutputError(f"{option} {folder}: {where} is not a folder")
    try:  # a real probe: os.access says yes to root and on read-only mounts
        fd, probe = tempfile.mkstemp(prefix=".metro-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise OutputError(f"{option} {folder}: cannot write in {base} ({reason})") from None
    return folder


def check_output_file(
    path: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    suffixes: tuple[str, ...] | None = None,
    option: str = "-o",
) -> Path:
    """``path`` if the command may write its output file there (see the module docstring).

    ``suffixes``: the accepted extensions (lower case), or None for any.

    Raises:
        OutputError: the path is refused (a usage error, exit 2).
    """
    path = Path(path)
    check_not_input([path], inputs, option=option)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OutputError(
            f"{option} {path}: use one of {', '.join(suffixes)} as extension "
            f"(not {path.suffix.lower() or 'none'!r})"
        )
    check_writable_folder(path.parent, option=option)
    try:
        check_output_target(path)
    except OutputError as exc:
        raise OutputError(f"{option} {exc}") from None
    return path


def check_not_input(
    outputs: Iterable[str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str] | None],
    *,
    option: str = "-o",
) -> None:
    """:class:`OutputError` (exit 2, before any work) when an output path is one of the command's inputs (a
    photo, a sensor depth map, a dataset file, the weights), by resolved path or inode (a hard link): metro
    never writes over an input."""
    inputs = [p for p in inputs if p is not None]
    for out in outputs:
        if out is None:
            continue
        clash = _is_input(Path(out), inputs)
        if clash is not None:
            raise OutputError(
                f"{option} {out} is an input of this command ({clash}); metro never writes over an input"
            )


def check_output_folder(
    folder: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "-o",
) -> Path:
    """``folder`` if the command may write its outputs into it: a folder (or a new path) that is writable and
    is not one of the inputs (a folder input is fine: outputs go beside the photos, never onto them).

    Raises:
        OutputError: the folder is refused (a usage error, exit 2).
    """
    folder = Path(folder)
    if folder.is_symlink() and not folder.is_dir():
        raise OutputError(f"{option} {folder} is a symbolic link that leads nowhere")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder} is not a folder")
    check_writable_folder(folder, option=option)
    return folder


def check_sibling(
    sibling: str | os.PathLike[str], *, ours: bool, owner: str | os.PathLike[str], option: str = "-o"
) -> Path:
    """``sibling`` (a file the command writes beside its main output ``owner``) if it is new, or ``ours``
    says that the existing one was written by metro for ``owner``.

    Raises:
        OutputError: an unrelated file would be replaced, or the sibling is a special file.
    """
    sibling = Path(sibling)
    try:
        check_output_target(sibling)
    except OutputError as exc:
        raise OutputError(f"{option} {owner}: {exc}") from None
    if sibling.exists() and not ours:
        raise OutputError(
            f"{option} {owner} would overwrite {sibling}, which metro did not write; "
            "choose another output name or move that file"
        )
    return sibling


def is_scene_json(path: str | os.PathLike[str], mesh_name: str) -> bool:
    """True if ``path`` is a scene JSON that ``metro reconstruct FOLDER`` wrote for the mesh ``mesh_name``."""
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        with open(path, "rb") as fh:
            data = json.loads(fh.read(64 << 20))
        return (
            isinstance(data, dict)
            and isinstance(data.get("version"), int)
            and data.get("mesh") == mesh_name
            and isinstance(data.get("photos"), list)
        )
    return False


def eval_inputs(dataset: str | os.PathLike[str]) -> list[Path]:
    """The files ``metro eval`` reads from ``dataset``: its annotations and, when they load, every frame's
    photo, depth and normal files (an unreadable dataset is reported later, by the evaluation itself)."""
    from metrocli.errors import MetroError
    from metrocli.evaluation.dataset import ANNOTATIONS, load_dataset

    files = [Path(dataset) / ANNOTATIONS]
    with contextlib.suppress(MetroError, OSError, ValueError):
        for s in load_dataset(Path(dataset)).samples:
            files += [s.rgb, s.depth, *([s.normal] if s.normal is not None else [])]
    return files
