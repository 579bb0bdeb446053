"""Which Metric3D runs and how: :class:`ModelSpec`, the one description every command builds and passes on.

Pure data (no torch import), so the CLI can build and check a spec before anything heavy is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

#: Arithmetic of the forward pass (``auto``: resolved per device, see ``metrocli.model.runtime``).
Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: Where the model runs (``auto``: CUDA, then MPS, then CPU).
Device = Literal["auto", "cpu", "cuda", "mps"]
#: What runs the network: torch, or onnxruntime on a file written by ``metro export onnx``.
Backend = Literal["torch", "onnxruntime"]

PRECISIONS: tuple[str, ...] = get_args(Precision)
DEVICES: tuple[str, ...] = get_args(Device)
BACKENDS: tuple[str, ...] = get_args(Backend)


@dataclass(frozen=True)
class ModelSpec:
    """A Metric3D model to run.

    Attributes:
        name: preset name (``vit-small``, ``vit-large``, ``vit-giant2``, ``convnext-tiny``,
            ``convnext-large``).
        weights: an official-format checkpoint file, or None for the cached official download.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        precision: ``fp32`` (reproduces the official outputs), ``bf16``, ``fp16`` or ``auto``.
        threads: torch CPU threads (process-wide; onnxruntime: its intra-op threads), or None for the
            default.
        backend: ``torch``, or ``onnxruntime`` (``weights`` is then the ``.onnx`` file, required).
    """

    name: str = "vit-small"
    weights: Path | None = None
    device: Device = "auto"
    precision: Precision = "fp32"
    threads: int | None = None
    backend: Backend = "torch"
