"""Dataset loading (Metric3D's test_annotations.json) and the evaluation pipeline without a network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import DatasetError, MetroUsageError
from metrocli.evaluation.dataset import (
    default_crop,
    default_max_depth,
    load_dataset,
    load_depth_gt,
    load_normal_gt,
    load_rgb,
)
from metrocli.pipeline.evaluate import EvalOptions, evaluate_dataset
from metrocli.prediction import Prediction


@pytest.fixture(scope="module")
def demo(shared_dir: Path) -> Path:
    path = shared_dir / "datasets" / "metric3d-demo"
    if not (path / "nyu_demo" / "test_annotations.json").is_file():
        pytest.skip("metric3d-demo datasets are not present")
    return path


def test_load_shared_nyu_and_kitti(demo: Path) -> None:
    nyu = load_dataset(demo / "nyu_demo")
    assert nyu.name == "nyu_demo" and len(nyu.samples) == 3
    s = nyu.samples[0]
    assert s.rgb == demo / "nyu_demo" / "rgb" / "rgb_00000.jpg" and s.depth_scale == 1000.0
    assert s.cam_in == (518.8579, 519.46961, 325.58245, 253.73617) and s.normal is None
    rgb, gt = load_rgb(s), load_depth_gt(s)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    assert gt.shape == (480, 640) and gt.dtype == np.float32
    raw = np.asarray(Image.open(s.depth))
    np.testing.assert_allclose(gt, raw / 1000.0, rtol=1e-6)
    assert 0.5 < np.median(gt[gt > 0]) < 10
    kitti = load_dataset(demo / "kitti_demo")
    k = kitti.samples[0]
    gt_k = load_depth_gt(k)
    assert gt_k.shape == load_rgb(k).shape[:2] == (375, 1242)
    assert (gt_k > 0).mean() < 0.3 and gt_k.max() > 20  # sparse LiDAR, outdoor range (value / 256)


def test_default_crops() -> None:
    assert default_crop("nyu_demo") == "eigen"
    assert default_crop("KITTI") == "garg"
    assert default_crop("my_room") == "none"


def test_png_normals_in_metric3d_convention(tmp_path: Path) -> None:
    # Metric3D's NYU files: n = -((B, G, R) / 255 * 2 - 1); (0, 0, 0) = no normal.
    root = tmp_path / "ds"
    root.mkdir()
    entry = _frame(root, np.ones((1, 3)))
    png = np.array([[[255, 128, 128], [128, 128, 0], [0, 0, 0]]], np.uint8)  # R, G, B as stored
    Image.fromarray(png).save(root / "n.png")
    entry["normal"] = "n.png"
    _write_dataset(root, [entry])
    normal = load_normal_gt(load_dataset(root).samples[0])
    assert normal is not None and normal.shape == (1, 3, 3)
    np.testing.assert_allclose(normal[0, 0], [-0.0039, -0.0039, -1.0], atol=1e-3)  # facing the camera
    np.testing.assert_allclose(normal[0, 1], [1.0, -0.0039, -0.0039], atol=1e-3)
    assert np.isnan(normal[0, 2]).all()


def test_default_caps() -> None:
    assert default_max_depth("nyu_demo")[0] == 10.0
    assert default_max_depth("KITTI_eigen")[0] == 80.0
    far = [np.full((4, 4), 30.0, np.float32)]
    near = [np.full((4, 4), 3.0, np.float32)]
    assert default_max_depth("mine", far) == (80.0, "outdoor (ground-truth depth range)")
    assert default_max_depth("mine", near)[0] == 10.0


def _write_dataset(root: Path, entries: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_annotations.json").write_text(json.dumps({"files": entries}))
    return root


def _frame(root: Path, depth_m: np.ndarray, name: str = "f0") -> dict:
    h, w = depth_m.shape
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / f"{name}.png")
    Image.fromarray(np.round(depth_m * 1000).astype(np.uint16)).save(root / f"{name}_d.png")
    return {
        "rgb": f"{name}.png",
        "depth": f"{name}_d.png",
        "depth_scale": 1000.0,
        "cam_in": [50, 50, w / 2, h / 2],
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"rgb": "f0.png", "depth": "f0_d.png", "depth_scale": 1000.0}, "cam_in"),
        ({"rgb": "f0.png", "depth": "f0_d.png", "cam_in": [0, 1, 2, 3]}, "cam_in"),
        ({"rgb": "f0.png", "depth": "f0_d.png", "cam_in": [1, 1, 2, 3], "depth_scale": -1}, "depth_scale"),
        ({"rgb": "nope.png", "depth": "f0_d.png", "cam_in": [1, 1, 2, 3]}, "rgb file nope.png not found"),
        ({"rgb": "f0.png", "cam_in": [1, 1, 2, 3]}, "no valid 'depth' path"),
    ],
)
def test_malformed_entries(tmp_path: Path, entry: dict, message: str) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    _frame(root, np.ones((4, 6)))
    _write_dataset(root, [entry])
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_malformed_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match=r"has no test_annotations\.json"):
        load_dataset(tmp_path)
    (tmp_path / "test_annotations.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(tmp_path)
    (tmp_path / "test_annotations.json").write_text('{"files": []}')
    with pytest.raises(DatasetError, match="non-empty 'files'"):
        load_dataset(tmp_path)


def _oracle(scale: float = 1.0, normal: np.ndarray | None = None):
    """Predicts the ground truth of the frame being evaluated (times ``scale``)."""
    state: dict = {}

    def predict(image: np.ndarray, intrinsics: Intrinsics) -> Prediction:
        gt = state["gt"]
        return Prediction(gt * scale, normal, np.ones_like(gt), None, intrinsics, "oracle")

    return predict, state


def test_evaluate_with_ground_truth_normals(tmp_path: Path) -> None:
    root = tmp_path / "indoor_set"
    root.mkdir()
    depth = np.linspace(1, 5, 24).reshape(4, 6)
    entry = _frame(root, depth)
    n = np.zeros((4, 6, 3), np.float32)
    n[..., 2] = -1
    n[0, 0] = np.nan  # no normal measured here
    np.save(root / "f0_n.npy", n)
    entry["normal"] = "f0_n.npy"
    _write_dataset(root, [entry])
    gt_n = load_normal_gt(load_dataset(root).samples[0])
    assert gt_n is not None and np.isnan(gt_n[0, 0]).all() and gt_n[1, 1, 2] == -1
    pred_n = n.copy()
    pred_n[0, 1] = (1, 0, 0)  # one pixel 90 degrees off
    predict, state = _oracle(scale=1.1, normal=pred_n)
    state["gt"] = load_depth_gt(load_dataset(root).samples[0])
    report = evaluate_dataset(root, EvalOptions(), predict=predict, progress=False)
    assert report.max_depth_m == 10.0 and "indoor" in report.cap_reason and report.crop == "none"
    assert report.mean_depth["abs_rel"] == pytest.approx(0.1, abs=1e-3)
    assert report.mean_depth["delta1"] == 1.0
    assert report.mean_normal is not None
    assert report.mean_normal["mean_deg"] == pytest.approx(90 / 23, abs=1e-3)
    assert report.mean_normal["within_11_25"] == pytest.approx(22 / 23)
    data = report.to_dict()
    assert data["frames"] == 1 and data["samples"][0]["normal"]["valid_pixels"] == 23
    json.dumps(data, allow_nan=False)


def test_evaluate_shared_kitti_with_ground_truth_as_prediction(demo: Path) -> None:
    ds = load_dataset(demo / "kitti_demo")
    gts = {s.name: load_depth_gt(s) for s in ds.samples}
    names = iter(s.name for s in ds.samples)

    def predict(image: np.ndarray, intrinsics: Intrinsics) -> Prediction:
        gt = gts[next(names)]
        assert image.shape[:2] == gt.shape and intrinsics.fx == pytest.approx(707.0493)
        return Prediction(gt, None, np.ones_like(gt), None, intrinsics, "oracle")

    report = evaluate_dataset(demo / "kitti_demo", EvalOptions(), predict=predict, progress=False)
    assert report.max_depth_m == 80.0 and len(report.samples) == 3 and report.failed == ()
    assert report.crop == "garg" and report.to_dict()["crop"] == "garg"
    assert report.mean_depth["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert report.mean_depth["delta1"] == 1.0 and report.mean_normal is None


def test_bad_frame_is_skipped_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "nyu_like"
    root.mkdir()
    good = _frame(root, np.full((4, 6), 2.0), "a")
    bad = _frame(root, np.full((4, 6), 2.0), "b")
    (root / "b.png").write_bytes(b"not a png")
    _write_dataset(root, [good, bad])
    predict = lambda image, k: Prediction(  # noqa: E731
        np.full((4, 6), 2.0, np.float32), None, np.ones((4, 6), np.float32), None, k, "const"
    )
    report = evaluate_dataset(root, EvalOptions(), predict=predict, progress=False)
    assert [s.name for s in report.samples] == ["a.png"]
    assert report.failed[0][0] == "b.png" and "b.png" in report.failed[0][1]
    with pytest.raises(MetroUsageError, match="min-depth"):
        evaluate_dataset(root, EvalOptions(min_depth_m=20.0), predict=predict, progress=False)


def test_frame_without_valid_ground_truth_fails_with_its_reason(tmp_path: Path) -> None:
    root = tmp_path / "nyu_like"
    root.mkdir()
    good = _frame(root, np.full((4, 6), 2.0), "a")
    empty = _frame(root, np.zeros((4, 6)), "b")  # no depth at all (or a wrong --depth-scale)
    _write_dataset(root, [good, empty])
    predict = lambda image, k: Prediction(  # noqa: E731
        np.full((4, 6), 2.0, np.float32), None, np.ones((4, 6), np.float32), None, k, "const"
    )
    report = evaluate_dataset(root, EvalOptions(), predict=predict, progress=False)
    assert [s.name for s in report.samples] == ["a.png"]
    ((name, error),) = report.failed
    assert name == "b.png" and "no ground-truth pixel between 0.001 and 10 m" in error
    assert report.to_dict()["frames"] == 1


def test_a_model_provider_is_evaluated_in_batches_in_order(tmp_path: Path, monkeypatch) -> None:
    """Through the engine: frames read ahead, up to --batch-size frames per forward, scores in frame order
    (each frame's own prediction: the stand-in model predicts each frame's depth from its grey level), and a
    bad frame fails alone."""
    from metrocli.model.spec import ModelSpec
    from metrocli.pipeline.provider import ModelDepth

    root = tmp_path / "nyu_batch"
    root.mkdir()
    entries = []
    for i in range(5):
        depth = np.full((4, 6), 1.0 + i)
        entry = _frame(root, depth, f"f{i}")
        Image.fromarray(np.full((4, 6, 3), 10 * (i + 1), np.uint8)).save(root / f"f{i}.png")
        entries.append(entry)
    (root / "f3.png").write_bytes(b"not a png")
    _write_dataset(root, entries)

    class GreyModel:
        """Depth = grey level / 10 (so frame i predicts 1 + i m, its ground truth)."""

        precision = "fp32"

        def __init__(self) -> None:
            self.batches: list[int] = []

        def predict(self, image, intrinsics, *, normals=True):
            return self.predict_batch([image], [intrinsics], normals=normals)[0]

        def predict_batch(self, images, intrinsics, *, normals=True):
            self.batches.append(len(images))
            return [
                Prediction(
                    np.full(im.shape[:2], im[0, 0, 0] / 10, np.float32),
                    None,
                    np.ones(im.shape[:2], np.float32),
                    None,
                    k,
                    "vit-small",
                )
                for im, k in zip(images, intrinsics, strict=True)
            ]

    model = GreyModel()
    monkeypatch.setattr(ModelDepth, "model", lambda self: model)
    report = evaluate_dataset(
        root, EvalOptions(), ModelDepth(ModelSpec("vit-small")), progress=False, batch_size=2
    )
    assert [s.name for s in report.samples] == ["f0.png", "f1.png", "f2.png", "f4.png"]
    assert all(s.depth["abs_rel"] == pytest.approx(0.0, abs=1e-6) for s in report.samples)
    assert [name for name, _ in report.failed] == ["f3.png"]
    assert model.batches == [2, 2]  # f0+f1 in one forward, f2+f4 in one forward (f3 is unreadable)
