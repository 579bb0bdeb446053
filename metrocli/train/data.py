"""Training data: RGB-D frames from photo folders or Metric3D annotation files, split by scene, mixed evenly.

Two layouts are read (a DATA argument may be either):

* **photo folder** (``metro depth``/``measure`` ``--depth-dir`` conventions): photos in ``DATA`` and/or in its
  sub-folders (each sub-folder is a *scene*), each with a depth map ``<stem>.depth.png`` (16-bit,
  millimetres unless ``depth_scale`` says otherwise) or ``<stem>.depth.npy`` (metres), in the same folder
  or in ``depth_dir``; optional normals ``<stem>.normal.npy`` ((H, W, 3) camera frame, 0 = none). Intrinsics
  from EXIF, or ``focal_px`` for every photo.
* **annotation file**: ``DATA/test_annotations.json`` in the format ``metro eval`` reads
  (:mod:`metrocli.evaluation.dataset`); the scene of an entry is its ``scene`` key, else the rgb file's
  folder.

Several DATA arguments are several datasets; :class:`BalancedBatchSampler` gives each an equal share of
every batch (the official recipe's balancing) and shards the draws across distributed ranks.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from metrocli.errors import DatasetError, DepthMapError
from metrocli.train import cstm
from metrocli.train.cstm import AugmentConfig, CstmMode, Frame

log = logging.getLogger("metrocli.train.data")

#: The annotation file ``metro eval`` reads; training reads the same format.
ANNOTATIONS = "test_annotations.json"


@dataclass(frozen=True)
class FrameRef:
    """Where one training frame lives. ``cam_in`` (fx, fy, cx, cy) px or None (EXIF / ``focal_px``);
    ``depth_scale`` metres per stored unit or None (format default); ``scene`` groups frames for the split."""

    rgb: Path
    depth: Path
    scene: str
    dataset: str
    cam_in: tuple[float, float, float, float] | None = None
    depth_scale: float | None = None
    normal: Path | None = None
    focal_px: float | None = None
    annotated: bool = False


def _annotation_refs(root: Path) -> list[FrameRef]:
    from metrocli.evaluation import dataset as evalset

    ds = evalset.load_dataset(root)
    entries = json.loads((root / evalset.ANNOTATIONS).read_text(encoding="utf-8"))["files"]
    refs = []
    for entry, s in zip(entries, ds.samples, strict=True):
        scene = str(entry.get("scene") or s.rgb.parent.as_posix())
        refs.append(
            FrameRef(
                rgb=s.rgb,
                depth=s.depth,
                scene=scene,
                dataset=root.name,
                cam_in=s.cam_in,
                depth_scale=s.depth_scale,
                normal=s.normal,
                annotated=True,
            )
        )
    return refs


def _folder_refs(
    root: Path, depth_dir: Path | None, depth_scale: float | None, focal_px: float | None
) -> list[FrameRef]:
    from metrocli.pipeline.inputs import find_depth_file, list_photos

    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    refs = []
    for folder in folders:
        ddir = depth_dir / folder.relative_to(root) if depth_dir is not None else folder
        for photo in list_photos(folder, ddir):
            try:
                depth = find_depth_file(photo, ddir)
            except DepthMapError:
                log.warning("%s: no depth map, skipped", photo)
                continue
            normal = folder / f"{photo.stem}.normal.npy"
            refs.append(
                FrameRef(
                    rgb=photo,
                    depth=depth,
                    scene=folder.relative_to(root).as_posix() if folder != root else root.name,
                    dataset=root.name,
                    depth_scale=depth_scale,
                    normal=normal if normal.is_file() else None,
                    focal_px=focal_px,
                )
            )
    return refs


def find_frames(
    data: str | os.PathLike[str],
    *,
    depth_dir: str | os.PathLike[str] | None = None,
    depth_scale: float | None = None,
    focal_px: float | None = None,
) -> list[FrameRef]:
    """Every usable frame of one dataset (see the module docstring). Raises DatasetError when none."""
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"training data {root} is not a folder")
    if (root / ANNOTATIONS).is_file():
        refs = _annotation_refs(root)
    else:
        refs = _folder_refs(root, Path(depth_dir) if depth_dir is not None else None, depth_scale, focal_px)
    if not refs:
        raise DatasetError(
            f"{root}: no training frames (photos with <stem>.depth.png or <stem>.depth.npy, or {ANNOTATIONS})"
        )
    return refs


def load_frame(ref: FrameRef) -> Frame:
    """The metric :class:`Frame` of a reference (depth in metres, 0 = unknown; normals 0 = unknown)."""
    if ref.annotated:
        from metrocli.evaluation import dataset as evalset

        sample = evalset.Sample(ref.rgb, ref.depth, ref.depth_scale or 1.0, ref.cam_in, ref.normal)  # type: ignore[arg-type]
        rgb = evalset.load_rgb(sample)
        depth = evalset.load_depth_gt(sample)
        normal = evalset.load_normal_gt(sample)
        if normal is not None:
            normal = np.nan_to_num(normal, nan=0.0)
        k = ref.cam_in
        assert k is not None
    else:
        from metrocli.camera.photo import load_photo
        from metrocli.io.sensor_depth import read_depth_map

        photo = load_photo(ref.rgb, focal_px=ref.focal_px)
        rgb = photo.image
        depth = read_depth_map(ref.depth, photo, ref.depth_scale)
        i = photo.intrinsics
        k = (i.fx, i.fy, i.cx, i.cy)
        normal = None
        if ref.normal is not None:
            normal = np.nan_to_num(np.load(ref.normal, allow_pickle=False).astype(np.float32), nan=0.0)
    if depth.shape != rgb.shape[:2]:
        raise DatasetError(
            f"{ref.depth}: depth map is {depth.shape[::-1]} but {ref.rgb} is {rgb.shape[1::-1]}"
        )
    if normal is not None and normal.shape != (*rgb.shape[:2], 3):
        raise DatasetError(f"{ref.normal}: normal map shape {normal.shape} does not match {ref.rgb}")
    sparse = float((depth > 0).mean()) < 0.3
    return Frame(rgb, depth.astype(np.float32), k, normal=normal, sparse=sparse)


def split_by_scene(
    refs: Sequence[FrameRef], val_fraction: float, seed: int = 0
) -> tuple[list[FrameRef], list[FrameRef]]:
    """Train/validation split with whole scenes on one side: the scenes are ordered by a stable hash of their
    name and ``seed``, and the first ``round(val_fraction · n)`` (at least one, never all) go to validation.

    With a single scene, its frames are split the same way instead.
    """
    if val_fraction <= 0:
        return list(refs), []
    scenes = sorted({r.scene for r in refs})

    def key(r: FrameRef) -> str:
        return r.scene if len(scenes) > 1 else r.rgb.as_posix()

    units = sorted({key(r) for r in refs}, key=lambda u: zlib.crc32(f"{seed}:{u}".encode()))
    if len(units) < 2:
        return list(refs), []
    n_val = min(max(1, round(val_fraction * len(units))), len(units) - 1)
    held = set(units[:n_val])
    return [r for r in refs if key(r) not in held], [r for r in refs if key(r) in held]


class CanonicalDataset(Dataset):
    """Frames mapped into the canonical camera at ``size_hw``, as tensors for the model and the losses.

    Items: ``image`` (3, H, W) float32 normalised; ``target`` (1, H, W) canonical depth, -1 = unknown;
    ``normal`` (3, H, W) (0 = unknown); ``sem`` (1, H, W) int32 (-1); ``intrinsic`` (3, 3) float32 canonical;
    ``pad`` (4,) int64; ``scale`` float64 label scale; ``has_normal`` bool; ``sparse`` bool.
    ``focal_px``: canonical focal. ``augment=None`` is the deterministic validation transform. ``cache``
    keeps decoded frames in memory.
    """

    def __init__(
        self,
        refs: Sequence[FrameRef],
        size_hw: tuple[int, int],
        *,
        mode: CstmMode = "label",
        focal_px: float = cstm.CANONICAL_FOCAL_PX,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        self.refs = list(refs)
        self.size_hw = size_hw
        self.mode: CstmMode = mode
        self.focal_px = focal_px
        self.augment = augment
        self.seed = seed
        self.cache = cache
        self._frames: dict[int, Frame] = {}
        self._draws = 0

    def __len__(self) -> int:
        return len(self.refs)

    def frame(self, index: int) -> Frame:
        if index in self._frames:
            return self._frames[index]
        fr = load_frame(self.refs[index])
        if self.cache:
            self._frames[index] = fr
        return fr

    def __getitem__(self, index: int) -> dict[str, Any]:
        self._draws += 1
        rng = np.random.default_rng([self.seed, index, self._draws, os.getpid()])
        fr = cstm.prepare(
            self.frame(index),
            self.size_hw,
            mode=self.mode,
            focal_px=self.focal_px,
            augment=self.augment,
            rng=rng,
        )
        return frame_to_item(fr)


def frame_to_item(fr: Frame) -> dict[str, Any]:
    """A prepared canonical :class:`Frame` -> the tensors of one training item."""
    h, w = fr.depth.shape
    fx, fy, cx, cy = fr.intrinsics
    normal = fr.normal if fr.normal is not None else np.zeros((h, w, 3), np.float32)
    sem = fr.sem if fr.sem is not None else np.zeros((h, w), np.int32)
    return {
        "image": torch.from_numpy(cstm.normalise_image(fr.rgb)),
        "target": torch.from_numpy(np.ascontiguousarray(fr.depth, dtype=np.float32))[None],
        "normal": torch.from_numpy(np.ascontiguousarray(normal.transpose(2, 0, 1), dtype=np.float32)),
        "sem": torch.from_numpy(np.ascontiguousarray(sem, dtype=np.int32))[None],
        "intrinsic": torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32),
        "pad": torch.tensor(fr.pad, dtype=torch.int64),
        "scale": torch.tensor(fr.scale, dtype=torch.float64),
        "has_normal": torch.tensor(fr.normal is not None and bool(np.any(fr.normal != 0))),
        "sparse": torch.tensor(fr.sparse),
    }


class BalancedBatchSampler(Sampler[list[int]]):
    """Endless batches over concatenated datasets, each dataset an equal share of every batch.

    ``sizes``: dataset lengths (indices are offsets into their concatenation). Each dataset is walked in
    reshuffled epochs; with ``world_size`` > 1 rank r takes every ``world_size``-th index of each shuffle
    (the :class:`~torch.utils.data.DistributedSampler` scheme), so ranks see disjoint frames.
    """

    def __init__(
        self, sizes: Sequence[int], batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        if batch_size < 1 or not sizes or min(sizes) < 1:
            raise ValueError("need a positive batch size and non-empty datasets")
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)

    def _stream(self, k: int) -> Iterator[int]:
        epoch = 0
        while True:
            perm = np.random.default_rng([self.seed, k, epoch]).permutation(self.sizes[k])
            mine = perm[self.rank :: self.world_size] if len(perm) >= self.world_size else perm
            for i in mine:
                yield int(self.offsets[k] + i)
            epoch += 1

    def __iter__(self) -> Iterator[list[int]]:
        streams = [self._stream(k) for k in range(len(self.sizes))]
        n = len(streams)
        turn = 0
        while True:
            share = [
                self.batch_size // n + (1 if (j - turn) % n < self.batch_size % n else 0) for j in range(n)
            ]
            yield [next(streams[j]) for j in range(n) for _ in range(share[j])]
            turn += 1

    def __len__(self) -> int:  # endless; a large number for tools that ask
        return 2**31 - 1


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of training items (all items share the input size)."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
