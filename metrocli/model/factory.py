"""Building Metric3D models from presets and loading official checkpoints into them.

``build_model(name)`` never reads a file or touches the network; ``load_model(name, weights)`` resolves the
checkpoint (``metrocli.model.weights``), reads it safely and loads it strictly; ``verify(name, weights)``
checks a checkpoint's integrity and that it loads strictly, without allocating the network.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
from torch import nn

from metrocli.errors import MetroUsageError, WeightsError
from metrocli.model.checkpoint import load_state_dict_strict, read_checkpoint
from metrocli.model.metric3d import Metric3D, ViTDepthNormalNet
from metrocli.model.presets import get_preset
from metrocli.model.runtime import resolve_precision
from metrocli.model.spec import PRECISIONS, Precision
from metrocli.model.weights import resolve_weights, verify_file

log = logging.getLogger("metrocli.model.factory")


def build_model(name: str, *, device: torch.device | str | None = None) -> Metric3D:
    """A randomly initialised :class:`Metric3D` of preset ``name`` in eval mode (no file is read).

    ``device="meta"`` builds the structure without allocating parameter memory (shape checks, or loading
    with ``assign=True``). Raises :class:`MetroUsageError` for an unknown name.
    """
    preset = get_preset(name)
    net: nn.Module
    if preset.family == "vit":
        net = ViTDepthNormalNet(preset, device=device)
    else:
        from metrocli.model.convnext_hourglass import ConvNeXtHourglass

        net = ConvNeXtHourglass(preset, device=device)
    model = Metric3D(preset, net)
    model.eval()
    return model


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA if available, else MPS if available, else CPU; other names are checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MetroUsageError(f"unknown device {device!r}; use auto, cpu, cuda or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MetroUsageError(f"device {device!r} was requested but CUDA is not available here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MetroUsageError(f"device {device!r} was requested but MPS is not available here")
    return dev


def load_model(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: Precision = "fp32",
) -> Metric3D:
    """A :class:`Metric3D` of preset ``name`` with official weights, in eval mode on ``device``.

    Args:
        name: preset name (``vit-small``, ``vit-large``, ``vit-giant2``, ``convnext-tiny``,
            ``convnext-large``).
        weights: an official-format checkpoint file, or None for the cached official checkpoint
            (``metrocli.model.weights.resolve_weights``).
        device: ``cpu``, ``cuda``, ``mps`` or ``auto``.
        precision: ``fp32``, ``bf16``, ``fp16`` (the autocast every forward of the model runs under, see
            :class:`Metric3D`) or ``auto`` (bf16 on CPUs with native bf16 and on CUDA devices that support
            it, fp16 on other CUDA devices, fp32 elsewhere: :func:`~metrocli.model.runtime.resolve_precision`;
            ``model.precision`` holds the resolved value). Parameters stay float32; the depth expectation,
            the recurrent state, the convex upsampling and the normal normalisation always run in float32.

    Raises:
        MetroUsageError: unknown name, device or precision.
        WeightsError / UnsafeCheckpointError: missing, corrupt, unsafe or non-matching checkpoint.
    """
    preset = get_preset(name)
    if precision not in PRECISIONS:
        raise MetroUsageError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    path = resolve_weights(name, weights)
    t0 = time.perf_counter()
    state = read_checkpoint(path)
    # ViT networks are built on the meta device and adopt the checkpoint tensors (no random init, no copy).
    meta = preset.family == "vit"
    model = build_model(name, device="meta" if meta else None)
    load_state_dict_strict(model, state, preset.family, source=f"weights file {path}", assign=meta)
    del state
    leftover = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:  # pragma: no cover - strict loading covers every parameter and persistent buffer
        raise WeightsError(
            f"weights file {path} left {len(leftover)} tensors unset ({', '.join(leftover[:5])})"
        )
    model.requires_grad_(False)
    model.to(dev)
    model.precision = resolve_precision(precision, dev)
    model.eval()
    log.info("loaded %s from %s on %s in %.1f s", name, path, dev, time.perf_counter() - t0)
    return model


def verify(name: str, weights: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Check a checkpoint end to end: integrity against its sidecar (cached files) and a strict load into
    preset ``name``'s network. The file is read with ``torch.load(weights_only=True)`` only: a pickle that
    would run code raises :class:`UnsafeCheckpointError` and nothing of it runs.

    Returns ``{"model", "path", "size", "sha256", "recorded", "tensors", "parameters"}``.
    """
    path = resolve_weights(name, weights)
    integrity = verify_file(name if weights is None else None, path)
    state = read_checkpoint(path)
    model = build_model(name, device="meta")  # structure only: the checkpoint tensors are adopted
    load_state_dict_strict(model, state, get_preset(name).family, source=f"weights file {path}", assign=True)
    parameters = sum(int(p.numel()) for p in model.parameters())
    return {
        "model": name,
        "path": str(path),
        **integrity,
        "tensors": len(state),
        "parameters": parameters,
    }
