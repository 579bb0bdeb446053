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

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.errors import MetroUsageError
from metrocli.prediction import Prediction


class Predictor(Protocol):
    """A model backend (torch ``Metric3D`` or ``OnnxMetric3D``): one photo in, a :class:`Prediction` out."""

    def predict(self, image: np.ndarray, intrinsics: Intrinsics, *, normals: bool = True) -> Prediction: ...


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


def _centred(image: np.ndarray, k: Intrinsics) -> tuple[np.ndarray, Intrinsics, tuple[int, int, int, int]]:
    """``image`` padded so that the principal point of ``k`` is its centre, its intrinsics, and the pad."""
    top, bottom, left, right = pad = centring_pad(k)
    if not (top or bottom or left or right):
        return image, k, pad
    import cv2

    from metrocli.model.presets import RGB_MEAN

    mean = tuple(round(v) for v in RGB_MEAN)
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(image), top, bottom, left, right, cv2.BORDER_CONSTANT, value=mean
    )
    height, width = padded.shape[:2]
    return padded, Intrinsics(k.fx, k.fy, k.cx + left, k.cy + top, width, height, k.focal_source), pad


def _cropped(pred: Prediction, pad: tuple[int, int, int, int], k: Intrinsics) -> Prediction:
    """The prediction of a :func:`_centred` image cropped back to the photo (intrinsics ``k``)."""
    top, _, left, _ = pad
    if not any(pad):
        return pred

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


def predict_centred(
    model: Predictor, image: np.ndarray, k: Intrinsics, *, normals: bool = True
) -> Prediction:
    """``model.predict`` of ``image`` taken with ``k``, its principal point honoured (see the module
    docstring); the prediction is of ``image``'s size with intrinsics ``k``."""
    padded, k_padded, pad = _centred(image, k)
    return _cropped(model.predict(padded, k_padded, normals=normals), pad, k)


def predict_centred_many(
    model: Predictor, images: Sequence[np.ndarray], ks: Sequence[Intrinsics], *, normals: bool = True
) -> list[Prediction]:
    """:func:`predict_centred` of several photos, in one forward where the model has ``predict_batch``
    (:meth:`metrocli.model.metric3d.Metric3D.predict_batch`), else one at a time."""
    centred = [_centred(image, k) for image, k in zip(images, ks, strict=True)]
    batch = getattr(model, "predict_batch", None)
    if batch is not None and len(centred) > 1:
        preds = batch([c[0] for c in centred], [c[1] for c in centred], normals=normals)
    else:
        preds = [model.predict(c[0], c[1], normals=normals) for c in centred]
    return [_cropped(pred, c[2], k) for pred, c, k in zip(preds, centred, ks, strict=True)]
