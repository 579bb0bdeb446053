"""Which files are photos: the one listing rule of ``metro depth`` and ``metro reconstruct`` (folders).

A photo is a file with an image extension the loader reads (:data:`IMAGE_SUFFIXES`) that is not hidden and is
not an output of this project (``*.depth.*``, ``*.normal.*``, ``*.confidence.*``, ``*.preview.*``: the maps
``metro depth`` and the sample renderer write beside photos; ``*-measured.*``: annotated pictures). Every
command lists folders with this rule (``--recursive`` walks subfolders, except hidden ones and the command's
own output folder). Sensor depth maps of a photo ``<stem>.*`` are
looked up in a folder by :data:`DEPTH_PATTERNS`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from metrocli.errors import DepthMapError, MetroUsageError
from metrocli.io.maps import safe_stem

#: File extensions of photos (what :func:`metrocli.camera.image.read_image` reads).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".heic", ".heif", ".tif", ".tiff", ".webp", ".bmp"})
#: Name parts of files this project writes beside photos (``x.depth.png``, ``x.preview.png``, ...).
OUTPUT_KINDS = ("depth", "normal", "confidence", "preview")
#: Endings of the stems of files this project writes (``metro measure --annotate x-measured.png``).
OUTPUT_STEM_ENDINGS = ("-measured",)
#: Depth files tried for photo ``<stem>.*`` in a depth folder, in this order.
DEPTH_PATTERNS = ("{stem}.depth.png", "{stem}.depth.npy", "{stem}.png", "{stem}.npy")


def is_project_output(path: Path) -> bool:
    """``x.depth.png``, ``x.normal.npy``, ``x.confidence.npy``, ``x.preview.png``, ``x-measured.png``: files
    this project writes, not photos."""
    parts = path.name.lower().split(".")
    return any(kind in parts[1:-1] for kind in OUTPUT_KINDS) or parts[0].endswith(OUTPUT_STEM_ENDINGS)


def is_photo_file(path: Path) -> bool:
    """An image file that is not hidden and not a project output (see the module docstring)."""
    return (
        path.suffix.lower() in IMAGE_SUFFIXES
        and not path.name.startswith(".")
        and not is_project_output(path)
        and path.is_file()
    )


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == f or f in resolved.parents for f in folders)


def list_photos(
    folder: str | os.PathLike[str],
    depth_dir: str | os.PathLike[str] | None = None,
    *,
    recursive: bool = False,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Photos of ``folder`` sorted by relative path; with ``recursive`` also those of its subfolders (hidden
    folders and the folders in ``exclude``, the command's output folders, are not entered). When ``depth_dir``
    is the same folder, the ``<stem>.png`` depth map of another photo ``<stem>.*`` there is not a photo
    either."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetroUsageError(f"{folder}: not a folder")
    skip = [Path(f).resolve() for f in exclude if Path(f).resolve() != folder.resolve()]
    if recursive:
        found: list[Path] = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _inside(Path(root) / d, skip))
            found.extend(Path(root) / n for n in names)
        files = sorted((p for p in found if is_photo_file(p)), key=lambda p: p.relative_to(folder).parts)
    else:
        files = sorted(p for p in folder.iterdir() if is_photo_file(p))
    if depth_dir is not None and Path(depth_dir).resolve() == folder.resolve():
        stems_of_others = {(p.parent, p.stem) for p in files if p.suffix.lower() != ".png"}
        files = [
            p for p in files if not (p.suffix.lower() == ".png" and (p.parent, p.stem) in stems_of_others)
        ]
    return files


def expand_inputs(
    inputs: Iterable[Path], *, recursive: bool = False, exclude: Iterable[str | os.PathLike[str]] = ()
) -> list[Path]:
    """Photos as given; folders replaced by their photos (:func:`list_photos`)."""
    photos: list[Path] = []
    exclude = list(exclude)
    for item in inputs:
        photos.extend(list_photos(item, recursive=recursive, exclude=exclude) if item.is_dir() else [item])
    return photos


def find_depth_file(photo: Path, depth_dir: str | os.PathLike[str]) -> Path:
    """The depth map of ``photo`` in ``depth_dir`` (see :data:`DEPTH_PATTERNS`); DepthMapError if none."""
    depth_dir = Path(depth_dir)
    for pattern in DEPTH_PATTERNS:
        cand = depth_dir / pattern.format(stem=photo.stem)
        if cand.is_file() and cand.resolve() != photo.resolve():
            return cand
    tried = ", ".join(p.format(stem=photo.stem) for p in DEPTH_PATTERNS)
    raise DepthMapError(f"{photo}: no depth map in {depth_dir} (tried {tried})")


def plan_stems(photos: Iterable[Path]) -> list[tuple[Path, str]]:
    """Pair each photo with its output stem, a function of the photo alone (never of the batch order).

    The stem is :func:`~metrocli.io.maps.safe_stem` of the name (Unicode and spaces kept). Photos whose stems
    coincide (ignoring case: ``a/x.jpg`` and ``b/x.jpeg``, or names that differ in a replaced character) all
    get ``<stem>-<8 hex digits of the SHA-256 of the photo's resolved path>``, so each keeps its own name
    whatever else is in the batch. A photo named twice (under two spellings of its path) is planned once. A
    name that is still not unique is a :class:`MetroUsageError`, before any work.
    """
    import hashlib

    unique: dict[Path, Path] = {}
    for photo in photos:
        unique.setdefault(photo.resolve(), photo)
    photos = list(unique.values())
    bases = [safe_stem(p.name) for p in photos]
    counts: dict[str, int] = {}
    for base in bases:
        counts[base.lower()] = counts.get(base.lower(), 0) + 1
    plan: list[tuple[Path, str]] = []
    owner: dict[str, Path] = {}
    for photo, base in zip(photos, bases, strict=True):
        stem = base
        if counts[base.lower()] > 1:
            digest = hashlib.sha256(os.fsencode(photo.resolve())).hexdigest()[:8]
            stem = f"{base}-{digest}"
        if stem.lower() in owner:
            raise MetroUsageError(
                f"{photo} and {owner[stem.lower()]} would write the same outputs ({stem}.*); "
                "rename one of them or run them separately"
            )
        owner[stem.lower()] = photo
        plan.append((photo, stem))
    return plan
