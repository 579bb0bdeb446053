"""Official Metric3D checkpoint keys -> metrocli module names: one pure function and a regex table.

Modules never know about checkpoint formats; this is the only place that does (timm's checkpoint_filter_fn
style). Rules are applied in order; the first matching pattern rewrites the key (``re.sub`` semantics,
anchored with ``^``). A rule whose replacement is ``None`` drops the key.
"""

from __future__ import annotations

import re
from typing import Literal

Family = Literal["vit", "convnext"]

# --- ViT (Metric3D v2) rules: owned by the v2 model code ----------------------------------------------------
VIT_RULES: list[tuple[str, str | None]] = []

# --- ConvNeXt + hourglass (Metric3D v1) rules: owned by the v1 model code ----------------------------------
CONVNEXT_RULES: list[tuple[str, str | None]] = []

RULES: dict[str, list[tuple[str, str | None]]] = {"vit": VIT_RULES, "convnext": CONVNEXT_RULES}


def remap_state_dict(state_dict: dict, family: Family) -> dict:
    """Return a new dict with official keys renamed to metrocli's (values untouched, order kept)."""
    compiled = [(re.compile(p), r) for p, r in RULES[family]]
    out = {}
    for key, value in state_dict.items():
        new_key: str | None = key
        for pattern, repl in compiled:
            if pattern.search(key):
                new_key = None if repl is None else pattern.sub(repl, key, count=1)
                break
        if new_key is not None:
            out[new_key] = value
    return out
