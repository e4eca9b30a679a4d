"""Tempered targets ``q(x|beta)`` with exact ``log Z(beta)`` and exact samplers (condition ``"beta"``)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .. import validators
from ..targets import PowerTarget
from ._numerics import GRID_POINTS, grid_log_integral, inverse_cdf

__all__ = ["GaussianMixturePower", "TwoMoonsPosterior"]


def _log_normal_2d(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Log-density of isotropic 2-D normals; x (B, 2), mean (K, 2), std (K,) -> (B, K)."""
    sq = ((x[:, None, :] - mean[None]) ** 2).sum(-1)
    return -0.5 * sq / std**2 - 2 * torch.log(std) - math.log(2 * math.pi)


class GaussianMixturePower(PowerTarget):
    """A 2-D Gaussian mixture raised to a power: ``q(x|beta) = GMM(x)**beta``.

    ``log Z(beta)`` is computed by quadrature on a grid; samples are exact
    (rejection from a mixture of the tempered components).

    Parameters
    ----------
    means : (K, 2) sequence
        Component means.
    stds : (K,) sequence
        Isotropic component standard deviations (> 0).
    weights : (K,) sequence
        Mixture weights (> 0; normalized internally).
    """

    def __init__(
        self,
        means: Sequence[Sequence[float]] = ((-2.0, 0.0), (2.0, 0.0), (0.0, 2.5)),
        stds: Sequence[float] = (0.5, 0.8, 0.4),
        weights: Sequence[float] = (0.3, 0.5, 0.2),
    ) -> None:
        means_t = torch.as_tensor(means, dtype=torch.float64)
        stds_t = torch.as_tensor(stds, dtype=torch.float64)
        weights_t = torch.as_tensor(weights, dtype=torch.float64)
        k = means_t.shape[0]
        if means_t.shape != (k, 2) or stds_t.shape != (k,) or weights_t.shape != (k,):
            raise ValueError("means must be (K, 2), stds and weights (K,)")
        validators.positive_values("stds", stds_t)
        validators.positive_values("weights", weights_t)
        self.means = means_t
        self.stds = stds_t
        self.log_weights = torch.log(weights_t / weights_t.sum())
        super().__init__(self.log_mixture)

    def log_mixture(self, x: Tensor) -> Tensor:
        """``log GMM(x)``, ``x`` of shape ``(B, 2)`` -> ``(B,)``."""
        if x.dim() != 2 or x.shape[1] != 2:
            raise ValueError(f"x must have shape (batch, 2), got {tuple(x.shape)}")
        means, stds, logw = (t.to(x) for t in (self.means, self.stds, self.log_weights))
        return torch.logsumexp(_log_normal_2d(x, means, stds) + logw, -1)

    def log_Z(self, c: float) -> float:
        """``log int GMM(x)**beta dx`` at a scalar ``beta``, by grid quadrature."""
        beta = validators.positive_number("beta", c)
        spread = 9.0 * float(self.stds.max()) / math.sqrt(beta)
        step = float(self.stds.min()) / math.sqrt(beta) / 6.0
        axes = []
        for dim in range(2):
            lo = float(self.means[:, dim].min()) - spread
            hi = float(self.means[:, dim].max()) + spread
            axes.append(torch.linspace(lo, hi, int(math.ceil((hi - lo) / step)) + 1, dtype=torch.float64))
        return grid_log_integral(lambda p: beta * self.log_mixture(p), axes)

    def _proposal(self, beta: float) -> tuple[Tensor, Tensor]:
        """Log-weights (K,) and stds (K,) of ``sum_k a_k N_k(x)**beta`` >= ``GMM(x)**beta``.

        For beta >= 1 Jensen gives ``(sum w N)^beta <= sum w N^beta``; for
        beta < 1 subadditivity gives ``<= sum w^beta N^beta``. ``N_k^beta`` is
        an unnormalized normal with std ``sigma_k / sqrt(beta)``.
        """
        log_a = self.log_weights if beta >= 1 else beta * self.log_weights
        # log int N(x; m, s^2)^beta dx in 2-D: (1 - beta) log(2 pi s^2) - log beta
        log_mass = (1 - beta) * torch.log(2 * math.pi * self.stds**2) - math.log(beta)
        return log_a + log_mass, self.stds / math.sqrt(beta)

    def sample(self, n: int, c: float, generator: Optional[torch.Generator] = None) -> Tensor:
        """Exact samples of ``GMM**beta`` at ``beta = c``, ``(n, 2)`` in the default dtype."""
        n = validators.positive_int("n", n)
        beta = validators.positive_number("beta", c)
        log_mass, prop_std = self._proposal(beta)
        log_a = self.log_weights if beta >= 1 else beta * self.log_weights
        probs = torch.softmax(log_mass, 0)
        accepted: list[Tensor] = []
        count = 0
        while count < n:
            m = 2 * (n - count) + 64
            k = torch.multinomial(probs, m, replacement=True, generator=generator)
            eps = torch.randn(m, 2, generator=generator, dtype=torch.float64)
            x = self.means[k] + prop_std[k, None] * eps
            log_target = beta * self.log_mixture(x)
            log_envelope = torch.logsumexp(beta * _log_normal_2d(x, self.means, self.stds) + log_a, -1)
            u = torch.rand(m, generator=generator, dtype=torch.float64)
            keep = torch.log(u) < log_target - log_envelope
            accepted.append(x[keep])
            count += int(keep.sum())
        return torch.cat(accepted)[:n].to(torch.get_default_dtype())


