"""The scaled-base baseline: a flow whose only temperature dependence is the width of its base."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..density import ConditionLike, model_like
from ..flows import ConditionedFlow

__all__ = ["ScaledBaseFlow"]


class ScaledBaseFlow(nn.Module):
    """TSF-like model: a :class:`~trade_md.flows.ConditionedFlow` whose transform is frozen at ``c0``.

    ``log p(x|c) = log N_c(z) + log|dz/dx|`` with ``z = f(x; c0)``: only the
    base width (``sqrt(T_eff / T0)``) depends on the condition, as in
    temperature-steerable flows. A :class:`~trade_md.density.ConditionalDensity`
    with the condition of the wrapped flow. Meant for ``"real"`` (toy)
    dimensions: the domain masking of :meth:`ConditionalFlow.log_prob` is not
    applied.

    Parameters
    ----------
    model : ConditionedFlow
    """

    def __init__(self, model: ConditionedFlow) -> None:
        super().__init__()
        self.model = model

    @property
    def condition(self) -> str:
        """The wrapped flow's condition, ``"temperature"`` or ``"beta"``."""
        return self.model.condition

    def _log_t(self, c: ConditionLike, batch: int, like: Tensor) -> Tensor:
        c = c.to(like.dtype) if isinstance(c, Tensor) else c
        return self.model.context(c, batch).to(like)[:, 0]

    def log_prob(self, x: Tensor, c: ConditionLike) -> Tensor:
        """Log-density of ``x`` (B, D) at condition(s) ``c`` (scalar or (B,)), (B,)."""
        log_t = self._log_t(c, x.shape[0], x)
        z, ladj = self.model.flow.forward(x, torch.zeros_like(log_t)[:, None])
        return self.model.flow.base.log_prob(z, log_t) + ladj

    def sample(self, n: int, c: ConditionLike) -> tuple[Tensor, Tensor]:
        """``n`` samples at condition(s) ``c`` with their log-density, ``(n, D)`` and ``(n,)``."""
        log_t = self._log_t(c, n, model_like(self.model))
        z = self.model.flow.base.rsample(log_t)
        x, ladj = self.model.flow.inverse(z, torch.zeros_like(log_t)[:, None])
        return x, self.model.flow.base.log_prob(z, log_t) - ladj
