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
- Every noise floor compares the same two halves of the reference
  (:func:`interleaved_halves`), for torsions (:func:`noise_floor`) and for
  discrete basin states (:func:`basin_divergence`).

The energy distances (:mod:`.energies`) and free energies and likelihoods
(:mod:`.free_energy`) live in their own modules and are re-exported here.

Results with several numbers are frozen dataclasses with ``to_dict()``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ..validators import positive_int
from ..weights import kish_ess, pareto_k, pareto_k_limit, pareto_k_or_none, relative_ess, self_normalized_weights
from ._validate import (
    _TWO_PI,
    ANGLE_TOLERANCE,
    _as_angles,
    _check_same_length,
    _check_weights,
    wrap_angles,
)
from .energies import CentralEnergyDistance, central_energy_distance, histogram_overlap, wasserstein_1d
from .free_energy import FreeEnergyDifference, NLLResult, free_energy_difference, nll

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
    "interleaved_halves",
    "block_mean",
    "noise_floor",
    "TorsionDivergences",
    "ramachandran_divergences",
    "self_normalized_weights",
    "kish_ess",
    "relative_ess",
    "pareto_k",
    "pareto_k_or_none",
    "pareto_k_limit",
    "wasserstein_1d",
    "histogram_overlap",
    "CentralEnergyDistance",
    "central_energy_distance",
    "joint_basin_labels",
    "BasinDivergence",
    "basin_divergence",
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

#: ``metric(p_phi, p_psi, q_phi, q_psi, p_weights, q_weights) -> float``, e.g. :func:`kl_divergence`.
TorsionMetric = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]], float
]


# --------------------------------------------------------------------------- histograms
def torsion_bin_edges(bins: int = DEFAULT_BINS) -> np.ndarray:
    """Edges of the fixed torsion bins: ``(bins + 1,)`` radians from ``-pi`` to ``pi``."""
    bins = positive_int("bins", bins)
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
    bins = positive_int("bins", bins)
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
    bins = positive_int("bins", bins)
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


def interleaved_halves(n_frames: int, n_blocks: int = 20) -> Tuple[np.ndarray, np.ndarray]:
    """Frame indices of the two halves that every noise floor compares.

    The frames, in trajectory order, are cut into ``n_blocks`` contiguous
    blocks (``np.array_split``); even-numbered blocks form half A and
    odd-numbered ones half B.  Contiguous blocks keep correlated MD frames
    together, so a divergence between the halves reflects how well the
    reference itself is converged (a random split of correlated frames would
    understate it); choose blocks longer than the correlation time.

    Parameters
    ----------
    n_frames : int
        Number of reference frames, >= ``n_blocks``.
    n_blocks : int
        Number of blocks, >= 2.

    Returns
    -------
    half_a, half_b : np.ndarray of int64, shapes (about n_frames / 2,)
        Sorted frame indices; together they are ``0 .. n_frames - 1``.
    """
    n_frames = positive_int("n_frames", n_frames)
    n_blocks = positive_int("n_blocks", n_blocks)
    if n_blocks < 2:
        raise ValueError(f"n_blocks must be >= 2 to split the reference in two halves, got {n_blocks}")
    if n_blocks > n_frames:
        raise ValueError(f"n_blocks ({n_blocks}) exceeds the number of frames ({n_frames})")
    blocks = np.array_split(np.arange(n_frames), n_blocks)
    return np.concatenate(blocks[0::2]), np.concatenate(blocks[1::2])


def block_mean(values: ArrayLike, weights: Optional[ArrayLike] = None, n_blocks: int = 20) -> dict:
    """(Weighted) mean of ``values`` (N,) with the standard error from ``n_blocks`` contiguous blocks.

    Each block gives its own (self-normalized) weighted mean; the standard error
    is their standard deviation over ``sqrt(n_blocks)`` (blocks without weight are
    left out), so correlated MD frames count once per block, not once per frame.

    Returns
    -------
    dict: ``{"value": float, "stderr": float}`` (stderr NaN with fewer than two usable blocks).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {x.shape}")
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != x.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {x.size} finite non-negative numbers with a positive sum")
    n_blocks = min(positive_int("n_blocks", n_blocks), x.size)
    means = [float(np.dot(wb, xb) / wb.sum()) for xb, wb in zip(np.array_split(x, n_blocks), np.array_split(w, n_blocks))
             if wb.sum() > 0]
    stderr = float(np.std(means, ddof=1) / np.sqrt(len(means))) if len(means) >= 2 else float("nan")
    return {"value": float(np.dot(w, x) / w.sum()), "stderr": stderr}


def noise_floor(
    phi: ArrayLike,
    psi: ArrayLike,
    metric: TorsionMetric,
    weights: Optional[ArrayLike] = None,
    *,
    n_blocks: int = 20,
) -> float:
    """The reference's own value of ``metric``: one half versus the other.

    The halves are :func:`interleaved_halves` (even versus odd blocks of
    contiguous frames) and the result is ``metric(A, B)``.  Each half has
    about N/2 frames, so the floor is, if anything, larger than the
    finite-sample bias of a comparison that uses all N reference frames.
    :func:`basin_divergence` uses the same halves for its floor.

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
    half_a, half_b = interleaved_halves(phi.size, n_blocks)
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


