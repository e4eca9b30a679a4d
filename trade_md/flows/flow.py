"""Temperature-conditioned coupling flows over mixed circular/bounded/real domains."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor
from zuko.transforms import ComposedTransform

from .. import validators
from ..density import ConditionLike, as_condition, check_condition
from .base import MixedBase
from .config import BOUNDED_KINDS, KINDS, FlowConfig, resolve_schedule
from .coupling import MixedCoupling

__all__ = ["ConditionalFlow", "ConditionedFlow"]

_DOMAINS = {"torsion": (-math.pi, math.pi), "real": (-math.inf, math.inf), **{k: (0.0, 1.0) for k in BOUNDED_KINDS}}


class ConditionalFlow(nn.Module):
    """Normalizing flow ``p(x | context)`` on a product of circles, intervals and lines.

    Coupling layers (:class:`~trade_md.flows.coupling.MixedCoupling`) follow
    ``config.schedule``; the base (:class:`~trade_md.flows.base.MixedBase`)
    widens with temperature. ``context[:, 0]`` is ``log(T / T0)``; further
    context columns are passed to the conditioners only.

    Parameters
    ----------
    kinds : sequence of str, length D
        Kind of every dimension: ``"torsion"`` (radians, ``[-pi, pi]``),
        ``"angle"``, ``"bond"`` or ``"narrow_torsion"`` (``[0, 1]``), ``"real"`` (``R``).
    context_dim : int
        Width of the context, at least 1.
    config : FlowConfig, optional
        Architecture; defaults to ``FlowConfig()``.

    Attributes
    ----------
    kinds : tuple of str
    dim : int
        ``D``.
    context_dim : int
    config : FlowConfig
    layers : nn.ModuleList of MixedCoupling
        In the data -> latent order.
    base : MixedBase

    Notes
    -----
    Directions: ``forward`` maps data to latent (the density direction, as
    :meth:`transform`, zuko's transforms and the internal-coordinate
    transform do), ``inverse`` latent to data (the sampling direction); both
    return the log-determinant of their own direction, so one is minus the
    other.

    This is the context-level building block; :class:`ConditionedFlow` turns
    it into a :class:`~trade_md.density.ConditionalDensity` of a physical
    condition.
    """

    def __init__(self, kinds: Sequence[str], context_dim: int = 1, config: FlowConfig | None = None) -> None:
        super().__init__()
        if isinstance(kinds, str) or not len(kinds):
            raise ValueError(f"kinds must be a non-empty sequence of kind names, got {kinds!r}")
        unknown = sorted({k for k in kinds if k not in KINDS})
        if unknown:
            raise ValueError(f"unknown dimension kind(s) {unknown}; valid kinds are {KINDS}")
        self.kinds = tuple(kinds)
        self.dim = len(self.kinds)
        self.context_dim = validators.positive_int("context_dim (column 0 is log(T/T0))", context_dim)
        self.config = FlowConfig() if config is None else config
        cfg = self.config
        self.layers = nn.ModuleList(
            MixedCoupling(
                self.kinds,
                spec.transformed,
                spec.conditioning,
                self.context_dim,
                bins=cfg.bins,
                hidden=cfg.hidden,
                real_bound=cfg.real_bound,
                min_slope=cfg.min_slope,
            )
            for spec in resolve_schedule(cfg, self.kinds)
        )
        self.base = MixedBase(self.kinds, bounded_sigma=cfg.bounded_sigma, real_sigma=cfg.real_sigma)
        lower, upper = zip(*(_DOMAINS[k] for k in self.kinds))
        self.register_buffer("lower", torch.tensor(lower))
        self.register_buffer("upper", torch.tensor(upper))
        self.register_buffer("center", torch.tensor([0.5 if k in BOUNDED_KINDS else 0.0 for k in self.kinds]))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"

    def _check(self, name: str, x: Tensor, context: Tensor) -> None:
        if not isinstance(x, Tensor) or not isinstance(context, Tensor):
            raise TypeError(f"{name} and context must be torch tensors")
        if x.dtype != self.lower.dtype or context.dtype != self.lower.dtype:
            raise ValueError(
                f"{name} ({x.dtype}) and context ({context.dtype}) must have the flow's dtype "
                f"{self.lower.dtype}; convert them or the flow (flow.to(dtype))"
            )
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        if context.shape != (x.shape[0], self.context_dim):
            raise ValueError(
                f"context must have shape (batch, context_dim) = ({x.shape[0]}, {self.context_dim}), "
                f"got {tuple(context.shape)}"
            )

    def transform(self, context: Tensor) -> ComposedTransform:
        """The zuko transform data -> latent for ``context`` (B, context_dim), as :meth:`forward`.

        Its ``.inv`` maps latent -> data, as :meth:`inverse`.
        """
        return ComposedTransform(*(layer(context) for layer in self.layers))

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Map data to latent (the density direction).

        Parameters
        ----------
        x : Tensor, shape (B, D)
            Data, inside the domain.
        context : Tensor, shape (B, context_dim)

        Returns
        -------
        z : Tensor, shape (B, D)
        ladj : Tensor, shape (B,)
            ``log|det dz/dx|``.
        """
        self._check("x", x, context)
        return self.transform(context).call_and_ladj(x)

    def inverse(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Map latent to data (the sampling direction).

        Parameters
        ----------
        z : Tensor, shape (B, D)
        context : Tensor, shape (B, context_dim)

        Returns
        -------
        x : Tensor, shape (B, D)
            Clamped onto the domain (guards against rounding at the interval ends).
        ladj : Tensor, shape (B,)
            ``log|det dx/dz|``.
        """
        self._check("z", z, context)
        x, ladj = self.transform(context).inv.call_and_ladj(z)
        return torch.clamp(x, self.lower, self.upper), ladj

    def log_prob(self, x: Tensor, context: Tensor) -> Tensor:
        """Log-density ``log p(x | context)``.

        Parameters
        ----------
        x : Tensor, shape (B, D)
        context : Tensor, shape (B, context_dim)

        Returns
        -------
        Tensor, shape (B,)
            ``-inf`` for rows outside the domain (or non-finite); those rows
            contribute zero gradients.
        """
        self._check("x", x, context)
        inside = (torch.isfinite(x) & (x >= self.lower) & (x <= self.upper)).all(dim=-1)
        x = torch.where(inside[:, None], x, self.center)
        z, ladj = self.transform(context).call_and_ladj(x)
        log_p = self.base.log_prob(z, context[:, 0]) + ladj
        return log_p.masked_fill(~inside, -math.inf)

    def sample(self, n: int, context: Tensor) -> tuple[Tensor, Tensor]:
        """Draw reparametrized samples with their log-density.

        Parameters
        ----------
        n : int
            Number of samples.
        context : Tensor, shape (n, context_dim)
            One context per sample; sets dtype and device.

        Returns
        -------
        x : Tensor, shape (n, D)
            Differentiable w.r.t. the parameters and ``context``.
        log_prob : Tensor, shape (n,)
            ``log p(x | context)``, equal to :meth:`log_prob` of ``x``.
        """
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if not isinstance(context, Tensor) or context.shape != (n, self.context_dim):
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"context must have shape (n, context_dim) = ({n}, {self.context_dim}), got {shape}")
        if context.dtype != self.lower.dtype:
            raise ValueError(f"context ({context.dtype}) must have the flow's dtype {self.lower.dtype}")
        z = self.base.rsample(context[:, 0])
        x, ladj = self.inverse(z, context)
        return x, self.base.log_prob(z, context[:, 0]) - ladj


class ConditionedFlow(nn.Module):
    """A :class:`ConditionalFlow` addressed by a physical condition: a
    :class:`~trade_md.density.ConditionalDensity` over the flow's dimensions.

    Parameters
    ----------
    flow : ConditionalFlow
        With ``context_dim == 1``.
    reference : float
        ``c0``: ``T0`` for ``condition="temperature"``, ``beta0`` for ``condition="beta"``.
    condition : {"temperature", "beta"}
        ``"temperature"``: the condition is a temperature ``T``, context
        ``log(T / T0)``. ``"beta"``: the condition is the power ``beta`` of a
        tempered density ``q**beta``, effective ``T / T0 = beta0 / beta``,
        context ``log(beta0 / beta)``.
    """

    def __init__(self, flow: ConditionalFlow, reference: float, condition: str = "temperature") -> None:
        super().__init__()
        check_condition("condition", condition)
        if condition not in ("temperature", "beta"):
            # its base widens with T and narrows with beta; other conditions (kappa) have their own flows
            raise ValueError(f"ConditionedFlow supports condition 'temperature' or 'beta', not {condition!r} "
                             "(for kappa use trade_md.testsystems.CouplingFlow)")
        if not isinstance(flow, ConditionalFlow) or flow.context_dim != 1:
            raise ValueError("ConditionedFlow needs a ConditionalFlow with context_dim == 1")
        self.flow = flow
        self.reference = validators.positive_number("reference", reference)
        self.condition = condition

    def extra_repr(self) -> str:
        return f"condition={self.condition!r}, reference={self.reference}"

    def context(self, c: ConditionLike, batch: int) -> Tensor:
        """Context for condition values.

        Parameters
        ----------
        c : float or Tensor, shape () or (batch,)
            Temperatures (``condition="temperature"``) or powers beta
            (``condition="beta"``), finite and > 0. A tensor keeps its
            autograd graph and floating dtype; a float takes the flow's dtype.
        batch : int
            Batch size; a scalar ``c`` is broadcast to it.

        Returns
        -------
        Tensor, shape (batch, 1)
            ``log(T_eff / T0)``.
        """
        like = self.flow.lower
        dtype = c.dtype if isinstance(c, Tensor) and c.is_floating_point() else like.dtype
        c = as_condition(c, like.new_empty((batch, 0), dtype=dtype), self.condition)
        ratio = c / self.reference if self.condition == "temperature" else self.reference / c
        return torch.log(ratio)[:, None]

    def log_prob(self, x: Tensor, c: ConditionLike) -> Tensor:
        """Log-density of ``x`` (B, D) at condition(s) ``c`` (scalar or (B,)); returns (B,)."""
        if not isinstance(x, Tensor) or x.ndim != 2:
            raise ValueError(f"x must be a tensor of shape (batch, {self.flow.dim})")
        return self.flow.log_prob(x, self.context(c, x.shape[0]).to(x.dtype))

    def sample(self, n: int, c: ConditionLike) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples at condition(s) ``c`` (scalar or (n,)).

        Returns
        -------
        x : Tensor, shape (n, D)
        log_prob : Tensor, shape (n,)
        """
        return self.flow.sample(n, self.context(c, n).to(self.flow.lower.dtype))
