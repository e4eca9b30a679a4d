"""Numbers that compare generated samples with reference MD.

Every function takes plain numpy arrays (or anything ``np.asarray`` accepts)
and validates them at the entry point: empty arrays, mismatched lengths,
NaN/inf values and negative weights raise ``ValueError`` naming the problem.

Conventions
-----------
- Torsions are in radians on ``[-pi, pi)``.  Inputs may equal ``+pi`` (mdtraj
  returns ``(-pi, pi]``); it is wrapped to ``-pi``.  Anything farther than
  ``1e-6`` outside ``[-pi, pi]`` is rejected (degrees passed by mistake).
- Divergences are in nats (natural logarithm).
- Free-energy differences are in kT, the thermal energy at the samples'
  temperature.  Energies are in kJ/mol.
- ``weights`` are linear, non-negative and need not be normalized; shape
  ``(N,)``.  Importance weights usually come as log weights: convert them with
  :func:`self_normalized_weights`.
- Ramachandran histograms use FIXED bins: ``bins x bins`` equal cells on
  ``[-pi, pi)^2``, never bins that depend on the data.

Results with several numbers are frozen dataclasses with ``to_dict()``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ..weights import kish_ess, relative_ess, self_normalized_weights

__all__ = [
    "DEFAULT_BINS",
    "PSEUDO_COUNT",
    "ANGLE_TOLERANCE",
    "wrap_angles",
    "torsion_bin_edges",
    "histogram1d_torsion",
    "histogram2d_torsions",
    "kl_divergence_histograms",
    "js_divergence_histograms",
    "kl_divergence",
    "js_divergence",
    "noise_floor",
    "TorsionDivergences",
    "ramachandran_divergences",
    "self_normalized_weights",
    "kish_ess",
    "relative_ess",
    "wasserstein_1d",
    "histogram_overlap",
    "FreeEnergyDifference",
    "free_energy_difference",
    "NLLResult",
    "nll",
]

#: Bins per torsion axis of the Ramachandran histograms (30 x 30 cells of 12 degrees).
DEFAULT_BINS: int = 30

#: Pseudo-count of the KL divergence, in probability units per bin: every cell of
#: both histograms gets ``+1e-6`` before renormalizing, so an empty cell of the
#: second argument costs at most ``log(p_k / 1e-6)`` instead of infinity.  It is a
#: fixed probability, not a count, so it means the same for weighted samples and
#: for any sample size.  JS needs none (its mixture is positive wherever p or q is).
PSEUDO_COUNT: float = 1e-6

#: How far (radians) an input torsion may lie outside [-pi, pi] (float32 rounding of pi).
ANGLE_TOLERANCE: float = 1e-6

_TWO_PI = 2.0 * np.pi

#: ``metric(p_phi, p_psi, q_phi, q_psi, p_weights, q_weights) -> float``, e.g. :func:`kl_divergence`.
TorsionMetric = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]], float
]


# --------------------------------------------------------------------------- validation
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


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- histograms
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


def torsion_bin_edges(bins: int = DEFAULT_BINS) -> np.ndarray:
    """Edges of the fixed torsion bins: ``(bins + 1,)`` radians from ``-pi`` to ``pi``."""
    bins = _check_positive_int(bins, "bins")
    return np.linspace(-np.pi, np.pi, bins + 1)


def _bin_index(angles: np.ndarray, bins: int) -> np.ndarray:
    """Fixed-bin index in ``[0, bins)`` of wrapped angles in ``[-pi, pi)``."""
    index = np.floor((angles + np.pi) / _TWO_PI * bins).astype(np.int64)
    return np.clip(index, 0, bins - 1)


def histogram1d_torsion(
    angles: ArrayLike, weights: Optional[ArrayLike] = None, bins: int = DEFAULT_BINS
) -> np.ndarray:
    """Probability of each fixed torsion bin.

    Parameters
    ----------
    angles : array_like, shape (N,), radians in [-pi, pi]
    weights : array_like, shape (N,), optional
        Non-negative, unnormalized sample weights; ``None`` means equal weights.
    bins : int
        Number of equal bins on ``[-pi, pi)`` (edges: :func:`torsion_bin_edges`).

    Returns
    -------
    np.ndarray, shape (bins,), float64
        Probability mass per bin; sums to 1.
    """
    bins = _check_positive_int(bins, "bins")
    angles = _as_angles(angles, "angles")
    w = _check_weights(weights, angles.size)
    mass = np.bincount(_bin_index(angles, bins), weights=w, minlength=bins)
    return mass / mass.sum()


def histogram2d_torsions(
    phi: ArrayLike, psi: ArrayLike, weights: Optional[ArrayLike] = None, bins: int = DEFAULT_BINS
) -> np.ndarray:
    """Ramachandran histogram on fixed ``bins x bins`` cells over ``[-pi, pi)^2``.

    Parameters
    ----------
    phi, psi : array_like, shape (N,), radians in [-pi, pi]
    weights : array_like, shape (N,), optional
        Non-negative, unnormalized sample weights; ``None`` means equal weights.
    bins : int
        Bins per axis (edges: :func:`torsion_bin_edges`).

    Returns
    -------
    np.ndarray, shape (bins, bins), float64
        Probability mass per cell, indexed ``[phi_bin, psi_bin]``; sums to 1.
    """
    bins = _check_positive_int(bins, "bins")
    phi = _as_angles(phi, "phi")
    psi = _as_angles(psi, "psi")
    _check_same_length(phi, psi, "phi", "psi")
    w = _check_weights(weights, phi.size)
    cell = _bin_index(phi, bins) * bins + _bin_index(psi, bins)
    mass = np.bincount(cell, weights=w, minlength=bins * bins).reshape(bins, bins)
    return mass / mass.sum()


def _as_distribution(hist: ArrayLike, name: str) -> np.ndarray:
    h = np.asarray(hist, dtype=np.float64)
    if h.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(h < 0):
        raise ValueError(f"{name} contains negative values")
    total = h.sum()
    if not total > 0:
        raise ValueError(f"{name} sums to zero")
    return h / total


def kl_divergence_histograms(p: ArrayLike, q: ArrayLike, pseudo_count: float = PSEUDO_COUNT) -> float:
    """``KL(p || q)`` in nats between two histograms on the same bins.

    Parameters
    ----------
    p, q : array_like, same shape (any), non-negative
        Bin masses (normalized here).
    pseudo_count : float
        Probability added to every bin of both histograms before renormalizing
        (see :data:`PSEUDO_COUNT`).  With 0, an empty bin of ``q`` where ``p``
        has mass gives ``inf``.

    Returns
    -------
    float, nats, >= 0; exactly 0 for identical histograms.
    """
    p = _as_distribution(p, "p")
    q = _as_distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: p {p.shape}, q {q.shape}")
    if not (math.isfinite(pseudo_count) and pseudo_count >= 0):
        raise ValueError(f"pseudo_count must be finite and >= 0, got {pseudo_count!r}")
    p = (p + pseudo_count) / (1.0 + p.size * pseudo_count)
    q = (q + pseudo_count) / (1.0 + q.size * pseudo_count)
    support = p > 0
    if np.any(q[support] == 0):
        return math.inf
    # Gibbs' inequality makes KL >= 0; a negative value is rounding only.
    return max(float(np.sum(p[support] * np.log(p[support] / q[support]))), 0.0)


def js_divergence_histograms(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon divergence in nats between two histograms on the same bins.

    ``JS = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``; symmetric,
    in ``[0, log 2]``, finite without any pseudo-count.

    Parameters
    ----------
    p, q : array_like, same shape (any), non-negative
        Bin masses (normalized here).

    Returns
    -------
    float, nats, in ``[0, log 2]``.
    """
    p = _as_distribution(p, "p")
    q = _as_distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: p {p.shape}, q {q.shape}")
    m = 0.5 * (p + q)
    in_p, in_q = p > 0, q > 0
    value = 0.5 * np.sum(p[in_p] * np.log(p[in_p] / m[in_p])) + 0.5 * np.sum(q[in_q] * np.log(q[in_q] / m[in_q]))
    return float(np.clip(value, 0.0, math.log(2.0)))


