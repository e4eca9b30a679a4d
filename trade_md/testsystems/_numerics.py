"""Numerics shared by the toy targets: CDF inversion on a grid and 2-D grid quadrature."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["GRID_POINTS", "inverse_cdf", "grid_log_integral"]

#: Points of the 1-D grids the exact samplers invert CDFs on.
GRID_POINTS = 2**17 + 1


def inverse_cdf(grid: Tensor, log_density: Tensor, u: Tensor) -> Tensor:
    """Invert the CDF of a 1-D density tabulated on a uniform grid.

    Parameters
    ----------
    grid : (G,) float64 tensor
        Uniform grid covering the support.
    log_density : (G,) float64 tensor
        Unnormalized log-density on the grid.
    u : (...) float64 tensor
        Uniform variates in [0, 1).

    Returns
    -------
    (...) tensor
        Points whose distribution is the trapezoid interpolation of the density
        (piecewise uniform within a cell).
    """
    density = torch.exp(log_density - log_density.max())
    mass = 0.5 * (density[1:] + density[:-1])
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(mass, 0)])
    cdf = cdf / cdf[-1]
    cell = torch.searchsorted(cdf, u, right=True).clamp(1, len(grid) - 1) - 1
    frac = (u - cdf[cell]) / (cdf[cell + 1] - cdf[cell]).clamp_min(1e-300)
    return grid[cell] + frac.clamp(0, 1) * (grid[1] - grid[0])


def grid_log_integral(log_density: Callable[[Tensor], Tensor], axes: Sequence[Tensor], chunk: int = 256) -> float:
    """``log`` of the trapezoid integral of ``exp(log_density)`` over a 2-D tensor grid.

    ``axes`` are two sorted 1-D float64 tensors (possibly non-uniform); the
    density is evaluated in row chunks to bound memory.
    """
    ax, ay = axes
    wx = torch.zeros_like(ax)
    wx[1:] += 0.5 * torch.diff(ax)
    wx[:-1] += 0.5 * torch.diff(ax)
    wy = torch.zeros_like(ay)
    wy[1:] += 0.5 * torch.diff(ay)
    wy[:-1] += 0.5 * torch.diff(ay)
    parts = []
    for start in range(0, len(ax), chunk):
        xs = ax[start : start + chunk]
        pts = torch.stack(torch.meshgrid(xs, ay, indexing="ij"), -1).reshape(-1, 2)
        logw = torch.log(wx[start : start + chunk])[:, None] + torch.log(wy)[None, :]
        parts.append(torch.logsumexp(log_density(pts).reshape(len(xs), len(ay)) + logw, (0, 1)))
    return float(torch.logsumexp(torch.stack(parts), 0))
