"""Figures comparing generated samples with reference MD, saved as PNG.

Figures are built as :class:`matplotlib.figure.Figure` objects and rendered
by the Agg backend; pyplot and matplotlib's global state are never touched.
Every function writes its PNG atomically (temporary file + rename) and
returns the path.  Torsions are in radians, energies in kJ/mol, weights are
non-negative and unnormalized (see :mod:`trade_md.analysis.metrics`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from .._io import PathLike, atomic_path
from ..validators import positive_int
from ._validate import _as_1d, _check_weights
from .metrics import histogram1d_torsion, histogram2d_torsions, torsion_bin_edges

__all__ = [
    "plot_ramachandran",
    "plot_phi_marginal",
    "plot_energy_histograms",
    "plot_metrics_vs_temperature",
]

#: Resolution of the saved PNGs (dots per inch).
DPI: int = 120
#: Dynamic range of the Ramachandran colour scale, in nats below the densest cell.
LOG_DENSITY_RANGE: float = 12.0

_PI_TICKS = (np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * np.pi, ["$-\\pi$", "$-\\pi/2$", "0", "$\\pi/2$", "$\\pi$"])
_COLORS = {"model": "tab:blue", "reweighted": "tab:orange", "reference": "black"}


def _save(fig: Figure, path: PathLike) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _angle_axis(axis, which: str) -> None:
    getattr(axis, f"set_{which}ticks")(*_PI_TICKS)
    getattr(axis, f"set_{which}lim")(-np.pi, np.pi)


def plot_ramachandran(
    path: PathLike,
    sample_phi: ArrayLike,
    sample_psi: ArrayLike,
    ref_phi: ArrayLike,
    ref_psi: ArrayLike,
    sample_weights: Optional[ArrayLike] = None,
    ref_weights: Optional[ArrayLike] = None,
    *,
    bins: int = 60,
    labels: Tuple[str, str] = ("model", "MD"),
    title: Optional[str] = None,
) -> Path:
    """Ramachandran log-densities of samples and reference side by side.

    Both panels use the same fixed ``bins x bins`` cells on ``[-pi, pi)^2`` and
    the same colour scale: the natural log of the density in rad^-2, from the
    densest cell of either panel down :data:`LOG_DENSITY_RANGE` nats.  Empty
    cells are white.

    Parameters
    ----------
    path : str or Path
        Output PNG file; its folder must exist.
    sample_phi, sample_psi : array_like, shape (N_s,), radians
    ref_phi, ref_psi : array_like, shape (N_r,), radians
    sample_weights, ref_weights : array_like, optional
        Non-negative weights (e.g. importance weights of the samples); the
        panel title then says "reweighted".
    bins : int
        Bins per axis.
    labels : (str, str)
        Panel titles of samples and reference.
    title : str, optional
        Figure title.

    Returns
    -------
    Path of the PNG.
    """
    bins = positive_int("bins", bins)
    cell_area = (2.0 * np.pi / bins) ** 2
    panels = [
        (histogram2d_torsions(sample_phi, sample_psi, sample_weights, bins), labels[0], sample_weights),
        (histogram2d_torsions(ref_phi, ref_psi, ref_weights, bins), labels[1], ref_weights),
    ]
    with np.errstate(divide="ignore"):
        log_density = [np.log(mass / cell_area) for mass, _, _ in panels]
    vmax = max(float(np.max(d)) for d in log_density)
    vmin = max(min(float(np.min(d[np.isfinite(d)])) for d in log_density), vmax - LOG_DENSITY_RANGE)

    fig = Figure(figsize=(10.5, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    edges = torsion_bin_edges(bins)
    for ax, density, (_, label, weights) in zip(axes, log_density, panels):
        image = ax.pcolormesh(
            edges, edges, np.ma.masked_invalid(density).T, vmin=vmin, vmax=vmax, cmap="viridis", shading="flat"
        )
        ax.set_title(label + (" (reweighted)" if weights is not None else ""))
        ax.set_xlabel("$\\phi$ [rad]")
        ax.set_aspect("equal")
        _angle_axis(ax, "x")
        _angle_axis(ax, "y")
    axes[0].set_ylabel("$\\psi$ [rad]")
    fig.colorbar(image, ax=axes, label="ln density [rad$^{-2}$]")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_phi_marginal(
    path: PathLike,
    sample_phi: ArrayLike,
    ref_phi: ArrayLike,
    sample_weights: Optional[ArrayLike] = None,
    *,
    bins: int = 60,
    labels: Tuple[str, str] = ("model", "MD"),
    title: Optional[str] = None,
) -> Path:
    """Free-energy profile ``-ln p(phi)`` in kT of model, reweighted model and reference.

    The densities come from the same fixed bins on ``[-pi, pi)``; all curves
    are shifted by one constant so that the reference minimum is 0 kT.  Empty
    bins leave gaps.

    Parameters
    ----------
    path : str or Path
        Output PNG file; its folder must exist.
    sample_phi : array_like, shape (N_s,), radians
    ref_phi : array_like, shape (N_r,), radians
    sample_weights : array_like, shape (N_s,), optional
        Importance weights; if given, the reweighted model is drawn as well.
    bins : int
        Number of bins.
    labels : (str, str)
        Legend names of samples and reference.
    title : str, optional
        Axes title.

    Returns
    -------
    Path of the PNG.
    """
    curves = [(labels[0], histogram1d_torsion(sample_phi, None, bins), _COLORS["model"])]
    if sample_weights is not None:
        curves.append(
            (f"{labels[0]} reweighted", histogram1d_torsion(sample_phi, sample_weights, bins), _COLORS["reweighted"])
        )
    reference = histogram1d_torsion(ref_phi, None, bins)
    curves.append((labels[1], reference, _COLORS["reference"]))
    with np.errstate(divide="ignore"):
        shift = -np.log(reference.max())
        profiles = [(name, -np.log(mass) - shift, color) for name, mass, color in curves]

    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    edges = torsion_bin_edges(bins)
    for name, profile, color in profiles:
        ax.stairs(
            np.where(np.isfinite(profile), profile, np.nan), edges, baseline=None, label=name, color=color, linewidth=1.5
        )
    _angle_axis(ax, "x")
    ax.set_xlabel("$\\phi$ [rad]")
    ax.set_ylabel("$-\\ln p(\\phi)$ [kT]")
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_energy_histograms(
    path: PathLike,
    sample_energy: ArrayLike,
    ref_energy: ArrayLike,
    sample_weights: Optional[ArrayLike] = None,
    *,
    bins: int = 80,
    labels: Tuple[str, str] = ("model", "MD"),
    title: Optional[str] = None,
) -> Path:
    """Potential-energy histograms of model, reweighted model and reference.

    The range is the reference's 0.1-99.9 percentile range widened by 25 % on
    each side, so clashing samples with huge energies cannot squash the plot;
    the legend states the fraction of model samples outside it.

    Parameters
    ----------
    path : str or Path
        Output PNG file; its folder must exist.
    sample_energy : array_like, shape (N_s,), kJ/mol
    ref_energy : array_like, shape (N_r,), kJ/mol
    sample_weights : array_like, shape (N_s,), optional
        Importance weights; if given, the reweighted model is drawn as well.
    bins : int
        Number of bins in the range.
    labels : (str, str)
        Legend names of samples and reference.
    title : str, optional
        Axes title.

    Returns
    -------
    Path of the PNG.
    """
    sample = _as_1d(sample_energy, "sample_energy")
    reference = _as_1d(ref_energy, "ref_energy")
    weights = _check_weights(sample_weights, sample.size, "sample_weights")
    bins = positive_int("bins", bins)
    low, high = np.percentile(reference, [0.1, 99.9])
    margin = 0.25 * (high - low) if high > low else 1.0
    low, high = low - margin, high + margin
    outside = float(np.mean((sample < low) | (sample > high)))

    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(low, high, bins + 1)
    series = [(f"{labels[0]} ({100 * outside:.1f} % outside)", sample, None, _COLORS["model"])]
    if weights is not None:
        series.append((f"{labels[0]} reweighted", sample, weights, _COLORS["reweighted"]))
    series.append((labels[1], reference, None, _COLORS["reference"]))
    for name, values, w, color in series:
        mass, _ = np.histogram(values, bins=edges, weights=w)
        total = values.size if w is None else w.sum()  # density of the full sample, not just the range
        ax.stairs(mass / total / np.diff(edges), edges, label=name, color=color, linewidth=1.5)
    ax.set_xlabel("potential energy [kJ/mol]")
    ax.set_ylabel("density [mol/kJ]")
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_metrics_vs_temperature(
    path: PathLike,
    temperatures: ArrayLike,
    metrics: Mapping[str, Sequence[float]],
    noise_floors: Optional[Mapping[str, Sequence[float]]] = None,
    relative_ess: Optional[Sequence[float]] = None,
    *,
    training_temperature: Optional[float] = None,
    title: Optional[str] = None,
) -> Path:
    """Metrics (and their noise floors) and relative ESS versus temperature.

    Parameters
    ----------
    path : str or Path
        Output PNG file; its folder must exist.
    temperatures : array_like, shape (n_T,), K
    metrics : mapping of name to array_like of shape (n_T,)
        E.g. ``{"KL(model||MD) [nats]": [...], "JS [nats]": [...]}``; drawn
        with a log axis when all finite values are positive.
    noise_floors : mapping of name to array_like of shape (n_T,), optional
        Noise floor of some of the ``metrics`` (same names), drawn dashed in
        the metric's colour.
    relative_ess : array_like, shape (n_T,), optional
        Kish ESS / N in (0, 1]; drawn in a second panel, in percent.
    training_temperature : float, optional
        Marked with a vertical dotted line (K).
    title : str, optional
        Figure title.

    Returns
    -------
    Path of the PNG.
    """
    temps = _as_1d(temperatures, "temperatures")
    if np.any(temps <= 0):
        raise ValueError("temperatures must be > 0 K")
    if not metrics:
        raise ValueError("metrics is empty")
    noise_floors = dict(noise_floors or {})
    unknown = sorted(set(noise_floors) - set(metrics))
    if unknown:
        raise ValueError(f"noise_floors has names that are not in metrics: {unknown}")

    order = np.argsort(temps)
    temps = temps[order]

    def series(values: Sequence[float], name: str) -> np.ndarray:
        """Values sorted by temperature, non-finite ones as NaN (gaps)."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != temps.shape:
            raise ValueError(f"{name} has shape {arr.shape} but there are {temps.size} temperatures")
        return np.where(np.isfinite(arr), arr, np.nan)[order]

    fig = Figure(figsize=(11.0 if relative_ess is not None else 6.5, 4.0), layout="constrained")
    axes = fig.subplots(1, 2 if relative_ess is not None else 1, squeeze=False)[0]
    ax = axes[0]
    plotted = []
    for k, (name, values) in enumerate(metrics.items()):
        color = f"C{k % 10}"
        y = series(values, f"metrics[{name!r}]")
        ax.plot(temps, y, "o-", color=color, label=name)
        plotted.append(y)
        if name in noise_floors:
            floor = series(noise_floors[name], f"noise_floors[{name!r}]")
            ax.plot(temps, floor, "--", color=color, label=f"{name} noise floor")
            plotted.append(floor)
    finite = np.concatenate(plotted)
    finite = finite[np.isfinite(finite)]
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")
    ax.set_ylabel("metric")
    if relative_ess is not None:
        ess = 100.0 * series(relative_ess, "relative_ess")
        axes[1].plot(temps, ess, "o-", color="tab:green", label="relative ESS")
        if np.all(ess[np.isfinite(ess)] > 0):
            axes[1].set_yscale("log")
        axes[1].set_ylabel("relative Kish ESS [%]")
    for a in axes:
        if training_temperature is not None:
            a.axvline(training_temperature, color="gray", linestyle=":", label="training T")
        a.set_xlabel("temperature [K]")
        a.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
