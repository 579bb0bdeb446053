"""Off-centre principal points: a rendered crop predicted by a stand-in network that, like Metric3D, assumes
the principal point at the centre of its input. Padding the photo so that its principal point is centred
gives every pixel the depth along its own ray; feeding the crop as it is does not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from metrocli.camera.calibration import Calibration
from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MetroUsageError
from metrocli.model.spec import ModelSpec
from metrocli.pipeline.principal import centring_pad, predict_centred
from metrocli.pipeline.provider import FocalMode, ModelDepth
from metrocli.prediction import Prediction
from metrocli.synth.camera import intrinsics_for_lens, look_at
from metrocli.synth.render import render
from metrocli.synth.scene import room_scene

POSE = look_at((1.0, 0.4, 1.6), (2.0, 2.9, 0.7))
TOP, LEFT, H, W = 30, 40, 160, 200  # the crop of the 320 x 240 render


class CentredOracle:
    """Renders the room at the focal length it is given, as a camera whose principal point is the centre of
    the input image (what the network assumes), and records what it was given."""

    def __init__(self) -> None:
        self.inputs: list[tuple[tuple[int, ...], Intrinsics]] = []

    def predict(self, image: np.ndarray, intrinsics: Intrinsics, *, normals: bool = True) -> Prediction:
        h, w = image.shape[:2]
        self.inputs.append((image.shape, intrinsics))
        view = render(room_scene(), Intrinsics(intrinsics.fx, intrinsics.fy, w / 2, h / 2, w, h), POSE)
        conf = np.ones((h, w), np.float32)
        return Prediction(view.depth_m, view.normal if normals else None, conf, None, intrinsics, "oracle")


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    k = intrinsics_for_lens(320, 240, 26.0)
    full = render(room_scene(), k, POSE)
    path = tmp_path_factory.mktemp("crop") / "crop.png"
    Image.fromarray(full.rgb[TOP : TOP + H, LEFT : LEFT + W]).save(path)
    k_crop = Intrinsics(k.fx, k.fy, k.cx - LEFT, k.cy - TOP, W, H, "user")
    return {"path": path, "k": k_crop, "depth": full.depth_m[TOP : TOP + H, LEFT : LEFT + W]}


def _rel_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ok = (a > 0) & (b > 0)
    return np.abs(a[ok] - b[ok]) / b[ok]


def test_centring_pad() -> None:
    assert centring_pad(Intrinsics(500, 500, 320, 240, 640, 480)) == (0, 0, 0, 0)
    assert centring_pad(Intrinsics(500, 500, 320.4, 240, 640, 480)) == (0, 0, 0, 1)
    assert centring_pad(Intrinsics(500, 500, 120, 90, 200, 160)) == (0, 20, 0, 40)
    assert centring_pad(Intrinsics(500, 500, 60, 100, 200, 160)) == (0, 40, 80, 0)
    with pytest.raises(MetroUsageError, match="principal point"):
        centring_pad(Intrinsics(500, 500, -300, 80, 200, 160))


def test_a_rendered_crop_keeps_its_rays(crop: dict) -> None:
    oracle = CentredOracle()
    k = crop["k"]
    provider = ModelDepth(ModelSpec(), FocalMode(calibration=Calibration(k.fx, k.fy, k.cx, k.cy)))
    provider._model = oracle  # type: ignore[assignment]
    photo = provider.focal.load_photo(crop["path"])
    assert photo.intrinsics.as_tuple() == k.as_tuple() and photo.intrinsics.focal_source == "user"
    depth = provider.provide(photo)
    # the network saw the crop padded so that the principal point is its centre
    shape, k_in = oracle.inputs[-1]
    assert shape == (H + 20, W + 40, 3)
    assert (k_in.cx, k_in.cy) == (shape[1] / 2, shape[0] / 2)
    assert depth.depth_m.shape == (H, W) and depth.normal is not None and depth.normal.shape == (H, W, 3)
    assert depth.intrinsics == photo.intrinsics
    err = _rel_error(depth.depth_m, crop["depth"])
    assert err.size > 0.9 * H * W and np.median(err) < 1e-5 and err.max() < 1e-3
    # the crop fed as it is: the network's rays are not the photo's
    wrong = oracle.predict(photo.image, k).depth
    assert np.median(_rel_error(wrong, crop["depth"])) > 0.02


def test_centred_photos_go_straight_through(crop: dict) -> None:
    oracle = CentredOracle()
    k = Intrinsics(300.0, 300.0, 100.0, 80.0, W, H)
    pred = predict_centred(oracle, np.zeros((H, W, 3), np.uint8), k)  # type: ignore[arg-type]
    assert oracle.inputs[-1][0] == (H, W, 3) and pred.depth.shape == (H, W)


def test_calibration_mode_is_exclusive_and_recorded() -> None:
    cal = Calibration(500.0, 501.0, 300.0, 200.0)
    with pytest.raises(MetroUsageError, match="not both"):
        FocalMode(focal_px=500.0, calibration=cal)
    mode = FocalMode(calibration=cal)
    assert mode.mode == "user" and mode.key()["intrinsics"] == [500.0, 501.0, 300.0, 200.0, None, None]
    assert "intrinsics" not in FocalMode().key()  # resume records of other modes are unchanged
