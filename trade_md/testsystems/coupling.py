"""A conditional flow over a coupling ``kappa``: the model of :class:`~trade_md.testsystems.Phi4Lattice`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .. import validators
from ..density import ConditionLike, as_condition
from ..flows import ConditionalFlow, ConditionedFlow

__all__ = ["CouplingFlow"]


class CouplingFlow(nn.Module):
    """A :class:`~trade_md.density.ConditionalDensity` with condition ``"kappa"``.

    The flow sees the context ``log(kappa / kappa0)`` and its base widens as
    ``sqrt(kappa / kappa0)``: like a temperature, a larger hopping parameter
    means larger field fluctuations. It is a
    :class:`~trade_md.flows.ConditionedFlow` of condition ``"temperature"``
    addressed by ``kappa``, so that ``kappa`` is validated and named as such
    (``ConditionedFlow`` itself maps any condition other than temperature
    as a power ``beta``, the opposite direction).

    Parameters
    ----------
    flow : ConditionalFlow
        With ``context_dim == 1``.
    reference : float
        ``kappa0``, where the context is 0.
    order : (D,) sequence of int, optional
        The flow's coordinate ``k`` is the field's site ``order[k]`` (a permutation; default: the
        field's own order), e.g. :meth:`~trade_md.testsystems.Phi4Lattice.checkerboard_order`. It is
        a saved buffer, so a checkpoint of a flow with another order does not load.
    """

    condition = "kappa"

    def __init__(self, flow: ConditionalFlow, reference: float, order: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.reference = validators.positive_number("reference", reference)
        self.model = ConditionedFlow(flow, self.reference, condition="temperature")
        dim = flow.dim
        order = torch.arange(dim) if order is None else torch.as_tensor(order, dtype=torch.long).reshape(-1)
        if sorted(order.tolist()) != list(range(dim)):
            raise ValueError(f"order must be a permutation of 0..{dim - 1} (one entry per site), got {order.tolist()}")
        self.register_buffer("order", order)

    def extra_repr(self) -> str:
        return f"condition='kappa', reference={self.reference}"

    def log_prob(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``log p(x | kappa)``, ``(B,)``, for ``x`` ``(B, D)`` and ``kappa`` scalar or ``(B,)``."""
        if not isinstance(x, Tensor) or x.ndim != 2:
            raise ValueError(f"x must be a tensor of shape (batch, {self.model.flow.dim})")
        return self.model.log_prob(x[:, self.order], as_condition(c, x, "kappa"))

    def sample(self, n: int, c: ConditionLike) -> tuple[Tensor, Tensor]:
        """``n`` samples ``(n, D)`` at ``kappa`` (scalar or ``(n,)``) and their log-density ``(n,)``."""
        like = self.model.flow.lower
        dtype = c.dtype if isinstance(c, Tensor) and c.is_floating_point() else like.dtype
        y, log_p = self.model.sample(n, as_condition(c, like.new_empty((n, 0), dtype=dtype), "kappa"))
        return y[:, torch.argsort(self.order)], log_p  # the inverse of the (loaded) order