def kl_divergence(
    p_phi: ArrayLike,
    p_psi: ArrayLike,
    q_phi: ArrayLike,
    q_psi: ArrayLike,
    p_weights: Optional[ArrayLike] = None,
    q_weights: Optional[ArrayLike] = None,
    *,
    bins: int = DEFAULT_BINS,
    pseudo_count: float = PSEUDO_COUNT,
) -> float:
    """Ramachandran ``KL(P || Q)`` in nats on fixed ``bins x bins`` cells.

    Swap the arguments for the other direction.

    Parameters
    ----------
    p_phi, p_psi : array_like, shape (N_p,), radians
        Samples of P.
    q_phi, q_psi : array_like, shape (N_q,), radians
        Samples of Q.
    p_weights, q_weights : array_like, shapes (N_p,) and (N_q,), optional
        Non-negative sample weights (e.g. importance weights); ``None``: equal.
    bins : int
        Bins per torsion axis.
    pseudo_count : float
        Probability added per bin (see :data:`PSEUDO_COUNT`).

    Returns
    -------
    float, nats, >= 0.
    """
    p = histogram2d_torsions(p_phi, p_psi, p_weights, bins)
    q = histogram2d_torsions(q_phi, q_psi, q_weights, bins)
    return kl_divergence_histograms(p, q, pseudo_count)