# --------------------------------------------------------------------------- joint basins
def joint_basin_labels(codes: ArrayLike, n_basins: int = 3) -> np.ndarray:
    """One label per frame for the basins of all residues together.

    ``label = sum_i codes[:, i] * n_basins**i`` (residue 0 is the least
    significant digit), so there are ``n_basins ** n_residues`` possible labels.

    Parameters
    ----------
    codes : array_like of int, shape (N, n_residues)
        Basin code of every residue in every frame, in ``[0, n_basins)`` (e.g.
        ``observables.assign_basins`` of the (N, n_residues) phi and psi).
    n_basins : int
        Number of basins per residue (3 for ``observables.BASINS``).

    Returns
    -------
    np.ndarray of int64, shape (N,)
    """
    codes = np.asarray(codes)
    n_basins = positive_int("n_basins", n_basins)
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError(f"codes must have shape (N, n_residues) with N, n_residues >= 1, got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.min() < 0 or codes.max() >= n_basins:
        raise ValueError(f"codes must lie in [0, {n_basins}), found [{codes.min()}, {codes.max()}]")
    if n_basins ** codes.shape[1] > np.iinfo(np.int64).max:
        raise ValueError(f"{n_basins}^{codes.shape[1]} joint labels do not fit in int64")
    return codes.astype(np.int64) @ (n_basins ** np.arange(codes.shape[1], dtype=np.int64))


@dataclass(frozen=True)
class BasinDivergence:
    """JS divergence (nats) of the populations of discrete states, with its noise floor.

    ``js_floor`` is the same divergence between the two
    :func:`interleaved_halves` of the reference.  ``n_states_occupied`` counts
    the states with weight in the samples or the reference (only those enter
    the divergence; the others add zero).
    """

    js: float
    js_floor: float
    n_states_occupied: int
    n_blocks: int

    def to_dict(self) -> dict:
        """Plain ``dict`` of the fields (JSON-ready)."""
        return asdict(self)


def _labels(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of shape (N,), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def basin_divergence(
    sample_labels: ArrayLike,
    ref_labels: ArrayLike,
    sample_weights: Optional[ArrayLike] = None,
    ref_weights: Optional[ArrayLike] = None,
    *,
    n_blocks: int = 20,
) -> BasinDivergence:
    """JS divergence between the state populations of samples and reference.

    Populations are the (weighted) fractions of the frames with each label;
    ``JS = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, as in
    :func:`js_divergence_histograms`.  Only the labels that occur matter, so
    the 3^n joint basin states of a long peptide cost no memory.

    Parameters
    ----------
    sample_labels : array_like of int, shape (N_s,)
        State of every sample, e.g. :func:`joint_basin_labels`.
    ref_labels : array_like of int, shape (N_r,)
        State of every reference frame, in trajectory order (for the floor).
    sample_weights, ref_weights : array_like, optional
        Non-negative weights of shape (N_s,) and (N_r,); ``None``: equal.
    n_blocks : int
        Blocks of :func:`interleaved_halves` for the noise floor.

    Returns
    -------
    BasinDivergence, nats.
    """
    s = _labels(sample_labels, "sample_labels")
    r = _labels(ref_labels, "ref_labels")
    ws = _check_weights(sample_weights, s.size, "sample_weights")
    wr = _check_weights(ref_weights, r.size, "ref_weights")
    states, index = np.unique(np.concatenate([s, r]), return_inverse=True)
    s_index, r_index = index[: s.size], index[s.size:]

    def populations(idx: np.ndarray, w: Optional[np.ndarray]) -> np.ndarray:
        return np.bincount(idx, weights=w, minlength=states.size)

    half_a, half_b = interleaved_halves(r.size, n_blocks)
    floor = js_divergence_histograms(
        populations(r_index[half_a], None if wr is None else wr[half_a]),
        populations(r_index[half_b], None if wr is None else wr[half_b]),
    )
    return BasinDivergence(
        js=js_divergence_histograms(populations(s_index, ws), populations(r_index, wr)),
        js_floor=floor,
        n_states_occupied=int(states.size),
        n_blocks=int(n_blocks),
    )
