"""Input checks shared by the numeric modules of :mod:`trade_md.analysis`.

Every check raises ``ValueError`` naming the offending argument.  Angles are in
radians; anything farther than :data:`ANGLE_TOLERANCE` outside ``[-pi, pi]`` is
rejected (degrees passed by mistake).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

#: How far (radians) an input torsion may lie outside [-pi, pi] (float32 rounding of pi).
ANGLE_TOLERANCE: float = 1e-6

_TWO_PI = 2.0 * np.pi


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """Float64 copy of a non-empty, finite 1-D array, or ``ValueError``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of shape (N,), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _as_angles(values: ArrayLike, name: str) -> np.ndarray:
    """Validated 1-D torsions (radians) wrapped onto [-pi, pi)."""
    arr = _as_1d(values, name)
    worst = float(np.max(np.abs(arr)))
    if worst > np.pi + ANGLE_TOLERANCE:
        raise ValueError(
            f"{name} must be in radians within [-pi, pi]; found |value| = {worst:.4g} "
            "(degrees passed by mistake?)"
        )
    return wrap_angles(arr)


def _check_weights(weights: Optional[ArrayLike], n: int, name: str = "weights") -> Optional[np.ndarray]:
    """``None`` or float64 weights of shape (n,): finite, >= 0, positive sum."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"{name} has shape {w.shape} but there are {n} samples; expected shape ({n},)")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(w < 0):
        raise ValueError(f"{name} contains negative values")
    if not w.sum() > 0:
        raise ValueError(f"{name} sum to zero")
    return w


def _check_same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has {a.size} values but {name_b} has {b.size}; they must match")


def wrap_angles(angles: ArrayLike) -> np.ndarray:
    """Map angles onto ``[-pi, pi)``.

    Parameters
    ----------
    angles : array_like, any shape, radians

    Returns
    -------
    np.ndarray, float64, same shape, radians in ``[-pi, pi)`` (``+pi`` maps to ``-pi``).
    """
    wrapped = np.mod(np.asarray(angles, dtype=np.float64) + np.pi, _TWO_PI) - np.pi
    return np.where(wrapped >= np.pi, wrapped - _TWO_PI, wrapped)
