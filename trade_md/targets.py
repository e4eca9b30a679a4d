"""Unnormalized target densities ``q(x|c)`` and their condition derivatives.

A *target* is the unnormalized density ``q(x|c)`` that TRADE transfers along
an external condition ``c``. Two families are implemented, each with its
formula for ``log q`` and ``d/dc log q`` written exactly once:

``BoltzmannTarget`` (condition: temperature ``T`` in K)
    ``log q(x|T) = -U(x) / (k_B T)`` and ``d/dT log q = U / (k_B T**2)``, the
    latter computed by :func:`trade_md.units.dlogq_dT` (the one implementation
    of the temperature derivative in the package).
``PowerTarget`` (condition: power ``beta`` > 0)
    ``log q(x|beta) = b(x) + beta * s(x)`` and ``d/dbeta log q = s(x)`` (no
    ``1/beta``: the research code's tempered posterior missed that this is the
    derivative w.r.t. ``beta`` itself).

Toy targets with exact (quadrature) ``log Z(c)`` and exact samplers, used to
prove transfer: :class:`MultiWell`, :class:`GaussianMixturePower`,
:class:`TwoMoonsPosterior`.

Shapes: ``x`` is ``(B, ...)`` (only the batch dimension is assumed);
conditions are a scalar or ``(B,)`` (never ``(B, 1)``); ``log_q`` and
``dlogq_dc`` are ``(B,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
from scipy import integrate
from torch import Tensor

from . import units

__all__ = [
    "Target",
    "TargetTerms",
    "BoltzmannTarget",
    "PowerTarget",
    "MultiWell",
    "GaussianMixturePower",
    "TwoMoonsPosterior",
    "as_condition",
    "CONDITIONS",
]

#: Condition kinds a target can have: temperature in K, or a positive power beta.
CONDITIONS: tuple[str, ...] = ("temperature", "beta")

ConditionLike = Union[float, Tensor]


@dataclass(frozen=True)
class TargetTerms:
    """``log q`` and ``d/dc log q`` of a batch, computed from one energy evaluation.

    Attributes
    ----------
    log_q : (B,) tensor
        Unnormalized log-density (dimensionless); ``-inf`` where the energy is
        not finite.
    dlogq_dc : (B,) tensor
        Derivative w.r.t. the condition (units 1/[c]); ``+inf`` where the
        energy is not finite (losses mask those samples).
    """

    log_q: Tensor
    dlogq_dc: Tensor


@runtime_checkable
class Target(Protocol):
    """What the losses need from a target.

    Attributes
    ----------
    condition : str
        ``"temperature"`` (K) or ``"beta"``.
    """

    condition: str

    def log_q(self, x: Tensor, c: ConditionLike) -> Tensor:
        """Unnormalized log-density, ``(B,)``, at conditions ``c`` (scalar or ``(B,)``)."""

    def dlogq_dc(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``d/dc log q(x|c)``, ``(B,)``."""

    def evaluate(self, x: Tensor, c: ConditionLike) -> TargetTerms:
        """Both of the above from one evaluation of the expensive part (the energy)."""


def as_condition(c: ConditionLike, x: Tensor, name: str = "condition") -> Tensor:
    """Return condition(s) ``c`` as a ``(B,)`` tensor on ``x``'s device and dtype.

    Parameters
    ----------
    c : float or 0-d or (B,) tensor
        Condition value(s); must be finite and > 0.
    x : (B, ...) tensor
        The batch the conditions belong to.
    name : str
        Name used in error messages.

    Raises
    ------
    ValueError
        For any other shape (in particular ``(B, 1)``, which would broadcast a
        ``(B,)`` energy into ``(B, B)``) or a value that is not finite and > 0.
    """
    if x.dim() < 1:
        raise ValueError(f"x must have a batch dimension, got shape {tuple(x.shape)}")
    batch = x.shape[0]
    dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
    c = torch.as_tensor(c, dtype=dtype, device=x.device)
    if c.dim() == 0:
        c = c.expand(batch)
    elif tuple(c.shape) != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {tuple(c.shape)}")
    bad = ~torch.isfinite(c.detach()) | (c.detach() <= 0)
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite and > 0, got {c.detach()[bad][:5].tolist()}")
    return c