def js_divergence(
    p_phi: ArrayLike,
    p_psi: ArrayLike,
    q_phi: ArrayLike,
    q_psi: ArrayLike,
    p_weights: Optional[ArrayLike] = None,
    q_weights: Optional[ArrayLike] = None,
    *,
    bins: int = DEFAULT_BINS,
) -> float:
    """Ramachandran Jensen-Shannon divergence in nats on fixed ``bins x bins`` cells.

    Parameters are those of :func:`kl_divergence` (no pseudo-count).

    Returns
    -------
    float, nats, in ``[0, log 2]``; symmetric in P and Q.
    """
    p = histogram2d_torsions(p_phi, p_psi, p_weights, bins)
    q = histogram2d_torsions(q_phi, q_psi, q_weights, bins)
    return js_divergence_histograms(p, q)


def noise_floor(
    phi: ArrayLike,
    psi: ArrayLike,
    metric: TorsionMetric,
    weights: Optional[ArrayLike] = None,
    *,
    n_blocks: int = 20,
) -> float:
    """The reference's own value of ``metric``: first half versus second half.

    The frames, in trajectory order, are cut into ``n_blocks`` contiguous
    blocks; even-numbered blocks form half A and odd-numbered ones half B, and
    the result is ``metric(A, B)``.  Contiguous blocks keep correlated MD frames
    together, so the floor reflects how well the reference itself is converged
    (a random split of correlated frames would understate it); choose blocks
    longer than the correlation time.  Each half has about N/2 frames, so the
    floor is, if anything, larger than the finite-sample bias of a comparison
    that uses all N reference frames.

    Parameters
    ----------
    phi, psi : array_like, shape (N,), radians
        Reference torsions in trajectory (time) order.
    metric : callable
        ``metric(p_phi, p_psi, q_phi, q_psi, p_weights, q_weights) -> float``,
        e.g. :func:`kl_divergence`, :func:`js_divergence` or a
        ``functools.partial`` of them with other ``bins``.
    weights : array_like, shape (N,), optional
        Reference frame weights; ``None``: equal.
    n_blocks : int
        Number of blocks, >= 2 and <= N.

    Returns
    -------
    float, in the metric's unit (nats for the divergences here).
    """
    phi = _as_angles(phi, "phi")
    psi = _as_angles(psi, "psi")
    _check_same_length(phi, psi, "phi", "psi")
    w = _check_weights(weights, phi.size)
    n_blocks = _check_positive_int(n_blocks, "n_blocks")
    if n_blocks < 2:
        raise ValueError(f"n_blocks must be >= 2 to split the reference in two halves, got {n_blocks}")
    if n_blocks > phi.size:
        raise ValueError(f"n_blocks ({n_blocks}) exceeds the number of frames ({phi.size})")
    blocks = np.array_split(np.arange(phi.size), n_blocks)
    half_a = np.concatenate(blocks[0::2])
    half_b = np.concatenate(blocks[1::2])
    w_a = None if w is None else w[half_a]
    w_b = None if w is None else w[half_b]
    return float(metric(phi[half_a], psi[half_a], phi[half_b], psi[half_b], w_a, w_b))


