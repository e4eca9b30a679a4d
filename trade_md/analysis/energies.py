"""Distances between energy distributions (kJ/mol), robust to clashing samples.

Functions take plain numpy arrays; weights are linear, non-negative and need
not be normalized (``None``: equal).  Flow samples that clash have energies of
1e8 kJ/mol or more: :func:`wasserstein_1d` is then dominated by them, so
:func:`central_energy_distance` reports the distance on the central range of
the reference together with the fraction of samples outside it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ..validators import positive_int
from ._validate import _as_1d, _check_weights

__all__ = ["wasserstein_1d", "histogram_overlap", "CENTRAL_MASS", "CentralEnergyDistance", "central_energy_distance"]


def _normalized_or_uniform(weights: Optional[ArrayLike], n: int, name: str) -> np.ndarray:
    w = _check_weights(weights, n, name)
    return np.full(n, 1.0 / n) if w is None else w / w.sum()


def _cdf_at(sorted_values: np.ndarray, sorted_weights: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Weighted empirical CDF (right-continuous) of sorted values at ``points``."""
    cumulative = np.concatenate([[0.0], np.cumsum(sorted_weights)])
    return cumulative[np.searchsorted(sorted_values, points, side="right")]


def wasserstein_1d(
    a: ArrayLike,
    b: ArrayLike,
    weights_a: Optional[ArrayLike] = None,
    weights_b: Optional[ArrayLike] = None,
) -> float:
    """1-D Wasserstein-1 (earth mover's) distance ``integral |F_a(x) - F_b(x)| dx``.

    Parameters
    ----------
    a : array_like, shape (N_a,)
        Samples, e.g. potential energies in kJ/mol.
    b : array_like, shape (N_b,)
        Samples in the same unit.
    weights_a, weights_b : array_like, optional
        Non-negative sample weights of shape (N_a,) and (N_b,); ``None``: equal.

    Returns
    -------
    float, >= 0, in the unit of the samples (kJ/mol for energies).
    """
    a = _as_1d(a, "a")
    b = _as_1d(b, "b")
    wa = _normalized_or_uniform(weights_a, a.size, "weights_a")
    wb = _normalized_or_uniform(weights_b, b.size, "weights_b")
    order_a, order_b = np.argsort(a), np.argsort(b)
    points = np.sort(np.concatenate([a, b]))
    cdf_a = _cdf_at(a[order_a], wa[order_a], points[:-1])
    cdf_b = _cdf_at(b[order_b], wb[order_b], points[:-1])
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(points)))


