"""The phi^4 scalar field on a periodic ``L x L`` lattice, conditioned on the hopping parameter ``kappa``.

Action (lambda fixed)::

    S(phi; kappa) = sum_x [ -2 kappa sum_mu phi_x phi_{x+mu} + phi_x^2 + lambda (phi_x^2 - 1)^2 ]

with ``mu`` over the two lattice directions (periodic). ``q(phi|kappa) =
exp(-S)`` is linear in ``kappa`` in the exponent, so ``d/dkappa log q =
2 sum_x sum_mu phi_x phi_{x+mu}`` exactly (computed once, in
:meth:`Phi4Lattice.evaluate`). Observables per configuration are the
magnetization per site ``m = sum_x phi_x / V`` and the action per site
``S / V`` (``V = L^2``); their ensemble functions are in
:mod:`trade_md.testsystems.lattice_mcmc`.

Fields are flat ``(B, L*L)`` tensors in row-major order (``phi[b, i*L + j]``
is site ``(i, j)``), the layout of the flows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .. import validators
from ..density import ConditionLike, as_condition
from ..targets import TargetTerms

__all__ = ["Phi4Lattice", "exact_moments"]


class Phi4Lattice:
    """phi^4 theory on an ``L x L`` periodic lattice, a :class:`~trade_md.targets.Target` with condition ``"kappa"``.

    Parameters
    ----------
    size : int
        Lattice extent ``L`` (even, >= 2: the checkerboard sampler needs two colours).
    lam : float
        Quartic coupling ``lambda`` (> 0), fixed.
    """

    condition = "kappa"

    def __init__(self, size: int, lam: float = 0.02) -> None:
        size = validators.positive_int("size", size)
        if size < 2 or size % 2:
            raise ValueError(f"size must be an even integer >= 2, got {size!r}")
        self.size = size
        self.lam = validators.positive_number("lam", lam)

    @property
    def volume(self) -> int:
        """Number of sites ``V = L^2``."""
        return self.size * self.size

    def checkerboard_order(self) -> Tensor:
        """``(L*L,)`` long: row-major site indices with the two sublattices interleaved.

        Entry ``2k`` is the k-th site with ``r + c`` even, entry ``2k + 1`` the k-th with ``r + c`` odd,
        so a flow over the reordered field whose coupling halves take every other coordinate
        (``"real/0"``, ``"real/1"``) transforms one sublattice given the other: all four neighbours
        of every transformed site are on the conditioning side.
        """
        r, c = torch.meshgrid(torch.arange(self.size), torch.arange(self.size), indexing="ij")
        colour = ((r + c) % 2).reshape(-1)
        even, odd = torch.nonzero(colour == 0).reshape(-1), torch.nonzero(colour == 1).reshape(-1)
        return torch.stack([even, odd], dim=1).reshape(-1)

    def field(self, x: Tensor) -> Tensor:
        """``x`` ``(B, L*L)`` as a ``(B, L, L)`` view; ValueError for any other shape."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.volume:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, {self.volume}) (a {self.size}x{self.size} lattice, "
                             f"row-major), got {shape}")
        return x.reshape(x.shape[0], self.size, self.size)

    def hopping(self, x: Tensor) -> Tensor:
        """``sum_x sum_mu phi_x phi_{x+mu}``, ``(B,)``."""
        phi = self.field(x)
        return (phi * (torch.roll(phi, 1, 1) + torch.roll(phi, 1, 2))).sum((1, 2))

    def local_action(self, x: Tensor) -> Tensor:
        """The kappa-independent part ``sum_x [phi_x^2 + lambda (phi_x^2 - 1)^2]``, ``(B,)``."""
        phi2 = self.field(x).square()
        return (phi2 + self.lam * (phi2 - 1.0).square()).sum((1, 2))

    def action(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``S(phi; kappa)``, ``(B,)``."""
        return -self.evaluate(x, c).log_q

    def evaluate(self, x: Tensor, c: ConditionLike) -> TargetTerms:
        """``log q = -S`` and ``d/dkappa log q = 2 sum_x sum_mu phi_x phi_{x+mu}``, both ``(B,)``."""
        kappa = as_condition(c, x, "kappa")
        s = 2.0 * self.hopping(x)
        return TargetTerms(log_q=kappa * s - self.local_action(x), dlogq_dc=s)

    def log_q(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``-S(phi; kappa)``, ``(B,)``."""
        return self.evaluate(x, c).log_q

    def dlogq_dc(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``2 sum_x sum_mu phi_x phi_{x+mu}``, ``(B,)``."""
        return self.evaluate(x, c).dlogq_dc

    def magnetization(self, x: Tensor) -> Tensor:
        """Magnetization per site ``m = sum_x phi_x / V``, ``(B,)``."""
        return self.field(x).mean((1, 2))


def exact_moments(kappa: float, lam: float = 0.02, points: int = 40, half_width: float = 6.0) -> dict:
    """Exact ensemble averages on the 2x2 lattice by 4-D quadrature.

    The field is written in the orthonormal Hadamard modes ``y = H phi``
    (Jacobian 1), ``y_0 = sum_x phi_x / 2 = 2 m``. The integrand is even
    under ``y -> -y``, so ``y_0`` runs over ``[0, 2 half_width]`` with
    Gauss-Legendre nodes (``|m|`` then has no kink inside the interval) and
    the other three modes over ``[-half_width, half_width]`` with the
    trapezoid rule, spectrally accurate for this smooth integrand, which is
    below ``e^-60`` of its peak at the ends for ``kappa <= 0.3`` and
    ``lam = 0.02`` (widen ``half_width`` beyond). Two resolutions agreeing to
    1e-8 is the check (``tests/test_phi4.py``).

    Parameters
    ----------
    kappa, lam : float
    points : int
        Nodes per mode.
    half_width : float

    Returns
    -------
    dict
        ``abs_m``, ``m2``, ``m4`` (moments of the magnetization per site) and
        ``action`` (action per site), floats.
    """
    kappa = validators.positive_number("kappa", kappa)
    points = validators.positive_int("points", points)
    target = Phi4Lattice(2, lam)
    hadamard = 0.5 * np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)
    nodes, weights = np.polynomial.legendre.leggauss(points)
    y0 = half_width * (nodes + 1.0)  # [0, 2 half_width]
    axis = np.linspace(-half_width, half_width, points)
    b, c, d = (v.ravel() for v in np.meshgrid(axis, axis, axis, indexing="ij"))
    sums = np.zeros(5)
    for a, wa in zip(y0, weights):  # one slice of y_0 at a time bounds memory
        y = np.stack([np.full_like(b, a), b, c, d], -1)
        phi = torch.from_numpy(y @ hadamard)  # H is symmetric and orthogonal: phi = H y
        action = target.action(phi, kappa).numpy()
        # S >= 4 min_phi [phi^2 (1 - 4 kappa) + lam (phi^2 - 1)^2] > -100 here: exp(-S) cannot overflow
        w = wa * np.exp(-action)
        m = a / 2.0
        sums += [w.sum(), abs(m) * w.sum(), m**2 * w.sum(), m**4 * w.sum(), (w * action).sum()]
    z = sums[0]
    if not math.isfinite(z) or z <= 0:
        raise FloatingPointError(f"quadrature failed at kappa={kappa}")
    return {"abs_m": sums[1] / z, "m2": sums[2] / z, "m4": sums[3] / z, "action": sums[4] / z / 4.0}
