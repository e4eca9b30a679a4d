"""TRADE at conditions drawn each step (``transfer.method: trade_continuous``).

Every step draws ``transfer.conditions_per_step`` conditions log-uniformly
from the current range and estimates ``E_c[d/dc log q]`` at each afresh by
SNIS from ``transfer.snis_samples`` model samples; no state between steps.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..density import ConditionalDensity
from ..losses import (
    GradientLoss,
    GradientLossConfig,
    SNISEstimate,
    evaluation_points,
    gradient_loss,
    snis_at_conditions,
)
from ..targets import Target
from .base import ESS_COLUMNS, DrawnConditionsMethod, TransferTerm, ess_logs, register_method

__all__ = ["continuous_gradient_loss", "TradeContinuous"]


def continuous_gradient_loss(
    model: ConditionalDensity,
    target: Target,
    conditions: Tensor,
    snis_samples: int,
    batch: int,
    config: GradientLossConfig,
    reference: float,
    data: Optional[Tensor] = None,
) -> tuple[GradientLoss, SNISEstimate]:
    """One continuous-mode gradient-loss evaluation with fresh SNIS expectations.

    ``batch`` evaluation points are spread evenly over ``conditions`` (M,);
    the expectation at each is estimated from ``snis_samples`` new model samples.
    With ``evaluation_points="samples_c"`` the first of those samples are
    reused as evaluation points, with their energies.

    Returns
    -------
    (GradientLoss, SNISEstimate with fields (M,))
    """
    m = conditions.shape[0]
    per = max(1, batch // m)
    draws = snis_at_conditions(model, target, conditions, max(snis_samples, per))
    estimate = draws.estimate
    c = conditions.repeat_interleave(per)
    dlogq = None
    if config.evaluation_points == "samples_c":
        first = torch.arange(per, device=c.device) + (draws.x.shape[0] // m) * torch.arange(m, device=c.device)[:, None]
        x, dlogq = draws.x[first.flatten()], draws.dlogq_dc[first.flatten()]
        if config.evaluation_noise > 0:
            x, dlogq = x + config.evaluation_noise * torch.randn_like(x), None
    else:
        x = evaluation_points(config.evaluation_points, model, c, reference, data, config.evaluation_noise)
    result = gradient_loss(model, target, x, c, estimate.mean.repeat_interleave(per), config, dlogq_dc=dlogq)
    return result, estimate


@register_method
class TradeContinuous(DrawnConditionsMethod):
    """TRADE gradient loss at conditions drawn each step, with fresh SNIS expectations; logs their ESS."""

    name = "trade_continuous"
    energy_free = True

    def columns(self) -> list[str]:
        return list(ESS_COLUMNS)

    def loss_at(self, conditions: Tensor) -> TransferTerm:
        s, tc = self.setup, self.setup.transfer
        result, estimate = continuous_gradient_loss(
            s.model, self.target, conditions, tc.snis_samples, s.batch_size, tc.gradient, s.reference, s.train_x
        )
        return TransferTerm(result.loss, ess_logs(estimate.ess))
