"""ONNX Runtime backend: :class:`OnnxMetric3D` runs a file written by :mod:`metrocli.model.onnx_export`.

It has the contract of :meth:`metrocli.model.metric3d.Metric3D.predict` (one upright uint8 RGB photo and its
intrinsics in, a :class:`~metrocli.prediction.Prediction` out) and the same pre- and post-processing
(:mod:`metrocli.model.preprocess`), so its results match torch float32 up to the export's fidelity. The CPU
execution provider always works; on ``device="cuda"`` / ``"auto"`` the TensorRT and CUDA providers are used
where the installed onnxruntime has them (``onnxruntime-gpu``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from metrocli.errors import MetroUsageError, WeightsError
from metrocli.model.onnx_export import INPUT_NAME, OUTPUT_NAMES, onnx_session, require_onnx, size_multiple
from metrocli.model.preprocess import (
    CanonicalInput,
    as_intrinsics,
    check_image,
    resize_and_pad,
    to_prediction,
)
from metrocli.model.presets import Preset, get_preset
from metrocli.prediction import Prediction

if TYPE_CHECKING:
    from metrocli.camera.intrinsics import Intrinsics

log = logging.getLogger("metrocli.model.onnx_runtime")

OnnxDevice = Literal["auto", "cpu", "cuda"]
#: Execution providers tried per device, best first (only those the installed onnxruntime has are used).
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "auto": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """The execution providers for ``device`` (``auto``, ``cpu``, ``cuda``) among ``available``, best first.

    Raises :class:`MetroUsageError` for an unknown device, or ``cuda`` without a CUDA provider.
    """
    if device not in PROVIDERS:
        raise MetroUsageError(f"unknown device {device!r} for onnxruntime; use auto, cpu or cuda")
    chosen = [p for p in PROVIDERS[device] if p in available]
    if device == "cuda" and "CUDAExecutionProvider" not in chosen:
        raise MetroUsageError(
            "device 'cuda' was requested but this onnxruntime has no CUDA execution provider "
            "(install onnxruntime-gpu)"
        )
    return chosen or ["CPUExecutionProvider"]


def _size(text: str | None, what: str, path: Path) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in (text or "").split(","))
    except ValueError:
        raise WeightsError(f"{path}: metadata {what} is {text!r}, not 'H,W'") from None
    return height, width


class OnnxMetric3D:
    """A Metric3D model exported to ONNX, run by onnxruntime.

    Attributes:
        path: the ``.onnx`` file.
        preset: the :class:`Preset` it was exported from (from the file's metadata).
        input_size: (H, W) the photo is resized and padded to.
        dynamic: True when the graph accepts any multiple of :func:`size_multiple` (then ``input_size`` is
            the preset's size unless given).
        providers: the execution providers in use, best first.
        metadata: the file's ``metadata_props``.
        precision: always ``"fp32"`` (the exported graph's arithmetic).
    """

    precision = "fp32"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: OnnxDevice = "auto",
        input_size: tuple[int, int] | None = None,
        threads: int | None = None,
    ) -> None:
        """Open ``path``.

        Args:
            path: an ``.onnx`` file written by ``metro export onnx``.
            device: ``cpu``, ``cuda`` (TensorRT / CUDA providers) or ``auto`` (them where present, else CPU).
            input_size: network input (H, W) for a dynamic graph (default: the preset's); a fixed graph
                only accepts its own size.
            threads: onnxruntime intra-op threads (None: onnxruntime's default, one per physical core).

        Raises:
            DependencyError: onnxruntime is not installed.
            WeightsError: the file is missing, not ONNX, or lacks metrocli's metadata.
            MetroUsageError: an unknown device, ``cuda`` without a CUDA provider, or a wrong input size.
        """
        require_onnx()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"ONNX model {self.path} does not exist")
        self.providers = select_providers(device, ort.get_available_providers())
        try:
            self._session = onnx_session(self.path, self.providers, threads)
        except Exception as exc:
            raise WeightsError(
                f"{self.path} is not a usable ONNX model: {type(exc).__name__}: {exc}"
            ) from exc
        self.providers = list(self._session.get_providers())
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        name = self.metadata.get("preset")
        if not name:
            raise WeightsError(f"{self.path} has no metrocli metadata (export it with `metro export onnx`)")
        try:
            self.preset: Preset = get_preset(name)
        except MetroUsageError as exc:
            raise WeightsError(f"{self.path}: {exc}") from None
        self.outputs = tuple(o.name for o in self._session.get_outputs())
        expected = OUTPUT_NAMES if self.preset.has_normals else OUTPUT_NAMES[:2]
        if self.outputs != expected or [i.name for i in self._session.get_inputs()] != [INPUT_NAME]:
            raise WeightsError(
                f"{self.path} has outputs {', '.join(self.outputs)}; "
                f"a {name} export has {', '.join(expected)}"
            )
        self.dynamic = self.metadata.get("input_size") == "dynamic"
        if self.dynamic:
            size = input_size or self.preset.input_size
            step = size_multiple(self.preset)
            if size[0] % step or size[1] % step or min(size) < step:
                raise MetroUsageError(f"input size {size[0]}x{size[1]} is not a multiple of {step}")
        else:
            size = _size(self.metadata.get("input_size"), "input_size", self.path)
            if input_size is not None and tuple(input_size) != size:
                raise MetroUsageError(
                    f"{self.path} was exported for {size[0]}x{size[1]} inputs, "
                    f"not {input_size[0]}x{input_size[1]}"
                )
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))
        log.info("onnxruntime runs %s (%s) with %s", self.path, name, ", ".join(self.providers))

    def __repr__(self) -> str:
        return f"OnnxMetric3D({str(self.path)!r}, preset={self.preset.name}, input_size={self.input_size})"

    def run_canonical(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs (name -> (1, C, H, W) float32) of a (1, 3, H, W) float32 0-255 padded input."""
        x = np.ascontiguousarray(image, dtype=np.float32)
        return dict(zip(self.outputs, self._session.run(list(self.outputs), {INPUT_NAME: x}), strict=True))

    def predict(
        self,
        image: np.ndarray,
        intrinsics: Intrinsics | tuple[float, float, float, float],
        *,
        normals: bool = True,
    ) -> Prediction:
        """Metric depth (and normals) of an upright H x W x 3 uint8 RGB photo, as
        :meth:`metrocli.model.metric3d.Metric3D.predict` (same arguments, same :class:`Prediction`)."""
        check_image(image)
        height, width = image.shape[:2]
        intr = as_intrinsics(intrinsics, width, height)
        t0 = time.perf_counter()
        padded, scale, pad = resize_and_pad(image, self.input_size)
        x = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)[None]
        top, bottom, left, right = pad
        # the tensor of a CanonicalInput is the network input; here that is the 0-255 image (the graph
        # normalises it); the post-processing reads only its shape, the scale and the padding
        canon = CanonicalInput(torch.from_numpy(x), scale, (top, bottom, left, right), (height, width))
        t1 = time.perf_counter()
        out = {k: torch.from_numpy(v) for k, v in self.run_canonical(x).items()}
        t2 = time.perf_counter()
        return to_prediction(
            out,
            canon,
            intr,
            model=self.preset.name,
            normals=normals,
            timings_s={"preprocess": t1 - t0, "forward": t2 - t1},
        )
