"""Range checks of integer knobs: every size or count a user sets has bounds, and one ``ValueError`` names them."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_knob"]


def check_knob(name: str, value: Any, low: int, high: int, why: str, *, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in ``[low, high]`` (or None when ``optional``); the message
    names the knob, the range and ``why`` the bound is there."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        none = " or None" if optional else ""
        raise ValueError(f"{name} must be an int in [{low}, {high}]{none} ({why}), got {value!r}")