def histogram_overlap(
    a: ArrayLike,
    b: ArrayLike,
    weights_a: Optional[ArrayLike] = None,
    weights_b: Optional[ArrayLike] = None,
    *,
    bins: int = 100,
    value_range: Optional[Tuple[float, float]] = None,
) -> float:
    """Overlap coefficient ``sum_k min(p_k, q_k)`` of two histograms on shared bins.

    The bins are ``bins`` equal cells on ``value_range`` plus one underflow and
    one overflow cell, so samples outside the range (e.g. clashing flow samples
    with huge energies) still count: mass there that the other sample lacks
    lowers the overlap.

    Parameters
    ----------
    a : array_like, shape (N_a,)
        Samples, e.g. model energies in kJ/mol.
    b : array_like, shape (N_b,)
        Reference samples in the same unit.
    weights_a, weights_b : array_like, optional
        Non-negative sample weights of shape (N_a,) and (N_b,); ``None``: equal.
    bins : int
        Number of cells inside ``value_range``.
    value_range : (float, float), optional
        ``(low, high)`` in the samples' unit; default: the range of ``b``.

    Returns
    -------
    float in ``[0, 1]``: 1 for identical histograms, 0 for disjoint ones.
    """
    bins = positive_int("bins", bins)
    a = _as_1d(a, "a")
    b = _as_1d(b, "b")
    wa = _normalized_or_uniform(weights_a, a.size, "weights_a")
    wb = _normalized_or_uniform(weights_b, b.size, "weights_b")
    low, high = (float(b.min()), float(b.max())) if value_range is None else map(float, value_range)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"value_range must be finite with low < high, got ({low}, {high})"
            + ("; all reference values are equal, pass value_range" if value_range is None else "")
        )
    edges = np.linspace(low, high, bins + 1)

    def masses(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        cell = np.searchsorted(edges, x, side="right")  # 0: underflow, bins + 1: overflow
        cell[x == high] = bins  # the last cell is closed on the right
        return np.bincount(cell, weights=w, minlength=bins + 2)

    return float(np.clip(np.sum(np.minimum(masses(a, wa), masses(b, wb))), 0.0, 1.0))



#: Probability mass of the reference kept by :func:`central_energy_distance`: the
#: central 99 %, from its 0.5th to its 99.5th percentile.
CENTRAL_MASS: float = 0.99


@dataclass(frozen=True)
class CentralEnergyDistance:
    """Energy W1 on the reference's central range, and the mass outside it.

    ``w1`` (kJ/mol) compares the samples and the reference restricted to
    ``[low, high]`` (kJ/mol), each renormalized there; ``nan`` when no sample
    lies inside.  ``outlier_fraction`` is the (weighted) fraction of samples
    outside ``[low, high]``, non-finite energies included; the reference's own
    fraction outside is ``1 - central_mass`` by construction, so an
    ``outlier_fraction`` far above it means clashing or otherwise wrong samples.
    """

    w1: float
    outlier_fraction: float
    low: float
    high: float
    central_mass: float

    def to_dict(self) -> dict:
        """Plain ``dict`` of the fields (JSON-ready)."""
        return asdict(self)


def central_energy_distance(
    sample_energy: ArrayLike,
    ref_energy: ArrayLike,
    sample_weights: Optional[ArrayLike] = None,
    *,
    central_mass: float = CENTRAL_MASS,
) -> CentralEnergyDistance:
    """Wasserstein-1 on the central ``central_mass`` of the reference, plus the outlier fraction.

    A few clashing samples at 1e8 kJ/mol make the plain :func:`wasserstein_1d`
    about ``fraction * 1e8`` whatever the rest looks like; here they count in
    ``outlier_fraction`` instead, and ``w1`` measures the bulk.

    Parameters
    ----------
    sample_energy : array_like, shape (N_s,), kJ/mol
        Model energies; ``inf``/``nan`` (failed energy evaluations) are allowed
        and counted as outliers.
    ref_energy : array_like, shape (N_r,), kJ/mol
        Reference energies (finite).
    sample_weights : array_like, shape (N_s,), optional
        Non-negative importance weights; ``None``: equal.
    central_mass : float
        Reference probability mass of the range, in (0, 1]: the range runs
        from the ``(1 - central_mass) / 2`` to the ``(1 + central_mass) / 2``
        quantile of ``ref_energy``.

    Returns
    -------
    CentralEnergyDistance
    """
    sample = np.asarray(sample_energy, dtype=np.float64)
    if sample.ndim != 1 or sample.size == 0:
        raise ValueError(f"sample_energy must be a non-empty 1-D array of shape (N,), got shape {sample.shape}")
    reference = _as_1d(ref_energy, "ref_energy")
    weights = _check_weights(sample_weights, sample.size, "sample_weights")
    weights = np.ones(sample.size) if weights is None else weights
    if not (0.0 < central_mass <= 1.0):
        raise ValueError(f"central_mass must be in (0, 1], got {central_mass!r}")
    tail = 50.0 * (1.0 - central_mass)  # percent on each side
    low, high = (float(v) for v in np.percentile(reference, [tail, 100.0 - tail]))
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(sample) & (sample >= low) & (sample <= high)
    outlier_fraction = float(weights[~inside].sum() / weights.sum())
    ref_inside = reference[(reference >= low) & (reference <= high)]
    if not np.any(inside & (weights > 0)):
        w1 = math.nan
    else:
        w1 = wasserstein_1d(sample[inside], ref_inside, weights_a=weights[inside])
    return CentralEnergyDistance(w1=w1, outlier_fraction=outlier_fraction, low=low, high=high,
                                 central_mass=float(central_mass))
