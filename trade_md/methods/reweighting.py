"""The reweighting baseline (``transfer.method: reweighting``).

NLL at conditions ``c`` drawn each step, of model samples at ``c0``
importance-weighted by ``q(x|c) / p_theta(x|c0)``
(:func:`~trade_md.losses.reweighted_nll`); logs the ESS of the weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..losses import reweighted_nll
from .base import ESS_COLUMNS, DrawnConditionsMethod, TransferTerm, ess_logs, register_method

__all__ = ["Reweighting"]


@register_method
class Reweighting(DrawnConditionsMethod):
    """Reweighted NLL of ``transfer.snis_samples`` model samples at ``c0``."""

    name = "reweighting"

    def columns(self) -> list[str]:
        return list(ESS_COLUMNS)

    def loss_at(self, conditions: Tensor) -> TransferTerm:
        s = self.setup
        with torch.no_grad():
            proposal, proposal_log_p = s.model.sample(s.transfer.snis_samples, s.reference)
        result = reweighted_nll(s.model, self.target, proposal, proposal_log_p, conditions)
        return TransferTerm(result.loss, ess_logs(result.ess))
