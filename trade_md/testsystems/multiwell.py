"""The multi-well ``u(x) = sum_i (x_i^4 - 4 x_i^2)``: a temperature target with exact ``log Z``."""

from __future__ import annotations

import math
from typing import Optional

import torch
from scipy import integrate
from torch import Tensor

from .. import units, validators
from ..targets import BoltzmannTarget
from ._numerics import GRID_POINTS, inverse_cdf

__all__ = ["MultiWell"]


class MultiWell(BoltzmannTarget):
    """Multi-well ``u(x) = sum_i (x_i^4 - 4 x_i^2)`` in ``dim`` dimensions, ``2**dim`` modes.

    ``p(x|T)`` is proportional to ``exp(-u(x) / T)`` with a dimensionless
    temperature ``T`` (``k_B = 1``). It is a :class:`BoltzmannTarget` with
    energy ``U = k_B u`` in kJ/mol, so ``U / (k_B T) = u / T`` and the
    temperature derivative goes through :func:`trade_md.units.dlogq_dT`.
    The density factorizes over dimensions, so ``log Z(T)`` is ``dim`` times
    the log of a 1-D integral, computed by adaptive quadrature.

    Parameters
    ----------
    dim : int
        Number of dimensions (>= 1).
    """

    def __init__(self, dim: int) -> None:
        self.dim = validators.positive_int("dim", dim)
        super().__init__(self._energy)

    def potential(self, x: Tensor) -> Tensor:
        """Dimensionless ``u(x)``, ``x`` of shape ``(B, dim)`` -> ``(B,)``."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        return (x**4 - 4 * x**2).sum(-1)

    def _energy(self, x: Tensor) -> Tensor:
        return units.KB * self.potential(x)

    @staticmethod
    def _half_width(temperature: float) -> float:
        # (x^2 - 2)^2 / T = 60 at |x| = L: the density there is e^-60 of its peak.
        return math.sqrt(2.0 + math.sqrt(60.0 * temperature))

    def log_Z(self, c: float) -> float:
        """Exact ``log Z(T) = dim * log int exp(-(x^4 - 4x^2)/T) dx`` at a scalar ``T``."""
        temperature = validators.positive_number("temperature", c)
        half = self._half_width(temperature)
        # u + 4 = (x^2 - 2)^2 >= 0: integrate the shifted density, add back 4/T.
        value, _ = integrate.quad(
            lambda s: math.exp(-((s * s - 2.0) ** 2) / temperature),
            -half,
            half,
            points=[-math.sqrt(2.0), 0.0, math.sqrt(2.0)],
            epsabs=0.0,
            epsrel=1e-13,
            limit=200,
        )
        return self.dim * (4.0 / temperature + math.log(value))

    def sample(self, n: int, c: float, generator: Optional[torch.Generator] = None) -> Tensor:
        """Exact samples at temperature ``c``, ``(n, dim)`` in the default dtype.

        Each coordinate is drawn independently by inverting the 1-D CDF
        tabulated on a grid of ``GRID_POINTS`` points (linear within a cell;
        the discretization error is far below Monte-Carlo error).
        """
        n = validators.positive_int("n", n)
        temperature = validators.positive_number("temperature", c)
        half = self._half_width(temperature)
        grid = torch.linspace(-half, half, GRID_POINTS, dtype=torch.float64)
        u = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        x = inverse_cdf(grid, -((grid**2 - 2.0) ** 2) / temperature, u)
        return x.to(torch.get_default_dtype())
