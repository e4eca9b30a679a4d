"""Importance weights: self-normalization and Kish effective sample size (numpy, log space).

Shared by :class:`~trade_md.generator.Samples` and :mod:`trade_md.analysis.metrics`.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["self_normalized_weights", "kish_ess", "relative_ess"]


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
