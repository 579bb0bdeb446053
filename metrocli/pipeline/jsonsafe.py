"""JSON for results: the one sanitiser of everything the pipelines and the CLI print or write as JSON."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def json_ready(obj: Any, *, warn: bool = True) -> Any:
    """``obj`` with numpy scalars and arrays as Python numbers and lists, paths as strings and non-finite
    floats as None (JSON has no NaN; with ``warn`` a warning names the fields that became null); dicts,
    lists and tuples are converted recursively. TypeError for anything else that JSON cannot hold."""
    nulled: list[str] = []
    out = _ready(obj, "", nulled)
    if nulled and warn:
        shown = ", ".join(nulled[:5]) + (f" and {len(nulled) - 5} more" if len(nulled) > 5 else "")
        log.warning("not a finite number, reported as null: %s", shown)
    return out


def _ready(obj: Any, where: str, nulled: list[str]) -> Any:
    if isinstance(obj, dict):
        return {str(k): _ready(v, f"{where}.{k}" if where else str(k), nulled) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_ready(v, f"{where}[{i}]", nulled) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _ready(obj.tolist(), where, nulled)
    if isinstance(obj, np.generic):
        return _ready(obj.item(), where, nulled)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        nulled.append(where or "value")
        return None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
