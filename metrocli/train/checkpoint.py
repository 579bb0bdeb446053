"""Writing fine-tuned weights in the official checkpoint format, and resumable training states.

The output is ``{"model_state_dict": sd}`` with exactly the keys (and shapes) of the base checkpoint: each
official key is mapped to our module name with :func:`metrocli.model.remap.remap_state_dict` (the one place
that knows the official names) and takes the trained tensor. Keys that rule drops are aliases of another
official key (the context encoder's LayerNorm registered as both ``norm3`` and ``downsample.1``); they get
the value of the key they alias, so the official code and ``metro --weights`` load the file strictly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metrocli.atomic import write_atomic
from metrocli.errors import WeightsError
from metrocli.model.remap import Family, remap_state_dict

#: Official key fragment of a dropped alias -> the fragment of the key it duplicates.
_ALIASES = {".0.norm3.": ".0.downsample.1."}


def official_state_dict(net: nn.Module, template: Mapping[str, Tensor], family: Family) -> dict[str, Tensor]:
    """``net``'s weights under the official keys of ``template`` (a base checkpoint's state dict)."""
    ours = net.state_dict()
    out: dict[str, Tensor] = {}
    for key, ref in template.items():
        source = key
        mapped = remap_state_dict({key: ref}, family)
        if not mapped:
            for frag, target in _ALIASES.items():
                if frag in key:
                    source = key.replace(frag, target)
                    mapped = remap_state_dict({source: ref}, family)
        if not mapped:
            raise WeightsError(f"official key {key} has no counterpart in the model")
        (name,) = mapped
        if name not in ours:
            raise WeightsError(f"official key {key} maps to {name}, which the model does not have")
        value = ours[name].detach().to("cpu", copy=True).contiguous()
        if value.shape != ref.shape:
            raise WeightsError(f"{key}: trained shape {tuple(value.shape)} differs from {tuple(ref.shape)}")
        out[key] = value.to(ref.dtype)
    return out


def save_official(path: str | os.PathLike[str], state_dict: Mapping[str, Tensor]) -> Path:
    """Write ``{"model_state_dict": state_dict}`` atomically."""
    return write_atomic(path, lambda tmp: torch.save({"model_state_dict": dict(state_dict)}, tmp))


def save_training_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a resumable training state (model, optimiser, scheduler, EMA, step) atomically."""
    return write_atomic(path, lambda tmp: torch.save(dict(state), tmp))


def load_training_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_training_state` (tensors and plain containers only)."""
    try:
        return dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise WeightsError(f"cannot resume from {path}: {str(exc).splitlines()[0]}") from None
