"""Reference sampling of :class:`~trade_md.testsystems.phi4.Phi4Lattice` and its observables with errors.

:func:`metropolis` runs many independent checkerboard Metropolis chains at
once (any number of ``kappa`` values side by side); :func:`lattice_observables`
turns per-configuration magnetizations and actions (with importance weights
for flow samples, unit weights for MCMC) into ``<|m|>``, action per site,
susceptibility and Binder cumulant with jackknife errors over independent
groups: whole chains for MCMC (each chain mean carries its autocorrelation,
so the errors are autocorrelation-aware without a model of it), blocks of
i.i.d. samples for a flow. :func:`integrated_autocorrelation` reports the
chains' integrated autocorrelation time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import validators
from .phi4 import Phi4Lattice

__all__ = ["ChainSamples", "metropolis", "Observable", "lattice_observables", "integrated_autocorrelation",
           "OBSERVABLES"]

#: Names of the ensemble observables of :func:`lattice_observables`.
OBSERVABLES: tuple[str, ...] = ("abs_m", "action", "susceptibility", "binder")


@dataclass(frozen=True)
class ChainSamples:
    """Measurements of independent Metropolis chains after thermalization.

    Attributes
    ----------
    kappa : (C,) float64 tensor
        Condition of every chain.
    magnetization, action : (C, T) float64 tensors
        Magnetization per site and total action of every recorded configuration.
    fields : (C, K, V) float64 tensor
        The last ``K`` recorded configurations of every chain (flat, row-major).
    acceptance : (C,) float64 tensor
        Acceptance rate of the production sweeps.
    """

    kappa: Tensor
    magnetization: Tensor
    action: Tensor
    fields: Tensor
    acceptance: Tensor


def metropolis(
    target: Phi4Lattice,
    kappa: Tensor,
    sweeps: int,
    thermalize: int,
    every: int = 1,
    keep: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> ChainSamples:
    """Checkerboard Metropolis for phi^4, one independent chain per entry of ``kappa``.

    A sweep updates the even sites, then the odd ones, each proposing
    ``phi + delta * N(0, 1)`` and accepting with ``min(1, exp(-dS))`` from the
    local change of the action (same-colour sites do not interact, so this
    is exact). The step ``delta`` of each chain is tuned to about 50 %
    acceptance during thermalization only, then frozen (detailed balance
    holds in the recorded part).

    Parameters
    ----------
    target : Phi4Lattice
    kappa : (C,) tensor
        Hopping parameter of every chain (> 0).
    sweeps : int
        Production sweeps per chain.
    thermalize : int
        Sweeps discarded first (step-size tuning happens here).
    every : int
        Record one configuration every ``every`` sweeps.
    keep : int
        How many of the last recorded configurations to return whole (training data).
    seed : int
    progress : bool
        tqdm progress bar over sweeps.
    """
    kappa = torch.as_tensor(kappa, dtype=torch.float64)
    if kappa.dim() != 1 or not bool(torch.all(torch.isfinite(kappa) & (kappa > 0))):
        raise ValueError(f"kappa must be a 1-D tensor of finite values > 0, got {kappa.tolist()}")
    sweeps = validators.positive_int("sweeps", sweeps)
    thermalize = validators.non_negative_int("thermalize", thermalize)
    every = validators.positive_int("every", every)
    n_records = sweeps // every
    keep = validators.non_negative_int("keep", keep)
    if keep > n_records:
        raise ValueError(f"keep={keep} exceeds the {n_records} recorded configurations per chain")
    gen = torch.Generator().manual_seed(seed)
    n, size, lam = kappa.shape[0], target.size, target.lam
    phi = torch.randn(n, size, size, generator=gen, dtype=torch.float64)
    ii, jj = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    colours = [((ii + jj) % 2 == parity).to(torch.float64) for parity in (0, 1)]
    delta = torch.full((n, 1, 1), 1.2, dtype=torch.float64)
    k = kappa[:, None, None]
    mags = torch.empty(n, n_records, dtype=torch.float64)
    actions = torch.empty(n, n_records, dtype=torch.float64)
    fields = torch.empty(n, keep, size * size, dtype=torch.float64)
    accepted = torch.zeros(n, dtype=torch.float64)

    def sweep() -> Tensor:
        nonlocal phi
        acc = torch.zeros(n, dtype=torch.float64)
        for mask in colours:
            neighbours = (torch.roll(phi, 1, 1) + torch.roll(phi, -1, 1) + torch.roll(phi, 1, 2)
                          + torch.roll(phi, -1, 2))
            new = phi + delta * torch.randn(phi.shape, generator=gen, dtype=torch.float64)
            old2, new2 = phi.square(), new.square()
            d_action = (-2 * k * (new - phi) * neighbours + new2 - old2
                        + lam * ((new2 - 1).square() - (old2 - 1).square()))
            u = torch.rand(phi.shape, generator=gen, dtype=torch.float64)
            accept = (torch.log(u) < -d_action).to(torch.float64) * mask
            phi = phi + accept * (new - phi)
            acc += accept.sum((1, 2))
        return acc / (size * size)

    with tqdm(total=thermalize + sweeps, disable=not progress, desc="metropolis", dynamic_ncols=True) as bar:
        for t in range(thermalize):
            acc = sweep()
            if t < 0.8 * thermalize:  # tune, then leave a stretch with the final step
                delta *= torch.exp(acc - 0.5)[:, None, None]
            bar.update(1)
        for t in range(sweeps):
            accepted += sweep()
            if (t + 1) % every == 0:
                r = (t + 1) // every - 1
                flat = phi.reshape(n, -1)
                mags[:, r] = flat.mean(1)
                actions[:, r] = target.action(flat, kappa)
                if r >= n_records - keep:
                    fields[:, r - (n_records - keep)] = flat
            bar.update(1)
    return ChainSamples(kappa, mags, actions, fields, accepted / sweeps)


@dataclass(frozen=True)
class Observable:
    """An ensemble average with its standard error."""

    value: float
    stderr: float


def _estimates(sums: np.ndarray, volume: int) -> np.ndarray:
    """Observables from weighted sums ``(..., 5)``: w, w|m|, w m^2, w m^4, w S -> (..., 4)."""
    abs_m, m2, m4, action = (sums[..., i] / sums[..., 0] for i in range(1, 5))
    susceptibility = volume * (m2 - abs_m**2)
    binder = 1.0 - m4 / (3.0 * m2**2)
    return np.stack([abs_m, action / volume, susceptibility, binder], -1)


def lattice_observables(
    magnetization: np.ndarray,
    action: np.ndarray,
    volume: int,
    groups: np.ndarray,
    log_weights: Optional[np.ndarray] = None,
) -> dict[str, Observable]:
    """``<|m|>``, action per site, susceptibility and Binder cumulant with jackknife errors.

    ``susceptibility = V (<m^2> - <|m|>^2)`` and ``binder = 1 - <m^4> / (3 <m^2>^2)``,
    with ``m`` the magnetization per site. Averages are self-normalized
    importance-weighted when ``log_weights`` is given. Errors: delete-one
    jackknife over the groups, which must be independent of each other
    (independent chains, or blocks of i.i.d. samples).

    Parameters
    ----------
    magnetization, action : (N,) arrays
        Per configuration: magnetization per site, total action.
    volume : int
        Number of sites ``V``.
    groups : (N,) int array
        Group label of every configuration (at least 2 groups).
    log_weights : (N,) array, optional
        Unnormalized log importance weights (non-finite: weight 0).

    Returns
    -------
    dict of str to Observable
        Keys :data:`OBSERVABLES`.
    """
    m = np.asarray(magnetization, dtype=float)
    s = np.asarray(action, dtype=float)
    groups = np.asarray(groups)
    if m.shape != s.shape or m.shape != groups.shape or m.ndim != 1:
        raise ValueError(f"magnetization, action and groups must be (N,) arrays of one length, got "
                         f"{m.shape}, {s.shape}, {groups.shape}")
    if log_weights is None:
        w = np.ones_like(m)
    else:
        lw = np.asarray(log_weights, dtype=float)
        if lw.shape != m.shape:
            raise ValueError(f"log_weights must have shape {m.shape}, got {lw.shape}")
        finite = np.isfinite(lw)
        w = np.where(finite, np.exp(lw - lw[finite].max()), 0.0) if finite.any() else np.zeros_like(m)
    labels, index = np.unique(groups, return_inverse=True)
    if labels.size < 2:
        raise ValueError("the jackknife needs at least 2 groups")
    terms = np.stack([w, w * np.abs(m), w * m**2, w * m**4, w * s], -1)
    per_group = np.stack([np.bincount(index, terms[:, i], labels.size) for i in range(5)], -1)
    total = per_group.sum(0)
    full = _estimates(total, volume)
    leave_out = _estimates(total[None] - per_group, volume)
    g = labels.size
    stderr = np.sqrt((g - 1) / g * ((leave_out - leave_out.mean(0)) ** 2).sum(0))
    return {name: Observable(float(full[i]), float(stderr[i])) for i, name in enumerate(OBSERVABLES)}


def integrated_autocorrelation(series: np.ndarray, window_factor: float = 5.0) -> float:
    """Integrated autocorrelation time (in records) of ``(C, T)`` chains, Sokal's automatic window.

    ``tau = 1/2 + sum_{t=1}^{W} rho(t)`` with ``rho`` averaged over the chains
    and the smallest window ``W >= window_factor * tau(W)``. 0.5 means no
    correlation.
    """
    x = np.asarray(series, dtype=float)
    if x.ndim != 2 or x.shape[1] < 4:
        raise ValueError(f"series must be (chains, T) with T >= 4, got {x.shape}")
    x = x - x.mean(1, keepdims=True)
    t = x.shape[1]
    spectrum = np.fft.rfft(x, 2 * t)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:, :t].mean(0)
    if acf[0] <= 0:
        return 0.5
    rho = acf / acf[0]
    tau = 0.5
    for window in range(1, t):
        tau += rho[window]
        if window >= window_factor * tau:
            break
    return float(max(tau, 0.5)) if math.isfinite(tau) else math.nan
