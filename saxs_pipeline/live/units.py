"""Units as the SAXS page writes them on its axes: ``1/nm`` as nm⁻¹, the integral
parameters' units (I times the axis unit to the power 1, 2, 3: see
:func:`saxs_pipeline.stack.layout.param_units`)."""

from __future__ import annotations

from saxs_pipeline.stack.layout import INTENSITY_UNITS

__all__ = ["axis_label", "i_unit", "intensity_label", "param_unit", "pretty"]

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power(unit: str, power: int) -> str:
    """``unit`` to ``power``: 1/nm to the 2nd is nm⁻², rad to the 2nd rad²."""
    base, sign = (unit[2:], -1) if unit.startswith("1/") else (unit, 1)
    exponent = sign * power
    return base if exponent == 1 else base + str(exponent).translate(_SUPERSCRIPT)


def pretty(unit: str) -> str:
    return _power(unit, 1)


def axis_label(name: str, unit: str) -> str:
    return f"{name} ({pretty(unit)})"


def i_unit(calibration: dict[str, object]) -> str:
    """The curves' intensity unit the calibration summary names (the stack's by default)."""
    return str(calibration.get("I_unit") or INTENSITY_UNITS)


def intensity_label(calibration: dict[str, object]) -> str:
    return f"I ({pretty(i_unit(calibration))})"


def param_unit(intensity_unit: str, axis_unit: str, power: int) -> str:
    """The unit of I_power = integral of I * axis^power d(axis)."""
    return f"{pretty(intensity_unit)}·{_power(axis_unit, power + 1)}"