class TwoMoonsPosterior(PowerTarget):
    """Tempered two-moons posterior ``q(theta|beta) = prior(theta) * L(theta)**beta``.

    The two-moons simulator of the simulation-based-inference benchmarks,
    with a smooth angle: for parameters ``theta`` (2-D) the observation is
    ``x = p + (-|theta_1 + theta_2| / sqrt 2, (-theta_1 + theta_2) / sqrt 2)``
    where ``p = (0.25, 0) + r (cos a, sin a)``, ``r ~ N(radius, radius_std^2)``
    and ``a`` von Mises with concentration ``concentration`` (the benchmark's
    uniform half circle has a hard edge a flow cannot fit). The likelihood of
    the observation is the density of ``p`` in the plane,
    ``N(r) * VM(a) / r``. The prior is ``N(0, prior_std^2 I)``. Condition:
    the likelihood power ``beta``; ``d/dbeta log q = log L`` exactly.

    ``log Z(beta)`` is computed by quadrature on a grid refined around the
    likelihood's ring; samples are exact (rejection sampling).

    Parameters
    ----------
    observation : (2,) sequence
    radius, radius_std : float
        Mean and standard deviation of the ring radius.
    concentration : float
        von Mises concentration of the angle (>= 0).
    prior_std : float
        Standard deviation of the isotropic normal prior.
    """

    def __init__(
        self,
        observation: Sequence[float] = (0.0, 0.0),
        radius: float = 0.1,
        radius_std: float = 0.01,
        concentration: float = 2.0,
        prior_std: float = 1.0,
    ) -> None:
        self.observation = torch.as_tensor(observation, dtype=torch.float64)
        if self.observation.shape != (2,):
            raise ValueError(f"observation must have shape (2,), got {tuple(self.observation.shape)}")
        self.radius = validators.positive_number("radius", radius)
        self.radius_std = validators.positive_number("radius_std", radius_std)
        self.concentration = validators.non_negative_number("concentration", concentration)
        self.prior_std = validators.positive_number("prior_std", prior_std)
        # log(2 pi I0(kappa)) computed stably with the exponentially scaled Bessel function
        self._log_vm_norm = (
            math.log(2 * math.pi)
            + math.log(float(torch.special.i0e(torch.tensor(self.concentration))))
            + self.concentration
        )
        super().__init__(self.log_likelihood, self.log_prior)

    @staticmethod
    def _check(theta: Tensor) -> None:
        if theta.dim() != 2 or theta.shape[1] != 2:
            raise ValueError(f"theta must have shape (batch, 2), got {tuple(theta.shape)}")

    def log_prior(self, theta: Tensor) -> Tensor:
        """``log N(theta; 0, prior_std^2 I)``, ``(B, 2)`` -> ``(B,)``."""
        self._check(theta)
        return -0.5 * (theta**2).sum(-1) / self.prior_std**2 - 2 * math.log(self.prior_std) - math.log(2 * math.pi)

    def log_likelihood(self, theta: Tensor) -> Tensor:
        """``log p(observation | theta)``, ``(B, 2)`` -> ``(B,)``."""
        self._check(theta)
        obs = self.observation.to(theta)
        px = obs[0] + (theta[:, 0] + theta[:, 1]).abs() / math.sqrt(2) - 0.25
        py = obs[1] + (theta[:, 0] - theta[:, 1]) / math.sqrt(2)
        r = torch.sqrt(px**2 + py**2).clamp_min(1e-12)
        cos_a = px / r
        log_radial = -0.5 * ((r - self.radius) / self.radius_std) ** 2 - math.log(
            self.radius_std * math.sqrt(2 * math.pi)
        )
        return log_radial + self.concentration * cos_a - self._log_vm_norm - torch.log(r)

    def log_Z(self, c: float) -> float:
        """``log int prior * L**beta dtheta`` at a scalar ``beta``, by grid quadrature."""
        beta = validators.positive_number("beta", c)
        # Rotate to u = (t1 + t2)/sqrt2, v = (t1 - t2)/sqrt2 (Jacobian 1, prior isotropic):
        # the likelihood depends on (|u|, v) only, so integrate u >= 0 and double.
        obs = self.observation
        width = self.radius_std / math.sqrt(beta)
        coarse = min(self.prior_std / 40.0, 0.05)
        fine = min(width / 6.0, coarse)
        reach = self.radius + 12 * width
        u_centre, v_centre = 0.25 - float(obs[0]), -float(obs[1])
        # the integrand is at most prior * max(L)^beta: 8 prior widths beyond the ring suffice
        bound = 8 * self.prior_std + abs(u_centre) + abs(v_centre) + self.radius

        def axis(lo: float, hi: float, centre: float) -> Tensor:
            # uniform coarse spacing outside [a, b], uniform fine spacing inside (the
            # trapezoid rule is spectrally accurate only on uniform stretches)
            points = torch.cat(
                [torch.arange(lo, hi, coarse, dtype=torch.float64), torch.tensor([hi], dtype=torch.float64)]
            )
            a, b = max(lo, centre - reach), min(hi, centre + reach)
            if a >= b:
                return points
            inner = torch.linspace(a, b, int(math.ceil((b - a) / fine)) + 1, dtype=torch.float64)
            return torch.cat([points[points < a], inner, points[points > b]])

        axes = (axis(0.0, bound, u_centre), axis(-bound, bound, v_centre))
        # log q in (u, v): theta = ((u + v)/sqrt2, (u - v)/sqrt2)
        rot = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / math.sqrt(2)
        return math.log(2.0) + grid_log_integral(lambda uv: self.log_q(uv @ rot, beta), axes)

    def sample(self, n: int, c: float, generator: Optional[torch.Generator] = None) -> Tensor:
        """Exact samples at ``beta = c``, ``(n, 2)`` in the default dtype.

        Rejection sampling with the proposal ``L**beta`` (over the plane of
        ``p``, with a random sign of ``u``), which factorizes in polar
        coordinates around the ring's centre: radius density
        ``N(r)**beta * r**(1 - beta)`` and angle density
        ``exp(beta * kappa * cos a)``, each drawn by inverting a CDF tabulated
        on a fine grid. The acceptance probability is ``prior / max prior``.
        """
        n = validators.positive_int("n", n)
        beta = validators.positive_number("beta", c)
        points = GRID_POINTS
        r_grid = torch.linspace(0.0, self.radius + 14 * self.radius_std / math.sqrt(beta), points, dtype=torch.float64)[
            1:
        ]
        log_r = -0.5 * beta * ((r_grid - self.radius) / self.radius_std) ** 2 + (1 - beta) * torch.log(r_grid)
        a_grid = torch.linspace(-math.pi, math.pi, points, dtype=torch.float64)
        log_a = beta * self.concentration * torch.cos(a_grid)
        obs = self.observation
        accepted: list[Tensor] = []
        count = 0
        while count < n:
            m = 2 * (n - count) + 64
            r = inverse_cdf(r_grid, log_r, torch.rand(m, generator=generator, dtype=torch.float64))
            a = inverse_cdf(a_grid, log_a, torch.rand(m, generator=generator, dtype=torch.float64))
            abs_u = r * torch.cos(a) + 0.25 - obs[0]
            sign = 2.0 * torch.randint(0, 2, (m,), generator=generator, dtype=torch.float64) - 1.0
            u, v = sign * abs_u, r * torch.sin(a) - obs[1]
            theta = torch.stack([u + v, u - v], -1) / math.sqrt(2)
            log_accept = -0.5 * (theta**2).sum(-1) / self.prior_std**2
            keep = (abs_u >= 0) & (torch.log(torch.rand(m, generator=generator, dtype=torch.float64)) < log_accept)
            accepted.append(theta[keep])
            count += int(keep.sum())
        return torch.cat(accepted)[:n].to(torch.get_default_dtype())
