"""How the report writes a value: in a table cell, in a caption, as an axis label.

Plain text only; the templates escape it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_numeric(value: Any) -> bool:
    """A number a table aligns right (not a bool, which reads as yes/no)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def fmt(value: Any) -> str:
    """A number or value as a table shows it: six significant digits, yes/no, "" for None."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def label(name: str, units: str = "") -> str:
    """An axis label: the name, with its units in brackets when it has any."""
    return f"{name} [{units}]" if units else name
