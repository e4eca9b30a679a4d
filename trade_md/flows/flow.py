"""Temperature-conditioned coupling flows over mixed circular/bounded/real domains."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor
from zuko.transforms import ComposedTransform

from .base import MixedBase
from .config import KINDS, FlowConfig, resolve_schedule
from .coupling import MixedCoupling

__all__ = ["ConditionalFlow", "ConditionedFlow"]

_DOMAINS = {"torsion": (-math.pi, math.pi), "angle": (0.0, 1.0), "bond": (0.0, 1.0), "real": (-math.inf, math.inf)}


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
        ``"angle"`` or ``"bond"`` (``[0, 1]``), ``"real"`` (``R``).
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
    ``inverse`` maps data to latent, ``forward`` latent to data; both return
    the log-determinant of their own direction, so one is minus the other.
    """

    def __init__(self, kinds: Sequence[str], context_dim: int = 1, config: FlowConfig | None = None) -> None:
        super().__init__()
        if isinstance(kinds, str) or not len(kinds):
            raise ValueError(f"kinds must be a non-empty sequence of kind names, got {kinds!r}")
        unknown = sorted({k for k in kinds if k not in KINDS})
        if unknown:
            raise ValueError(f"unknown dimension kind(s) {unknown}; valid kinds are {KINDS}")
        if int(context_dim) != context_dim or context_dim < 1:
            raise ValueError(f"context_dim must be an integer >= 1 (column 0 is log(T/T0)), got {context_dim!r}")
        self.kinds = tuple(kinds)
        self.dim = len(self.kinds)
        self.context_dim = int(context_dim)
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
        self.register_buffer("center", torch.tensor([0.5 if k in ("angle", "bond") else 0.0 for k in self.kinds]))

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
        """The data -> latent transform for ``context`` (B, context_dim); ``.inv`` is latent -> data."""
        return ComposedTransform(*(layer(context) for layer in self.layers))

    def inverse(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Map data to latent.

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

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Map latent to data.

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
        x, ladj = self.forward(z, context)
        return x, self.base.log_prob(z, context[:, 0]) - ladj


class ConditionedFlow(nn.Module):
    """A :class:`ConditionalFlow` addressed by a physical condition instead of a context.

    Parameters
    ----------
    flow : ConditionalFlow
        With ``context_dim == 1``.
    reference : float
        ``T0`` in K for ``kind="temperature"``; ``beta0`` for ``kind="power"``.
    kind : {"temperature", "power"}
        ``"temperature"``: the condition is a temperature ``T``, context
        ``log(T / T0)``. ``"power"``: the condition is an inverse-temperature-like
        power ``beta`` (a tempered density ``q**beta``), effective
        ``T / T0 = beta0 / beta``, context ``log(beta0 / beta)``.
    """

    KINDS = ("temperature", "power")

    def __init__(self, flow: ConditionalFlow, reference: float, kind: str = "temperature") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        if not isinstance(flow, ConditionalFlow) or flow.context_dim != 1:
            raise ValueError("ConditionedFlow needs a ConditionalFlow with context_dim == 1")
        reference = float(reference)
        if not (math.isfinite(reference) and reference > 0):
            raise ValueError(f"reference must be finite and > 0, got {reference!r}")
        self.flow = flow
        self.reference = reference
        self.kind = kind

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, reference={self.reference}"

    def context(self, c: float | Tensor, batch: int | None = None) -> Tensor:
        """Context for condition values.

        Parameters
        ----------
        c : float or Tensor, shape () or (B,)
            Temperatures in K (``kind="temperature"``) or powers beta
            (``kind="power"``), finite and > 0. A tensor keeps its autograd graph
            and floating dtype; a float takes the flow's dtype.
        batch : int, optional
            Broadcast a scalar ``c`` to this batch size (default 1); a (B,)
            ``c`` must then have ``B == batch``.

        Returns
        -------
        Tensor, shape (B, 1)
            ``log(T_eff / T0)``.
        """
        like = self.flow.lower
        if not isinstance(c, Tensor):
            c = torch.as_tensor(c, dtype=like.dtype, device=like.device)
        elif not c.is_floating_point():
            c = c.to(like.dtype)
        if c.ndim > 1 or (c.ndim == 1 and batch is not None and c.shape[0] != batch):
            expected = "() or (batch,)" if batch is None else f"() or ({batch},)"
            raise ValueError(f"{self.kind} must have shape {expected}, got {tuple(c.shape)}")
        bad = ~torch.isfinite(c.detach()) | (c.detach() <= 0)
        if bool(bad.any()):
            raise ValueError(f"{self.kind} must be finite and > 0, got {c.detach()[bad].flatten()[:5].tolist()}")
        if c.ndim == 0:
            c = c.expand(1 if batch is None else batch)
        ratio = c / self.reference if self.kind == "temperature" else self.reference / c
        return torch.log(ratio)[:, None]

    def log_prob(self, x: Tensor, c: float | Tensor) -> Tensor:
        """Log-density of ``x`` (B, D) at condition(s) ``c`` (scalar or (B,)); returns (B,)."""
        if not isinstance(x, Tensor) or x.ndim != 2:
            raise ValueError(f"x must be a tensor of shape (batch, {self.flow.dim})")
        return self.flow.log_prob(x, self.context(c, batch=x.shape[0]).to(x.dtype))

    def sample(self, n: int, c: float | Tensor) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples at condition(s) ``c`` (scalar or (n,)).

        Returns
        -------
        x : Tensor, shape (n, D)
        log_prob : Tensor, shape (n,)
        """
        return self.flow.sample(n, self.context(c, batch=n).to(self.flow.lower.dtype))
