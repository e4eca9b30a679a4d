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

:func:`energy_free_target` builds either from a model's own density (the
energy-free variant of TRADE). Toy targets with exact ``log Z(c)`` live in
:mod:`trade_md.testsystems`.

Shapes: ``x`` is ``(B, ...)`` (only the batch dimension is assumed);
conditions are a scalar or ``(B,)`` (never ``(B, 1)``) with the vocabulary
of :mod:`trade_md.density` (``condition`` is ``"temperature"`` or
``"beta"``); ``log_q`` and ``dlogq_dc`` are ``(B,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor

from . import units
from .density import ConditionalDensity, ConditionLike, as_condition, check_condition

__all__ = ["Target", "TargetTerms", "BoltzmannTarget", "PowerTarget", "energy_free_target"]


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
    condition : {"temperature", "beta", "kappa"}
        What ``c`` is (see :mod:`trade_md.density`).
    """

    condition: str

    def log_q(self, x: Tensor, c: ConditionLike) -> Tensor:
        """Unnormalized log-density, ``(B,)``, at conditions ``c`` (scalar or ``(B,)``)."""

    def dlogq_dc(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``d/dc log q(x|c)``, ``(B,)``."""

    def evaluate(self, x: Tensor, c: ConditionLike) -> TargetTerms:
        """Both of the above from one evaluation of the expensive part (the energy)."""


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


def energy_free_target(model: ConditionalDensity, reference: float, condition: str) -> Target:
    """Energy-free variant: the model's own density at ``c0`` stands in for ``q``.

    For temperature, ``log q(x|T0) ~ log p_theta(x|T0)`` gives the energy
    ``U(x) = -k_B T0 log p_theta(x|T0)`` (up to a constant, which cancels after
    centring), so the result is a :class:`BoltzmannTarget` and its derivative
    goes through :func:`trade_md.units.dlogq_dT` like every other path. For a
    power ``beta``, ``s(x) = log p_theta(x|beta0) / beta0`` (the whole
    log-density is assumed tempered). The model density is evaluated without
    gradients, at the model's current parameters.

    Parameters
    ----------
    model : ConditionalDensity
    reference : float
        ``c0``: ``T0`` or ``beta0``.
    condition : {"temperature", "beta"}
    """

    if check_condition("condition", condition) not in ("temperature", "beta"):
        raise ValueError(f"the energy-free target needs condition 'temperature' or 'beta' (a known form of the "
                         f"dependence of q on c), got {condition!r}")

    def model_log_density(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model.log_prob(x, as_condition(reference, x))

    if condition == "temperature":
        return BoltzmannTarget(lambda x: -units.KB * reference * model_log_density(x))
    return PowerTarget(lambda x: model_log_density(x) / reference)