@dataclass(frozen=True)
class TorsionDivergences:
    """Ramachandran divergences between samples and reference, with noise floors.

    All values in nats.  ``X_floor`` is :func:`noise_floor` of divergence ``X``
    (the same divergence between the two block-interleaved halves of the
    reference); a value of ``X`` near its floor is as good as the reference can
    tell.
    """

    kl_sample_ref: float
    kl_ref_sample: float
    js: float
    kl_sample_ref_floor: float
    kl_ref_sample_floor: float
    js_floor: float
    bins: int
    pseudo_count: float
    n_blocks: int

    def to_dict(self) -> dict:
        """Plain ``dict`` of the fields (JSON-ready)."""
        return asdict(self)


def ramachandran_divergences(
    sample_phi: ArrayLike,
    sample_psi: ArrayLike,
    ref_phi: ArrayLike,
    ref_psi: ArrayLike,
    sample_weights: Optional[ArrayLike] = None,
    ref_weights: Optional[ArrayLike] = None,
    *,
    bins: int = DEFAULT_BINS,
    pseudo_count: float = PSEUDO_COUNT,
    n_blocks: int = 20,
) -> TorsionDivergences:
    """KL in both directions and JS between samples and reference, with noise floors.

    Parameters
    ----------
    sample_phi, sample_psi : array_like, shape (N_s,), radians
        Generated samples.
    ref_phi, ref_psi : array_like, shape (N_r,), radians
        Reference (MD) frames in trajectory order (for the noise floor).
    sample_weights, ref_weights : array_like, optional
        Non-negative weights of shape (N_s,) and (N_r,); ``None``: equal.
    bins, pseudo_count, n_blocks
        See :func:`kl_divergence` and :func:`noise_floor`.

    Returns
    -------
    TorsionDivergences
    """
    p = histogram2d_torsions(sample_phi, sample_psi, sample_weights, bins)
    q = histogram2d_torsions(ref_phi, ref_psi, ref_weights, bins)

    def kl(a_phi, a_psi, b_phi, b_psi, a_w, b_w) -> float:
        return kl_divergence(a_phi, a_psi, b_phi, b_psi, a_w, b_w, bins=bins, pseudo_count=pseudo_count)

    def kl_reversed(a_phi, a_psi, b_phi, b_psi, a_w, b_w) -> float:
        return kl(b_phi, b_psi, a_phi, a_psi, b_w, a_w)

    def js(a_phi, a_psi, b_phi, b_psi, a_w, b_w) -> float:
        return js_divergence(a_phi, a_psi, b_phi, b_psi, a_w, b_w, bins=bins)

    def floor(metric: TorsionMetric) -> float:
        return noise_floor(ref_phi, ref_psi, metric, ref_weights, n_blocks=n_blocks)

    return TorsionDivergences(
        kl_sample_ref=kl_divergence_histograms(p, q, pseudo_count),
        kl_ref_sample=kl_divergence_histograms(q, p, pseudo_count),
        js=js_divergence_histograms(p, q),
        kl_sample_ref_floor=floor(kl),
        kl_ref_sample_floor=floor(kl_reversed),
        js_floor=floor(js),
        bins=int(bins),
        pseudo_count=float(pseudo_count),
        n_blocks=int(n_blocks),
    )


# --------------------------------------------------------------------------- importance weights
# --------------------------------------------------------------------------- energies
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
    bins = _check_positive_int(bins, "bins")
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


# --------------------------------------------------------------------------- free energies
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
    n_bootstrap = _check_positive_int(n_bootstrap, "n_bootstrap")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    block_size = _check_positive_int(block_size, "block_size")
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


# --------------------------------------------------------------------------- likelihood
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
    block_size = _check_positive_int(block_size, "block_size")
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
