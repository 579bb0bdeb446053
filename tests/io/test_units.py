"""Length units of the measurement outputs: exact conversions, one unit per picture."""

from __future__ import annotations

import pytest

from metrocli.io.units import (
    LENGTH_UNITS,
    format_length,
    format_with_uncertainty,
    picture_unit,
    to_unit,
)


def test_conversions_are_exact() -> None:
    assert LENGTH_UNITS == ("m", "cm", "mm", "in", "ft")
    assert to_unit(0.0254, "in") == pytest.approx(1.0, abs=1e-15)
    assert to_unit(0.3048, "ft") == pytest.approx(1.0, abs=1e-15)
    assert to_unit(1.5, "mm") == pytest.approx(1500.0)
    assert to_unit(1.5, "m") == 1.5


def test_formats() -> None:
    assert format_length(1.2345, "m") == "1.234 m" or format_length(1.2345, "m") == "1.235 m"
    assert format_length(0.824, "cm") == "82.4 cm"
    assert format_length(0.824, "mm") == "824 mm"
    assert format_length(1.0, "in") == "39.4 in"
    assert format_length(1.0, "ft") == "3.28 ft"
    assert format_length(1.0, "ft", with_unit=False) == "3.28"
    assert format_with_uncertainty(1.18, 0.062, "m") == "1.180 m ± 0.062 m"
    assert format_with_uncertainty(0.78, 0.05, "cm") == "78.0 cm ± 5.0 cm"


def test_one_unit_per_picture() -> None:
    assert picture_unit([1.18, 0.78]) == "m"  # not "1.180 m" beside "78.0 cm"
    assert picture_unit([0.5, 0.78]) == "cm"
