"""Reading official Metric3D checkpoints safely and loading them strictly into metrocli modules.

Checkpoints are always read with ``torch.load(weights_only=True)``: a file whose pickle would import or run
anything beyond tensors and plain containers is refused (:class:`UnsafeCheckpointError`) and nothing of it
runs. Official keys are renamed by :func:`metrocli.model.remap.remap_state_dict`; loading is ``strict``:
the keys and shapes must match, floating tensors of another precision (float64, float16, bfloat16 exports)
are cast to the model's dtype, and a checkpoint holding a NaN or an infinity is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections import Counter
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def match_dtypes(model: nn.Module, state: dict[str, Tensor], source: str = "checkpoint") -> dict[str, int]:
    """Cast, in place, each floating tensor of ``state`` (metrocli names, keys already checked) whose dtype
    differs from that of ``model``'s tensor of the same name to the model's dtype: checkpoints exported in
    float64, float16 or bfloat16 load into a float32 model as ``load_state_dict`` users expect.

    Returns ``{source dtype name: number of tensors cast}`` (e.g. ``{"float64": 362}``; empty when nothing
    was cast). Raises :class:`WeightsError` when a tensor the model holds as floating point is not floating
    point in ``state`` (integer, bool or complex). Other tensors (integer buffers) are left as they are.
    """
    casts: Counter[str] = Counter()
    for key, expected in model.state_dict().items():
        value = state[key]
        if value.dtype == expected.dtype or not expected.is_floating_point():
            continue
        if not value.is_floating_point():
            raise WeightsError(
                f"{source} holds {key} as {_dtype_name(value.dtype)}, "
                f"the model needs {_dtype_name(expected.dtype)} weights"
            )
        state[key] = value.to(expected.dtype)
        casts[_dtype_name(value.dtype)] += 1
    return dict(casts)


def first_non_finite(state: Mapping[str, Tensor]) -> str | None:
    """The key of the first floating tensor of ``state`` (in its order) holding a NaN or an infinity, or None.

    One sum per tensor (any NaN or infinity makes the sum NaN or infinite), about 20x cheaper than
    ``isfinite().all()`` and a small fraction of the time ``torch.load`` takes to read the file; the exact
    element-wise test runs only where a sum of finite values overflows. Meta tensors are skipped.
    """
    for key, value in state.items():
        if not value.is_floating_point() or value.is_meta:
            continue
        if bool(torch.isfinite(value.sum())) or bool(torch.isfinite(value).all()):
            continue
        return key
    return None


def _non_finite_error(source: str, name: str, value: Tensor, cast_from: str | None) -> WeightsError:
    nan = int(torch.isnan(value).sum())
    inf = int(torch.isinf(value).sum())
    found = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "infinite")) if n)
    after = f" after the cast from {cast_from} to {_dtype_name(value.dtype)}" if cast_from else ""
    return WeightsError(
        f"{source} holds non-finite weights: {name} has {found} of {value.numel()} values{after} "
        "(the file is damaged or was saved from a diverged training)"
    )


def load_state_dict_strict(
    model: nn.Module,
    official_sd: Mapping[str, Tensor],
    family: Family,
    *,
    source: str = "checkpoint",
    assign: bool = False,
) -> dict[str, int]:
    """Remap official keys with ``remap_state_dict(sd, family)`` and load them with ``strict=True``.

    ``model`` is a :class:`metrocli.model.metric3d.Metric3D` (loaded into its ``net``) or a bare network.
    ``assign=True`` adopts the checkpoint tensors instead of copying them (for meta-device models).
    Floating tensors of another dtype are cast to the model's (:func:`match_dtypes`, logged at info level).

    Returns ``{source dtype name: number of tensors cast}`` (empty when nothing was cast).

    Raises:
        WeightsError: naming (a few of) the missing, unexpected and mis-shaped keys; or the first tensor
            (official name) that holds a NaN or an infinity; or a non-floating tensor where the model
            has a floating one. ``source`` (e.g. ``"weights file x.pth"``) starts the message.
    """
    target = _load_target(model)
    state = remap_state_dict(dict(official_sd), family)
    check_state_dict(target, state, source)
    original_dtypes = {k: v.dtype for k, v in state.items()}
    casts = match_dtypes(target, state, source)
    bad = first_non_finite(state)
    if bad is not None:
        official_names = remap_state_dict({k: k for k in official_sd}, family)
        before = original_dtypes[bad]
        cast_from = _dtype_name(before) if before != state[bad].dtype else None
        raise _non_finite_error(source, official_names[bad], state[bad], cast_from)
    if casts:
        log.info(
            "cast %s tensors of %s to the model's dtype",
            " + ".join(f"{n} {dtype}" for dtype, n in casts.items()),
            source,
        )
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
    return casts
