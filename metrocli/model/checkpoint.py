"""Reading official Metric3D checkpoints safely and loading them strictly into metrocli modules.

Checkpoints are always read with ``torch.load(weights_only=True)``: a file whose pickle would import or run
anything beyond tensors and plain containers is refused (:class:`UnsafeCheckpointError`) and nothing of it
runs. Official keys are renamed by :func:`metrocli.model.remap.remap_state_dict`; loading is ``strict``.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from metrocli.errors import UnsafeCheckpointError, WeightsError
from metrocli.model.presets import Family
from metrocli.model.remap import remap_state_dict
from metrocli.model.weights import check_weights_file

log = logging.getLogger("metrocli.model.checkpoint")

#: How many offending keys a mismatch message lists per category.
_SHOW_KEYS = 5


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state dict (official key names, CPU tensors) stored in ``path``.

    Accepts ``{"model_state_dict": sd}`` (the published layout), ``{"state_dict": sd}`` or a bare ``sd``.

    Raises:
        WeightsError: ``path`` is missing, not a file, not a PyTorch zip checkpoint, truncated or corrupt,
            or holds no state dict.
        UnsafeCheckpointError: the pickle would need arbitrary code (classes, functions) to load.
    """
    path = check_weights_file(Path(path))
    if not zipfile.is_zipfile(path):
        raise WeightsError(
            f"weights file {path} is not a PyTorch checkpoint (not a zip archive, or truncated)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower() or "unsupported global" in str(exc).lower():
            raise UnsafeCheckpointError(
                f"weights file {path} was refused: its pickle would run code beyond plain tensors "
                "(only weights_only checkpoints are loaded)"
            ) from None
        raise WeightsError(f"weights file {path} is corrupt: {_first_line(exc)}") from None
    except Exception as exc:  # any failure to decode an untrusted file (IndexError, RuntimeError, ...)
        raise WeightsError(f"weights file {path} is corrupt or truncated: {_first_line(exc)}") from None
    state = _unwrap(obj)
    if state is None:
        raise WeightsError(f"weights file {path} holds no model state dict")
    return state


def _unwrap(obj: object) -> dict[str, Tensor] | None:
    if isinstance(obj, Mapping):
        for key in ("model_state_dict", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_target(model: nn.Module) -> nn.Module:
    """The module official keys are remapped onto: a :class:`Metric3D`'s inner network, else ``model``."""
    net = getattr(model, "net", None)
    return net if isinstance(net, nn.Module) and hasattr(model, "preset") else model


def _fmt(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW_KEYS])
    return shown + (f", … ({len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else "")


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`WeightsError` unless ``state`` (metrocli names) has exactly the keys and shapes of
    ``model``'s state dict. Works on meta-device models (compares shapes only)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_fmt(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_fmt(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_fmt(mismatched)})")
        raise WeightsError(f"{source} does not fit the model: " + "; ".join(parts))


def load_state_dict_strict(
    model: nn.Module,
    official_sd: Mapping[str, Tensor],
    family: Family,
    *,
    source: str = "checkpoint",
    assign: bool = False,
) -> None:
    """Remap official keys with ``remap_state_dict(sd, family)`` and load them with ``strict=True``.

    ``model`` is a :class:`metrocli.model.metric3d.Metric3D` (loaded into its ``net``) or a bare network.
    ``assign=True`` adopts the checkpoint tensors instead of copying them (for meta-device models).
    Raises :class:`WeightsError` naming (a few of) the missing, unexpected and mis-shaped keys.
    """
    target = _load_target(model)
    state = remap_state_dict(dict(official_sd), family)
    check_state_dict(target, state, source)
    target.load_state_dict(state, strict=True, assign=assign)
    n_params = sum(int(v.numel()) for v in state.values())
    log.info(
        "loaded %d of %d tensors from %s (%d values, %d keys dropped as aliases)",
        len(state),
        len(official_sd),
        source,
        n_params,
        len(official_sd) - len(state),
    )
