"""Importance weights: self-normalization, Kish effective sample size and the Pareto k-hat
reliability diagnostic (numpy, log space).

Shared by :class:`~trade_md.generator.Samples` and :mod:`trade_md.analysis.metrics`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["self_normalized_weights", "kish_ess", "relative_ess", "pareto_k", "pareto_k_or_none", "pareto_k_limit",
           "pareto_k_note"]


def _as_log_weights(log_weights: ArrayLike) -> np.ndarray:
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 1:
        raise ValueError(f"log_weights must be a 1-D array of shape (N,), got shape {lw.shape}")
    if lw.size == 0:
        raise ValueError("log_weights is empty")
    if np.any(np.isnan(lw)) or np.any(lw == np.inf):
        raise ValueError("log_weights contains NaN or +inf (-inf, a zero weight, is allowed)")
    if np.all(lw == -np.inf):
        raise ValueError("log_weights are all -inf: every weight is zero")
    return lw


def _logsumexp(x: np.ndarray) -> float:
    top = np.max(x)
    return float(top + np.log(np.sum(np.exp(x - top))))


def self_normalized_weights(log_weights: ArrayLike) -> np.ndarray:
    """Normalized weights ``w_i = exp(lw_i) / sum_j exp(lw_j)``, computed stably.

    Parameters
    ----------
    log_weights : array_like, shape (N,)
        Unnormalized log importance weights (nats); ``-inf`` is a zero weight.

    Returns
    -------
    np.ndarray, shape (N,), float64, non-negative, sums to 1.
    """
    lw = _as_log_weights(log_weights)
    return np.exp(lw - _logsumexp(lw))


def kish_ess(log_weights: ArrayLike) -> float:
    """Kish effective sample size ``(sum w)^2 / sum w^2``, computed in log space.

    Parameters
    ----------
    log_weights : array_like, shape (N,)
        Unnormalized log importance weights; adding a constant changes nothing.

    Returns
    -------
    float in ``[1, N]``: N for equal weights, about 1 when one weight dominates.
    """
    lw = _as_log_weights(log_weights)
    return float(np.exp(2.0 * _logsumexp(lw) - _logsumexp(2.0 * lw)))


def relative_ess(log_weights: ArrayLike) -> float:
    """Kish effective sample size divided by N, in ``[1/N, 1]``; see :func:`kish_ess`."""
    lw = _as_log_weights(log_weights)
    return kish_ess(lw) / lw.size


def pareto_k_limit(n: int) -> float:
    """The largest Pareto k-hat (:func:`pareto_k`) at which ``n`` importance-weighted samples give
    reliable estimates: ``min(1 - 1 / log10(n), 0.7)`` (Vehtari et al., *Pareto smoothed importance
    sampling*, JMLR 25, 2024); 0.7 for ``n >= 10^(10/3)``, about 2,150 samples."""
    n = int(n)
    if n < 2:
        raise ValueError(f"pareto_k_limit needs n >= 2 samples, got {n}")
    return float(min(1.0 - 1.0 / np.log10(n), 0.7))


def pareto_k(log_weights: ArrayLike) -> float:
    """Shape ``k`` of a generalized Pareto distribution fitted to the largest importance weights.

    The tail of the weight distribution decides whether importance-weighted averages can be trusted:
    with a Pareto tail of shape ``k``, the weights have a finite variance only for ``k < 1/2`` and a
    finite mean only for ``k < 1``, and a Kish ESS computed from them is itself noise. Following
    Vehtari et al. (JMLR 25, 2024), estimates from ``N`` samples are reliable when ``k`` is at most
    :func:`pareto_k_limit` (0.7 for ``N`` above about 2,150); above it, neither the reweighted
    estimates nor the relative ESS mean much, however large the ESS looks.

    The tail is the ``M = min(ceil(0.2 N), ceil(3 sqrt(N)))`` largest weights, taken as exceedances
    over the next largest. ``k`` is fitted by the method of Zhang & Stephens (Technometrics 51, 2009):
    the posterior mean of ``theta = -k / sigma`` over a grid of ``30 + floor(sqrt(M))`` values, each
    weighted by its profile likelihood, with ``k = mean(log(1 - theta x))`` at that mean; it is then
    shrunk towards 0.5 with the weight of 10 pseudo-observations, ``(M k + 5) / (M + 10)``, as the
    authors of the diagnostic do.

    Parameters
    ----------
    log_weights : array_like, shape (N,)
        Unnormalized log importance weights (nats); ``-inf`` (zero weights, e.g. clashes) count as
        samples in the tail size but never in the tail.

    Returns
    -------
    float: k-hat (dimensionless). Below 0.5: a light tail; 0.5-0.7: usable with care; above 0.7: the
    importance sampling is not reliable.

    Raises
    ------
    ValueError
        Bad log weights (see :func:`kish_ess`), fewer than 5 positive weights in the tail, or a tail
        of equal weights (nothing to fit).
    """
    lw = _as_log_weights(log_weights)
    n = lw.size
    m = int(min(np.ceil(0.2 * n), np.ceil(3.0 * np.sqrt(n))))
    finite = np.sort(lw[np.isfinite(lw)])
    if m < 5 or finite.size < m + 1:
        raise ValueError(f"pareto_k needs at least 5 tail weights and one below them: got {n} weights, "
                         f"{finite.size} of them non-zero (tail size {m})")
    top = finite[-(m + 1):]
    w = np.exp(top - top[-1])  # scaled by the largest weight; k does not depend on the scale
    x = w[1:] - w[0]
    if x[-1] <= 0 or not np.any(x > 0):
        raise ValueError("pareto_k: the largest weights are all equal, there is no tail to fit")
    return _gpd_shape(x)


def _gpd_shape(x: np.ndarray) -> float:
    """Zhang-Stephens estimate of the GPD shape for sorted non-negative exceedances ``x``, shrunk to 0.5."""
    m = x.size
    grid_size = 30 + int(np.sqrt(m))
    quartile = x[max(int(m / 4 + 0.5) - 1, 0)]
    if quartile <= 0:  # most exceedances are zero: use the smallest positive one for the grid's scale
        quartile = x[x > 0][0]
    j = np.arange(1, grid_size + 1)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(grid_size / (j - 0.5))) / (3.0 * quartile)
    theta = theta[theta != 0.0]  # theta = 0 (the exponential limit) has no profile likelihood here
    k = np.log1p(-theta[:, None] * x[None, :]).mean(axis=1)
    profile = m * (np.log(-theta / k) - k - 1.0)
    weights = np.exp(profile - profile.max())
    theta_hat = float(np.sum(theta * weights) / np.sum(weights))
    k_hat = float(np.mean(np.log1p(-theta_hat * x)))
    return (m * k_hat + 10 * 0.5) / (m + 10)


def pareto_k_or_none(log_weights: ArrayLike) -> Optional[float]:
    """:func:`pareto_k`, or None when too few distinct non-zero weights leave no tail to fit; bad log
    weights (NaN, +inf, all zero weights, wrong shape) still raise ValueError."""
    lw = _as_log_weights(log_weights)
    try:
        return pareto_k(lw)
    except ValueError:  # the input is valid (checked above): there is no tail to fit
        return None


def pareto_k_note(log_weights: ArrayLike) -> str:
    """``"; Pareto k-hat 0.62 (reliable: <= 0.70)"`` or ``"; Pareto k-hat 0.95 (> 0.70: reweighted estimates
    are not reliable)"`` for a one-line message after an ESS; ``""`` when there are too few non-zero
    weights to fit a tail (see :func:`pareto_k`)."""
    lw = _as_log_weights(log_weights)
    k = pareto_k_or_none(lw)
    if k is None:
        return ""
    limit = pareto_k_limit(lw.size)
    verdict = f"reliable: <= {limit:.2f}" if k <= limit else f"> {limit:.2f}: reweighted estimates are not reliable"
    return f"; Pareto k-hat {k:.2f} ({verdict})"
