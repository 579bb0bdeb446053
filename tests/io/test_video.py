"""Video input (issue 16): frames sampled at --fps with OpenCV, and the CLI's usage errors for videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metrocli.cli.main import cli
from metrocli.errors import MetroUsageError
from metrocli.io.video import is_video, sample_frames, write_frames


def _clip(path: Path, n: int = 20, fps: float = 10.0) -> Path:
    """An MJPG clip whose frame k is a flat grey of level 10 k (so a frame tells its own index)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for k in range(n):
        writer.write(np.full((48, 64, 3), 10 * k, np.uint8))
    writer.release()
    return path


def test_frames_are_sampled_at_the_requested_rate(tmp_path) -> None:
    clip = _clip(tmp_path / "walk.avi")
    assert is_video(clip) and not is_video(tmp_path / "missing.mp4")
    frames = list(sample_frames(clip, 2.0))
    assert [round(t, 3) for t, _ in frames] == [0.0, 0.5, 1.0, 1.5]
    levels = [int(np.median(rgb)) for _, rgb in frames]
    assert levels == pytest.approx([0, 50, 100, 150], abs=4)
    assert frames[0][1].shape == (48, 64, 3) and frames[0][1].dtype == np.uint8
    paths = write_frames(clip, tmp_path / "frames", 4.0)
    assert len(paths) == 8 and paths == sorted(paths) and paths[1].name == "frame_00001_t0.30s.png"
    assert len(list(sample_frames(clip, 100.0))) == 20  # never more than the video has


def test_bad_videos_and_rates(tmp_path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(MetroUsageError):
        list(sample_frames(bad, 2.0))
    with pytest.raises(MetroUsageError, match="fps"):
        list(sample_frames(_clip(tmp_path / "ok.avi"), 0.0))


def test_cli_video_usage_errors(tmp_path) -> None:
    clip = _clip(tmp_path / "walk.avi", n=3)
    runner = CliRunner()
    result = runner.invoke(cli, ["reconstruct", str(clip), "-o", str(tmp_path / "s.ply"), "--fps", "0"])
    assert result.exit_code == 2
    result = runner.invoke(
        cli, ["reconstruct", str(clip), "-o", str(tmp_path / "s.ply"), "--depth-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "model" in result.output
    result = runner.invoke(cli, ["reconstruct", str(clip), "-o", str(tmp_path / "s.ply"), "--fps", "0.1"])
    assert result.exit_code == 2 and "need 2 or more" in result.output
