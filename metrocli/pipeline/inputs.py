"""Which files are photos: the one listing rule of ``metro depth`` and ``metro reconstruct`` (folders).

A photo is a file with an image extension the loader reads (:data:`IMAGE_SUFFIXES`) that is not hidden and is
not an output of this project (``*.depth.*``, ``*.normal.*``, ``*.confidence.*``, ``*.preview.*``: the maps
``metro depth`` and the sample renderer write beside photos). Sensor depth maps of a photo ``<stem>.*`` are
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
#: Depth files tried for photo ``<stem>.*`` in a depth folder, in this order.
DEPTH_PATTERNS = ("{stem}.depth.png", "{stem}.depth.npy", "{stem}.png", "{stem}.npy")


def is_project_output(path: Path) -> bool:
    """``x.depth.png``, ``x.normal.npy``, ``x.confidence.npy``, ``x.preview.png``: maps, not photos."""
    parts = path.name.lower().split(".")
    return any(kind in parts[1:-1] for kind in OUTPUT_KINDS)


def is_photo_file(path: Path) -> bool:
    """An image file that is not hidden and not a project output (see the module docstring)."""
    return (
        path.suffix.lower() in IMAGE_SUFFIXES
        and not path.name.startswith(".")
        and not is_project_output(path)
        and path.is_file()
    )


def list_photos(
    folder: str | os.PathLike[str], depth_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Photos of ``folder`` sorted by name (not recursive); when ``depth_dir`` is the same folder, the
    ``<stem>.png`` depth map of another photo ``<stem>.*`` there is not a photo either."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetroUsageError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if is_photo_file(p))
    if depth_dir is not None and Path(depth_dir).resolve() == folder.resolve():
        stems_of_others = {p.stem for p in files if p.suffix.lower() != ".png"}
        files = [p for p in files if not (p.suffix.lower() == ".png" and p.stem in stems_of_others)]
    return files


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Photos as given; folders replaced by their photos (:func:`list_photos`)."""
    photos: list[Path] = []
    for item in inputs:
        photos.extend(list_photos(item) if item.is_dir() else [item])
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
    """Pair each photo with a unique, safe output stem (``a/x.jpg`` and ``b/x.jpg`` -> ``x``, ``x-2``)."""
    used: set[str] = set()
    plan = []
    for photo in photos:
        base = safe_stem(photo.name)
        stem, k = base, 2
        while stem.lower() in used:
            stem, k = f"{base}-{k}", k + 1
        used.add(stem.lower())
        plan.append((photo, stem))
    return plan
