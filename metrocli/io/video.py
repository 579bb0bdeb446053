"""Video input: frames sampled at a fixed rate from a video file (OpenCV ``VideoCapture``).

``metro reconstruct walk.mp4 -o scene.ply --fps 2`` samples two frames per second of video and registers
them as a photo sequence (capture order = time order, so sequential pairing with loop closures fits).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metrocli.errors import MetroUsageError

#: File extensions read as videos.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"})


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file with a video extension (:data:`VIDEO_SUFFIXES`)."""
    p = Path(path)
    return p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()


def sample_frames(
    path: str | os.PathLike[str], fps: float, *, max_frames: int = 2000
) -> Iterator[tuple[float, np.ndarray]]:
    """``(time_s, rgb)`` of frames sampled every ``1 / fps`` seconds of video (upright (H, W, 3) uint8 RGB).

    The video's own frame rate (30 when the file does not say) converts frame numbers to time; every frame
    is decoded (seeking is unreliable in many codecs) and the first one at or after each sampling instant is
    kept.

    Raises:
        MetroUsageError: ``fps`` is not positive, or the file cannot be decoded as a video.
    """
    import cv2

    if not (np.isfinite(fps) and fps > 0):
        raise MetroUsageError(f"--fps must be a positive number of frames per second, got {fps}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MetroUsageError(f"{path}: cannot be read as a video")
        native = float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
        native = native if np.isfinite(native) and native > 0 else 30.0
        step_s, next_s, index, kept = 1.0 / fps, 0.0, 0, 0
        while kept < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            t = index / native
            index += 1
            if t + 1e-6 < next_s:
                continue
            next_s += step_s * max(1, int((t - next_s) // step_s) + 1)
            kept += 1
            yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if index == 0:
            raise MetroUsageError(f"{path}: no frame could be decoded")
    finally:
        cap.release()


def write_frames(path: str | os.PathLike[str], folder: str | os.PathLike[str], fps: float) -> list[Path]:
    """Write the frames of :func:`sample_frames` as lossless PNGs ``frame_00000_t0.00s.png`` (names sort in
    time order) into ``folder``; returns their paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, (t, rgb) in enumerate(sample_frames(path, fps)):
        p = folder / f"frame_{k:05d}_t{t:.2f}s.png"
        Image.fromarray(rgb).save(p)
        out.append(p)
    return out
