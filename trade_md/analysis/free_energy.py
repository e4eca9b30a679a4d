"""Basin free-energy differences and likelihoods with (block) bootstrap errors.

Free-energy differences are in kT (the thermal energy at the samples'
temperature); likelihoods in nats.  Results are frozen dataclasses with
``to_dict()``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

from ..validators import positive_int
from ._validate import _as_1d, _check_weights

__all__ = ["FreeEnergyDifference", "free_energy_difference", "NLLResult", "nll"]


@dataclass(frozen=True)
class FreeEnergyDifference:
    """``F_a - F_b = -log(P_a / P_b)`` in kT, with its block-bootstrap standard error.

    ``stderr`` is ``inf`` when a bootstrap replicate contains no weight in one
    of the basins (too few samples there to tell).  ``prob_a`` and ``prob_b``
    are the weighted basin populations (fractions of the total weight).
    """

    value: float
    stderr: float
    prob_a: float
    prob_b: float
    a: int
    b: int
    n_bootstrap: int
    block_size: int

    def to_dict(self) -> dict:
        """Plain ``dict`` of the fields (JSON-ready)."""
        return asdict(self)


def free_energy_difference(
    basin_codes: ArrayLike,
    weights: Optional[ArrayLike] = None,
    *,
    a: int,
    b: int,
    n_bootstrap: int = 1000,
    block_size: int = 1,
    seed: int = 0,
) -> FreeEnergyDifference:
    """Free-energy difference between basins ``a`` and ``b`` from (weighted) samples.

    ``F_a - F_b = -log(W_a / W_b)`` where ``W_k`` is the total weight of the
    samples in basin ``k``.  The standard error is a non-overlapping block
    bootstrap: samples are cut into consecutive blocks of ``block_size`` (the
    last may be shorter), blocks are drawn with replacement, and the standard
    deviation of the replicates is reported.  Use ``block_size=1`` for
    independent samples (flow samples) and blocks longer than the correlation
    time for MD frames.

    Parameters
    ----------
    basin_codes : array_like of int, shape (N,)
        Basin of every sample (e.g. from ``observables.assign_basins``), in
        trajectory order.
    weights : array_like, shape (N,), optional
        Non-negative, unnormalized sample weights; ``None``: equal.
    a, b : int
        Basin codes to compare; must differ.
    n_bootstrap : int
        Number of bootstrap replicates, >= 2.
    block_size : int
        Samples per bootstrap block, in ``[1, N]``.
    seed : int
        Seed of the bootstrap's random generator (results are reproducible).

    Returns
    -------
    FreeEnergyDifference, values in kT.
    """
    codes = np.asarray(basin_codes)
    if codes.ndim != 1:
        raise ValueError(f"basin_codes must be a 1-D array of shape (N,), got shape {codes.shape}")
    if codes.size == 0:
        raise ValueError("basin_codes is empty")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"basin_codes must be integers, got dtype {codes.dtype}")
    if a == b:
        raise ValueError(f"basins a and b must differ, both are {a}")
    n = codes.size
    w = _check_weights(weights, n)
    w = np.ones(n) if w is None else w
    n_bootstrap = positive_int("n_bootstrap", n_bootstrap)
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    block_size = positive_int("block_size", block_size)
    if block_size > n:
        raise ValueError(f"block_size ({block_size}) exceeds the number of samples ({n})")

    w_a = np.where(codes == a, w, 0.0)
    w_b = np.where(codes == b, w, 0.0)
    total_a, total_b = w_a.sum(), w_b.sum()
    for code, total in ((a, total_a), (b, total_b)):
        if not total > 0:
            raise ValueError(f"basin {code} has no samples with positive weight")

    block = np.arange(n) // block_size
    n_blocks = int(block[-1]) + 1
    block_a = np.bincount(block, weights=w_a, minlength=n_blocks)
    block_b = np.bincount(block, weights=w_b, minlength=n_blocks)
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_bootstrap)
    chunk = max(1, 1_000_000 // n_blocks)  # bounds the (chunk, n_blocks) index array
    for start in range(0, n_bootstrap, chunk):
        stop = min(start + chunk, n_bootstrap)
        drawn = rng.integers(0, n_blocks, size=(stop - start, n_blocks))
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates[start:stop] = np.log(block_b[drawn].sum(axis=1)) - np.log(block_a[drawn].sum(axis=1))
    stderr = float(np.std(replicates, ddof=1)) if np.all(np.isfinite(replicates)) else math.inf
    total = w.sum()
    return FreeEnergyDifference(
        value=float(np.log(total_b) - np.log(total_a)),
        stderr=stderr,
        prob_a=float(total_a / total),
        prob_b=float(total_b / total),
        a=int(a),
        b=int(b),
        n_bootstrap=n_bootstrap,
        block_size=block_size,
    )


@dataclass(frozen=True)
class NLLResult:
    """Mean negative log-likelihood and its standard error (block means), in nats."""

    mean: float
    stderr: float
    n: int
    block_size: int

    def to_dict(self) -> dict:
        """Plain ``dict`` of the fields (JSON-ready)."""
        return asdict(self)


def nll(log_prob: ArrayLike, block_size: int = 1) -> NLLResult:
    """Mean of ``-log_prob`` with a block standard error.

    Parameters
    ----------
    log_prob : array_like, shape (N,)
        Model log-density of each test frame in nats (for Cartesian frames:
        log of a density in nm^-3n_atoms, including the IC log-det), in
        trajectory order.
    block_size : int
        Frames per block for the standard error: the standard deviation of the
        means of the ``N // block_size`` full blocks (at least 2) divided by
        the square root of their number.  1 for independent frames.

    Returns
    -------
    NLLResult: ``mean`` over all N frames and ``stderr``, in nats per frame.
    """
    values = -_as_1d(log_prob, "log_prob")
    block_size = positive_int("block_size", block_size)
    n_blocks = values.size // block_size
    if n_blocks < 2:
        raise ValueError(
            f"need at least 2 full blocks for a standard error: {values.size} frames, block_size {block_size}"
        )
    block_means = values[: n_blocks * block_size].reshape(n_blocks, block_size).mean(axis=1)
    return NLLResult(
        mean=float(values.mean()),
        stderr=float(np.std(block_means, ddof=1) / math.sqrt(n_blocks)),
        n=int(values.size),
        block_size=block_size,
    )