def _check_batch_values(values: Tensor, x: Tensor, what: str) -> Tensor:
    if not isinstance(values, Tensor) or tuple(values.shape) != (x.shape[0],):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{what} must return a tensor of shape ({x.shape[0]},), got {shape}")
    return values


class BoltzmannTarget:
    """Boltzmann density ``q(x|T) = exp(-U(x) / (k_B T))``, condition ``T`` in K.

    Parameters
    ----------
    energy_fn : callable
        Maps ``x`` of shape ``(B, ...)`` to potential energies ``(B,)`` in
        kJ/mol (e.g. ``OpenMMEnergy.energy``). It must be differentiable in
        ``x`` for the backward-KL losses. NaN energies are treated as ``+inf``
        (a broken structure has zero density).
    """

    condition = "temperature"

    def __init__(self, energy_fn: Callable[[Tensor], Tensor]) -> None:
        if not callable(energy_fn):
            raise TypeError(f"energy_fn must be callable, got {type(energy_fn).__name__}")
        self.energy_fn = energy_fn

    def energy(self, x: Tensor) -> Tensor:
        """Potential energies ``(B,)`` in kJ/mol, NaN replaced by ``+inf``."""
        u = _check_batch_values(self.energy_fn(x), x, "energy_fn")
        return torch.where(torch.isnan(u), torch.full_like(u, math.inf), u)

    def evaluate(self, x: Tensor, c: ConditionLike) -> TargetTerms:
        """``log q = -U/(k_B T)`` and ``d/dT log q = U/(k_B T^2)`` (1/K), both ``(B,)``."""
        temperature = as_condition(c, x, "temperature")
        u = self.energy(x)
        return TargetTerms(
            log_q=-units.reduced_energy(u, temperature),
            dlogq_dc=units.dlogq_dT(u, temperature),
        )

    def log_q(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``-U(x) / (k_B T)``, shape ``(B,)``."""
        return self.evaluate(x, c).log_q

    def dlogq_dc(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``U(x) / (k_B T^2)`` in 1/K, shape ``(B,)``."""
        return self.evaluate(x, c).dlogq_dc


class PowerTarget:
    """Tempered density ``q(x|beta) = exp(b(x) + beta * s(x))``, condition ``beta`` > 0.

    Parameters
    ----------
    log_tempered : callable
        ``s(x)``, maps ``(B, ...)`` to ``(B,)``: the log-density raised to the
        power ``beta`` (a mixture's log-density, a log-likelihood).
    log_untempered : callable, optional
        ``b(x)``, maps ``(B, ...)`` to ``(B,)``: the part that is not tempered
        (a log-prior). Zero if omitted.
    """

    condition = "beta"

    def __init__(
        self,
        log_tempered: Callable[[Tensor], Tensor],
        log_untempered: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> None:
        self.log_tempered = log_tempered
        self.log_untempered = log_untempered

    def evaluate(self, x: Tensor, c: ConditionLike) -> TargetTerms:
        """``log q = b + beta * s`` and ``d/dbeta log q = s``, both ``(B,)``."""
        beta = as_condition(c, x, "beta")
        s = _check_batch_values(self.log_tempered(x), x, "log_tempered")
        s = torch.where(torch.isnan(s), torch.full_like(s, -math.inf), s)
        log_q = beta * s
        if self.log_untempered is not None:
            log_q = log_q + _check_batch_values(self.log_untempered(x), x, "log_untempered")
        return TargetTerms(log_q=log_q, dlogq_dc=s)

    def log_q(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``b(x) + beta * s(x)``, shape ``(B,)``."""
        return self.evaluate(x, c).log_q

    def dlogq_dc(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``s(x)``, shape ``(B,)``."""
        return self.evaluate(x, c).dlogq_dc


# --------------------------------------------------------------------------- toys


def _scalar_condition(c: float, name: str) -> float:
    value = float(c)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {c!r}")
    return value


def _check_count(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"number of samples must be a positive integer, got {n!r}")
    return int(n)


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

    #: Points of the 1-D grid the exact sampler inverts the CDF on.
    GRID_POINTS = 2**17 + 1

    def __init__(self, dim: int) -> None:
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
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
        temperature = _scalar_condition(c, "temperature")
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
        n = _check_count(n)
        temperature = _scalar_condition(c, "temperature")
        half = self._half_width(temperature)
        grid = torch.linspace(-half, half, self.GRID_POINTS, dtype=torch.float64)
        u = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        x = _inverse_cdf(grid, -((grid**2 - 2.0) ** 2) / temperature, u)
        return x.to(torch.get_default_dtype())


def _inverse_cdf(grid: Tensor, log_density: Tensor, u: Tensor) -> Tensor:
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


def _log_normal_2d(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Log-density of isotropic 2-D normals; x (B, 2), mean (K, 2), std (K,) -> (B, K)."""
    sq = ((x[:, None, :] - mean[None]) ** 2).sum(-1)
    return -0.5 * sq / std**2 - 2 * torch.log(std) - math.log(2 * math.pi)


def _grid_log_integral(log_density: Callable[[Tensor], Tensor], axes: Sequence[Tensor], chunk: int = 256) -> float:
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
        if bool((stds_t <= 0).any()) or bool((weights_t <= 0).any()):
            raise ValueError("stds and weights must be > 0")
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
        beta = _scalar_condition(c, "beta")
        spread = 9.0 * float(self.stds.max()) / math.sqrt(beta)
        step = float(self.stds.min()) / math.sqrt(beta) / 6.0
        axes = []
        for dim in range(2):
            lo = float(self.means[:, dim].min()) - spread
            hi = float(self.means[:, dim].max()) + spread
            axes.append(torch.linspace(lo, hi, int(math.ceil((hi - lo) / step)) + 1, dtype=torch.float64))
        return _grid_log_integral(lambda p: beta * self.log_mixture(p), axes)

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
        n = _check_count(n)
        beta = _scalar_condition(c, "beta")
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
        if not (radius > 0 and radius_std > 0 and concentration >= 0 and prior_std > 0):
            raise ValueError("radius, radius_std and prior_std must be > 0 and concentration >= 0")
        self.observation = torch.as_tensor(observation, dtype=torch.float64)
        if self.observation.shape != (2,):
            raise ValueError(f"observation must have shape (2,), got {tuple(self.observation.shape)}")
        self.radius = float(radius)
        self.radius_std = float(radius_std)
        self.concentration = float(concentration)
        self.prior_std = float(prior_std)
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
        beta = _scalar_condition(c, "beta")
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
        return math.log(2.0) + _grid_log_integral(lambda uv: self.log_q(uv @ rot, beta), axes)

    def sample(self, n: int, c: float, generator: Optional[torch.Generator] = None) -> Tensor:
        """Exact samples at ``beta = c``, ``(n, 2)`` in the default dtype.

        Rejection sampling with the proposal ``L**beta`` (over the plane of
        ``p``, with a random sign of ``u``), which factorizes in polar
        coordinates around the ring's centre: radius density
        ``N(r)**beta * r**(1 - beta)`` and angle density
        ``exp(beta * kappa * cos a)``, each drawn by inverting a CDF tabulated
        on a fine grid. The acceptance probability is ``prior / max prior``.
        """
        n = _check_count(n)
        beta = _scalar_condition(c, "beta")
        points = MultiWell.GRID_POINTS
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
            r = _inverse_cdf(r_grid, log_r, torch.rand(m, generator=generator, dtype=torch.float64))
            a = _inverse_cdf(a_grid, log_a, torch.rand(m, generator=generator, dtype=torch.float64))
            abs_u = r * torch.cos(a) + 0.25 - obs[0]
            sign = 2.0 * torch.randint(0, 2, (m,), generator=generator, dtype=torch.float64) - 1.0
            u, v = sign * abs_u, r * torch.sin(a) - obs[1]
            theta = torch.stack([u + v, u - v], -1) / math.sqrt(2)
            log_accept = -0.5 * (theta**2).sum(-1) / self.prior_std**2
            keep = (abs_u >= 0) & (torch.log(torch.rand(m, generator=generator, dtype=torch.float64)) < log_accept)
            accepted.append(theta[keep])
            count += int(keep.sum())
        return torch.cat(accepted)[:n].to(torch.get_default_dtype())
