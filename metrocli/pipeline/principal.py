"""Photos whose principal point is off-centre (crops, calibrated cameras: ``--intrinsics``, ``--camera``).

Metric3D's network assumes the principal point at the centre of its input: the official pipeline pads the
photo symmetrically and de-canonicalises depth with the focal length only. A photo whose principal point is
more than half a pixel off-centre is therefore padded with the mean colour (the colour the official
pre-processing pads with) so that its principal point is the centre of the padded image (to within half a
pixel), predicted at that size, and the prediction is cropped back to the photo: every pixel keeps the ray it
was taken through. The cost: the photo takes a smaller share of the network input (a principal point at an
edge doubles that side). A principal point farther out than :data:`MAX_PAD_FACTOR` allows is refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MetroUsageError
from metrocli.prediction import Prediction

if TYPE_CHECKING:
    from metrocli.model.metric3d import Metric3D

#: Largest padded side, as a multiple of the photo's side.
MAX_PAD_FACTOR = 3.0


def centring_pad(k: Intrinsics) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` pixels that put the principal point of ``k`` at the centre of the
    padded image (all 0 when it is within half a pixel already). MetroUsageError when the padded image
    would exceed :data:`MAX_PAD_FACTOR` times the photo."""
    left, right = max(0, round(k.width - 2 * k.cx)), max(0, round(2 * k.cx - k.width))
    top, bottom = max(0, round(k.height - 2 * k.cy)), max(0, round(2 * k.cy - k.height))
    if (
        k.width + left + right > MAX_PAD_FACTOR * k.width
        or k.height + top + bottom > MAX_PAD_FACTOR * k.height
    ):
        raise MetroUsageError(
            f"the principal point ({k.cx:g}, {k.cy:g}) is too far from the centre of the "
            f"{k.width}x{k.height} photo for the model"
        )
    return top, bottom, left, right


def predict_centred(model: Metric3D, image: np.ndarray, k: Intrinsics, *, normals: bool = True) -> Prediction:
    """``model.predict`` of ``image`` taken with ``k``, its principal point honoured (see the module
    docstring); the prediction is of ``image``'s size with intrinsics ``k``."""
    top, bottom, left, right = centring_pad(k)
    if not (top or bottom or left or right):
        return model.predict(image, k, normals=normals)
    import cv2

    from metrocli.model.presets import RGB_MEAN

    mean = tuple(round(v) for v in RGB_MEAN)
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(image), top, bottom, left, right, cv2.BORDER_CONSTANT, value=mean
    )
    height, width = padded.shape[:2]
    k_padded = Intrinsics(k.fx, k.fy, k.cx + left, k.cy + top, width, height, k.focal_source)
    pred = model.predict(padded, k_padded, normals=normals)

    def crop(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[top : top + k.height, left : left + k.width])

    depth, confidence = crop(pred.depth), crop(pred.confidence)
    assert depth is not None and confidence is not None
    return replace(
        pred,
        depth=depth,
        normal=crop(pred.normal),
        confidence=confidence,
        normal_confidence=crop(pred.normal_confidence),
        intrinsics=k,
    )
