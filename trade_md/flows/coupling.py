"""The mixed coupling layer: a conditioner MLP that emits mixed-domain splines."""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn as nn
from torch import Tensor
from zuko.nn import MLP

from .config import BOUNDED_KINDS
from .transforms import MixedCouplingTransform, MixedSplineTransform

__all__ = ["MixedCoupling", "spline_interval"]


def spline_interval(kind: str, real_bound: float) -> tuple[float, float]:
    """Centre and half-width of the spline interval of one dimension kind.

    Parameters
    ----------
    kind : {"torsion", "angle", "bond", "narrow_torsion", "real"}
    real_bound : float
        Half-width used for ``"real"`` dimensions.

    Returns
    -------
    (offset, half_width) : tuple of float
        Torsions ``(0, pi)``, bounded kinds ``(0.5, 0.5)``, reals ``(0, real_bound)``.
    """
    if kind == "torsion":
        return 0.0, math.pi
    if kind in BOUNDED_KINDS:
        return 0.5, 0.5
    return 0.0, real_bound


def _torsions_first(indices: Sequence[int], kinds: Sequence[str]) -> list[int]:
    return sorted(indices, key=lambda i: (kinds[i] != "torsion", i))


class MixedCoupling(nn.Module):
    """Coupling layer ``x_b -> f(x_b | x_a, context)`` over dimensions of mixed kinds.

    The conditioner, a zuko :class:`~zuko.nn.MLP` with SiLU activations, sees
    ``(cos, sin)`` of the conditioning torsions (never the raw angles), the other
    conditioning dimensions mapped to their canonical interval, and the context.
    It outputs, per transformed dimension, ``3 * bins - 1`` spline parameters,
    plus one rotation per transformed torsion. Its last layer is zero, so the
    layer starts as the identity.

    Parameters
    ----------
    kinds : sequence of str, length D
        Kind of every dimension of the flow.
    transformed : sequence of int
        Indices of the transformed dimensions (non-empty).
    conditioning : sequence of int
        Indices of the dimensions the conditioner sees (may be empty).
    context_dim : int
        Width of the context vector.
    bins : int
        Spline bins.
    hidden : sequence of int
        Hidden widths of the conditioner.
    real_bound : float
        Spline half-width for ``"real"`` dimensions.
    min_slope : float
        Spline parameter bound (see ``FlowConfig.min_slope``).
    """

    def __init__(
        self,
        kinds: Sequence[str],
        transformed: Sequence[int],
        conditioning: Sequence[int],
        context_dim: int,
        bins: int,
        hidden: Sequence[int],
        real_bound: float,
        min_slope: float,
    ) -> None:
        super().__init__()
        idx_b = _torsions_first(transformed, kinds)
        idx_a = _torsions_first(conditioning, kinds)
        self.n_conditioning = len(idx_a)
        passive = sorted(set(range(len(kinds))) - set(idx_a) - set(idx_b))
        self.n_circular_a = sum(kinds[i] == "torsion" for i in idx_a)
        self.n_circular_b = sum(kinds[i] == "torsion" for i in idx_b)
        self.bins = bins
        self.min_slope = min_slope
        self.register_buffer("idx_a", torch.tensor(idx_a + passive, dtype=torch.long))
        self.register_buffer("idx_b", torch.tensor(idx_b, dtype=torch.long))
        interval_a = [spline_interval(kinds[i], real_bound) for i in idx_a[self.n_circular_a :]]
        interval_b = [spline_interval(kinds[i], real_bound) for i in idx_b]
        self.register_buffer("offset_a", torch.tensor([o for o, _ in interval_a]))
        self.register_buffer("inv_half_width_a", torch.tensor([1 / h for _, h in interval_a]))
        self.register_buffer("offset_b", torch.tensor([o for o, _ in interval_b]))
        self.register_buffer("half_width_b", torch.tensor([h for _, h in interval_b]))

        n_in = 2 * self.n_circular_a + (len(idx_a) - self.n_circular_a) + context_dim
        n_out = len(idx_b) * (3 * bins - 1) + self.n_circular_b
        self.hyper = MLP(n_in, n_out, hidden_features=tuple(hidden), activation=nn.SiLU)
        nn.init.zeros_(self.hyper[-1].weight)
        nn.init.zeros_(self.hyper[-1].bias)

    def extra_repr(self) -> str:
        conditioning = self.idx_a[: self.n_conditioning].tolist()
        return f"transformed={self.idx_b.tolist()}, conditioning={conditioning}, bins={self.bins}"

    def features(self, x_a: Tensor, context: Tensor) -> Tensor:
        """Conditioner input.

        Parameters
        ----------
        x_a : Tensor, shape (B, D - F)
            Untransformed dimensions: the conditioning ones first (torsions
            first among them, radians), then passive ones, which are ignored.
        context : Tensor, shape (B, context_dim)

        Returns
        -------
        Tensor, shape (B, 2 * A_torsion + A_other + context_dim)
            For ``A_torsion`` conditioning torsions and ``A_other`` other
            conditioning dimensions.
        """
        torsions = x_a[..., : self.n_circular_a]
        others = (x_a[..., self.n_circular_a : self.n_conditioning] - self.offset_a) * self.inv_half_width_a
        return torch.cat((torch.cos(torsions), torch.sin(torsions), others, context), dim=-1)

    def meta(self, context: Tensor, x_a: Tensor) -> MixedSplineTransform:
        """The spline acting on ``x_b`` given ``x_a`` (B, D - F) and ``context`` (B, context_dim)."""
        phi = self.hyper(self.features(x_a, context))
        n_b = self.idx_b.numel()
        shift = phi[..., : self.n_circular_b]
        params = phi[..., self.n_circular_b :].unflatten(-1, (n_b, 3 * self.bins - 1))
        return MixedSplineTransform(params, shift, self.offset_b, self.half_width_b, slope=self.min_slope)

    def forward(self, context: Tensor) -> MixedCouplingTransform:
        """The layer's data -> latent transform for ``context`` of shape (B, context_dim)."""
        return MixedCouplingTransform(partial(self.meta, context), self.idx_a, self.idx_b)
