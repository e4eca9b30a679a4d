"""NLL-only training (``transfer.method: nll``): the boundary term alone, no transfer term.

The baseline that shows what transfer the architecture gives by itself
(with a :class:`~trade_md.testsystems.ScaledBaseFlow`: a TSF-like baseline).
"""

from __future__ import annotations

from typing import Optional

from .base import TrainingMethod, TransferTerm, register_method

__all__ = ["NLLOnly"]


@register_method
class NLLOnly(TrainingMethod):
    """No transfer term: no curriculum, no target needed."""

    name = "nll"
    transfers = False
    needs_target = False

    def loss(self, step: int, low: float, high: float) -> Optional[TransferTerm]:
        """Always None: the method trains the boundary term only."""
        return None
