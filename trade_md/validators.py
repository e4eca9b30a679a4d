"""One validator per kind of check; each raises ``ValueError`` naming the key and the value.

Every function takes the name of what it checks (a configuration key such as
``"sample.n"``, an argument name such as ``"temperature"``) and the value, and
returns the value in its canonical type (``int``, ``float``, ``(float, float)``)
so that a dataclass can write ``self.n = positive_int("sample.n", self.n)``.

Messages read ``<name> must be <what>, got <value>``; configuration loading
(:mod:`trade_md.config`) and the command line show them as they are.

=========================  ==============================================
``positive_int``           an integer >= 1
``non_negative_int``       an integer >= 0
``positive_number``        a finite real number > 0
``non_negative_number``    a finite real number >= 0
``positive_values``        scalar, array or tensor, every element finite and > 0 (conditions)
``temperature``            ``positive_values`` in K
``value_range``            ``(low, high)``, finite, ``low < high`` (optionally ``0 < low``)
``fraction``               a number in the open interval (0, 1)
``choice``                 one of a set of names
=========================  ==============================================
"""
from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Iterable

import numpy as np

__all__ = [
    "positive_int",
    "non_negative_int",
    "positive_number",
    "non_negative_number",
    "positive_values",
    "temperature",
    "value_range",
    "fraction",
    "choice",
]


def _real(name: str, value: Any) -> float:
    """``value`` as a float if it is a real number (not a bool, not a string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, low: int, what: str) -> int:
    real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not (real and math.isfinite(value) and float(value).is_integer() and value >= low):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` >= 1 (integer-valued floats such as ``3.0`` are accepted)."""
    return _integer(name, value, 1, "a positive integer (>= 1)")


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` >= 0."""
    return _integer(name, value, 0, "a non-negative integer (>= 0)")


def positive_number(name: str, value: Any) -> float:
    """``value`` as a finite ``float`` > 0."""
    number = _real(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return number


def non_negative_number(name: str, value: Any) -> float:
    """``value`` as a finite ``float`` >= 0."""
    number = _real(name, value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return number


def positive_values(name: str, value: Any, unit: str = "") -> Any:
    """``value`` unchanged if every element is finite and > 0; else ValueError showing the bad ones.

    Parameters
    ----------
    name : what is checked, for the message.
    value : float, numpy array, sequence or torch tensor (any shape, any
        device; a tensor is checked where it lives and keeps its graph).
    unit : appended to the bound in the message (``"K"``: ``finite and > 0 K``).
    """
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        bad_mask = ~torch.isfinite(t) | (t <= 0)
        if not bool(bad_mask.any()):
            return value
        bad = t[bad_mask].flatten()[:5].tolist()
    else:
        if isinstance(value, (bool, np.bool_, str, bytes)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from None
        bad_mask = ~np.isfinite(arr) | (arr <= 0)
        if not bad_mask.any():
            return value
        bad = arr.item() if arr.ndim == 0 else arr[bad_mask].ravel()[:5].tolist()
    bound = f"> 0 {unit}" if unit else "> 0"
    raise ValueError(f"{name} must be finite and {bound}, got {bad!r}")


def temperature(name: str, value: Any) -> Any:
    """``value`` unchanged if every temperature (K; scalar, array or tensor) is finite and > 0."""
    return positive_values(name, value, unit="K")


def value_range(name: str, value: Any, positive: bool = False) -> tuple[float, float]:
    """``(low, high)`` as two floats, finite, ``low < high`` (and ``0 < low`` if ``positive``)."""
    bounds = "0 < low < high" if positive else "low < high"
    try:
        low, high = (_real(name, v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers with {bounds}, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high and (low > 0 or not positive)):
        raise ValueError(f"{name} must be (low, high), finite, with {bounds}, got {value!r}")
    return low, high


def fraction(name: str, value: Any) -> float:
    """``value`` as a ``float`` in the open interval (0, 1)."""
    number = _real(name, value)
    if not 0 < number < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return number


def choice(name: str, value: Any, choices: Iterable[str]) -> Any:
    """``value`` unchanged if it is one of ``choices`` (compared exactly)."""
    options = list(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value
