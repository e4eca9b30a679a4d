"""Backward KL over the range (``transfer.method: reverse_kl``): data-free, needs forces."""

from __future__ import annotations

from torch import Tensor

from ..losses import reverse_kl
from .base import DrawnConditionsMethod, TransferTerm, register_method

__all__ = ["ReverseKL"]


@register_method
class ReverseKL(DrawnConditionsMethod):
    """Backward KL of ``batch_size // conditions_per_step`` model samples at each condition drawn."""

    name = "reverse_kl"

    def loss_at(self, conditions: Tensor) -> TransferTerm:
        s = self.setup
        per = max(1, s.batch_size // s.transfer.conditions_per_step)
        return TransferTerm(reverse_kl(s.model, self.target, per * conditions.shape[0],
                                       conditions.repeat_interleave(per)), {})
