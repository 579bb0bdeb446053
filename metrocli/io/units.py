"""Length units of the measurement outputs (``metro measure --units m|cm|mm|in|ft``).

Everything is computed and stored in metres (``distance_m``, ``uncertainty_m`` in the JSON); a unit only
changes how lengths are shown: the text table, the annotated picture (one unit for the whole picture,
value and uncertainty in the same unit) and, with ``--units``, extra ``distance`` / ``uncertainty`` values
in that unit beside the metres in the JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

LengthUnit = Literal["m", "cm", "mm", "in", "ft"]

#: The units accepted by ``--units``.
LENGTH_UNITS: tuple[str, ...] = get_args(LengthUnit)

#: Metres per unit (the inch is exactly 25.4 mm, the foot 12 inches).
METRES_PER_UNIT: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001, "in": 0.0254, "ft": 0.3048}

#: Decimals shown per unit: about a millimetre (a tenth of an inch, a hundredth of a foot).
DECIMALS: dict[str, int] = {"m": 3, "cm": 1, "mm": 0, "in": 1, "ft": 2}


def to_unit(length_m: float, unit: LengthUnit) -> float:
    """``length_m`` metres in ``unit``."""
    return float(length_m) / METRES_PER_UNIT[unit]


def format_length(length_m: float, unit: LengthUnit, *, with_unit: bool = True) -> str:
    """``"1.234 m"``, ``"48.6 in"``: ``length_m`` in ``unit`` with the unit's :data:`DECIMALS`."""
    text = f"{to_unit(length_m, unit):.{DECIMALS[unit]}f}"
    return f"{text} {unit}" if with_unit else text


def format_with_uncertainty(length_m: float, uncertainty_m: float, unit: LengthUnit) -> str:
    """``"1.180 m ± 0.062 m"``: a length and its uncertainty in one unit."""
    return f"{format_length(length_m, unit)} ± {format_length(uncertainty_m, unit)}"


def picture_unit(lengths_m: Iterable[float]) -> LengthUnit:
    """The one metric unit of a picture's labels when none is chosen: metres when any length reaches 1 m,
    else centimetres."""
    return "m" if any(length >= 1.0 for length in lengths_m) else "cm"
