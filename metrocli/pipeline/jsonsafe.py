"""JSON for results: the one sanitiser of everything the pipelines and the CLI print or write as JSON."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def json_ready(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as Python numbers and lists, paths as strings and non-finite
    floats as None (JSON has no NaN); dicts, lists and tuples are converted recursively. TypeError for
    anything else that JSON cannot hold."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        return json_ready(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
