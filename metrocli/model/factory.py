"""Building Metric3D models from presets and loading official checkpoints into them.

``build_model(name)`` never reads a file or touches the network; ``load_model(name, weights)`` resolves the
checkpoint (``metrocli.model.weights``), reads it safely and loads it strictly; ``verify(name, weights)``
checks a checkpoint's integrity, that it loads strictly and that a tiny forward gives finite outputs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
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
            :class:`Metric3D`) or ``auto`` (fp16 on CUDA, bf16 on CPUs with native bf16, fp32 elsewhere:
            :func:`~metrocli.model.runtime.resolve_precision`; ``model.precision`` holds the resolved
            value). Parameters stay float32 (checkpoints in float64, float16 or bfloat16 are cast on
            load); the depth expectation, the recurrent state, the convex upsampling and the normal
            normalisation always run in float32.

    Raises:
        MetroUsageError: unknown name, device or precision.
        WeightsError / UnsafeCheckpointError: missing, corrupt, unsafe or non-matching checkpoint, or one
            holding a NaN or an infinity.
    """
    get_preset(name)  # an unknown name is a usage error before anything else
    if precision not in PRECISIONS:
        raise MetroUsageError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    path = resolve_weights(name, weights)
    t0 = time.perf_counter()
    model = _load_checkpoint(name, path).model
    model.to(dev)
    model.precision = resolve_precision(precision, dev, name)
    model.eval()
    log.info("loaded %s from %s on %s in %.1f s", name, path, dev, time.perf_counter() - t0)
    return model


@dataclass(frozen=True)
class _Loaded:
    model: Metric3D
    tensors: int
    casts: dict[str, int]


def _load_checkpoint(name: str, path: Path) -> _Loaded:
    """Preset ``name``'s :class:`Metric3D` (CPU, float32 parameters, eval mode, no gradients) with the
    checkpoint ``path`` loaded strictly: read safely, dtypes cast, non-finite weights refused."""
    preset = get_preset(name)
    state = read_checkpoint(path)
    # ViT networks are built on the meta device and adopt the checkpoint tensors (no random init, no copy).
    meta = preset.family == "vit"
    model = build_model(name, device="meta" if meta else None)
    casts = load_state_dict_strict(model, state, preset.family, source=f"weights file {path}", assign=meta)
    tensors = len(state)
    del state
    leftover = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:  # pragma: no cover - strict loading covers every parameter and persistent buffer
        raise WeightsError(
            f"weights file {path} left {len(leftover)} tensors unset ({', '.join(leftover[:5])})"
        )
    model.requires_grad_(False)
    model.eval()
    return _Loaded(model, tensors, casts)


def check_forward(model: Metric3D, source: str = "the model") -> dict[str, Any]:
    """Run ``model`` once on the smallest input its preset allows (1 x 3 x m x m, m =
    :attr:`Preset.size_multiple_px`: 28 for ViT, 32 for ConvNeXt; seeded noise, at ``model.precision``)
    and check that every output is finite.

    Returns ``{"input_shape": [1, 3, m, m], "time_s": float}``. Raises :class:`WeightsError` naming
    ``source`` and the first non-finite output (finite weights can still overflow).
    """
    m = model.preset.size_multiple_px
    shape = (1, 3, m, m)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(model.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.forward_canonical(x)
    elapsed_s = time.perf_counter() - t0
    for key, value in out.items():
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            raise WeightsError(
                f"{source} gives non-finite {key} ({int((~finite).sum())} of {value.numel()} values) "
                f"in a {'x'.join(map(str, shape))} test forward: the weights are damaged"
            )
    return {"input_shape": list(shape), "time_s": elapsed_s}


def verify(name: str, weights: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Check a checkpoint end to end: integrity against its sidecar (cached files), a strict load into
    preset ``name``'s network (finite weights, dtypes cast as :func:`load_model` does) and a tiny forward
    whose outputs must be finite (:func:`check_forward`, on the CPU in fp32). The file is read with
    ``torch.load(weights_only=True)`` only: a pickle that would run code raises
    :class:`UnsafeCheckpointError` and nothing of it runs.

    Returns ``{"model", "path", "size", "sha256", "recorded", "tensors", "parameters", "cast", "forward"}``:
    ``cast`` is ``{source dtype: tensors cast}`` (empty when none was), ``forward`` what
    :func:`check_forward` returns.
    """
    path = resolve_weights(name, weights)
    integrity = verify_file(name if weights is None else None, path)
    loaded = _load_checkpoint(name, path)
    parameters = sum(int(p.numel()) for p in loaded.model.parameters())
    forward = check_forward(loaded.model, f"weights file {path}")
    return {
        "model": name,
        "path": str(path),
        **integrity,
        "tensors": loaded.tensors,
        "parameters": parameters,
        "cast": loaded.casts,
        "forward": forward,
    }
