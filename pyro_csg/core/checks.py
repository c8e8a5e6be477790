"""Checks of settings shared by the package: a clear error that names the argument."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["is_number", "check_positive", "check_int", "check_iteration"]


def is_number(value: object) -> bool:
    """A real number, Python's or NumPy's (bool is an int subclass, but never a valid
    setting here)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_positive(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number > 0, or a clear error.

    Example::

        >>> from pyro_csg.core.checks import check_positive
        >>> check_positive("temperature", 2)
        2.0
    """
    if not is_number(value):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_int(name: str, value: int, minimum: int) -> int:
    """``value`` as a Python int (NumPy integers accepted), or a clear error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_iteration(k: int) -> None:
    """Iterations are counted from 1."""
    if k < 1:
        raise ValueError(f"iterations are counted from 1, got k={k}")
