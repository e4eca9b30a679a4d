"""Mixed-domain spline and coupling transforms built on zuko's transforms.

Direction convention (zuko's): a transform maps data ``x`` to latent ``z``;
``call_and_ladj(x)`` returns ``(z, log|det dz/dx|)``. Inverses come from
``.inv`` and return ``(x, log|det dx/dz|)`` from one conditioner evaluation.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import LongTensor, Tensor
from torch.distributions import Transform, constraints
from zuko.transforms import CouplingTransform, MonotonicRQSTransform

__all__ = ["wrap_angle", "UnitRQSTransform", "MixedSplineTransform", "MixedCouplingTransform"]


def wrap_angle(x: Tensor) -> Tensor:
    """Map angles in radians onto ``[-pi, pi)`` (``pi`` may appear by rounding)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class UnitRQSTransform(MonotonicRQSTransform):
    """Monotonic rational-quadratic spline on ``[-1, 1]``, a zuko
    :class:`~zuko.transforms.MonotonicRQSTransform` with a cheaper parametrization.

    As in zuko: ``K`` bins, end derivatives 1, identity outside ``[-1, 1]``;
    the knots are stored in zuko's attributes and the inverse is zuko's. The
    forward pass is built with few autograd nodes, because the TRADE loss
    differentiates it twice and its cost grows with their number:

    - the unconstrained parameters are bounded by ``b * tanh(p / b)``
      (``b = -log(slope) / 2`` for widths and heights, ``-log(slope)`` for
      derivatives; zuko uses the soft-clip ``p / (1 + |p / b|)``, whose
      double backward is several times dearer), then exponentiated, so every
      bin width, height and knot derivative is bounded away from 0;
    - widths and heights are normalized together, without ``softmax``
      (slow on CPU for a last dimension of a few bins);
    - :meth:`call_and_ladj` gathers all knot values in one ``gather`` and
      evaluates the spline with two divisions.

    Parameters
    ----------
    params : Tensor, shape (*, 3K - 1)
        Unconstrained bin widths (K), bin heights (K) and interior knot
        derivatives (K - 1), in this order.
    slope : float
        Sets the bounds above (zuko's ``slope``).
    """

    def __init__(self, params: Tensor, slope: float) -> None:
        Transform.__init__(self)
        k = (params.shape[-1] + 1) // 3
        bound = -math.log(slope)
        scale = torch.full((3 * k - 1,), bound, dtype=params.dtype, device=params.device)
        scale[: 2 * k] = bound / 2
        sizes = torch.exp(scale * torch.tanh(params / scale))
        widths_heights = sizes[..., : 2 * k].unflatten(-1, (2, k))
        cumulative = torch.cumsum(widths_heights, dim=-1) * (2 / widths_heights.sum(dim=-1, keepdim=True))
        derivatives = F.pad(sizes[..., 2 * k :], (1, 1), value=1.0)
        # (*, 3, K + 1): horizontal knots, vertical knots, knot derivatives
        self.knots = torch.cat((F.pad(cumulative, (1, 0)) - 1, derivatives.unsqueeze(-2)), dim=-2)
        self.horizontal, self.vertical, self.derivatives = self.knots.unbind(dim=-2)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``y`` and the element-wise ``log|dy/dx|``, both of the shape (*,) of ``x``."""
        k = self.searchsorted(self.horizontal, x) - 1
        inside = (k >= 0) & (k < self.bins)
        k = k.clamp(0, self.bins - 1)[..., None, None]
        index = torch.cat((k, k + 1), dim=-1).expand(*x.shape, 3, 2)
        (x0, x1), (y0, y1), (d0, d1) = (pair.unbind(-1) for pair in self.knots.gather(-1, index).unbind(-2))
        height = y1 - y0
        inv_width = 1 / (x1 - x0)
        s = height * inv_width
        t = ((x - x0) * inv_width).clamp(0.0, 1.0)
        t1 = 1 - t
        tt = t * t1
        inv_den = 1 / (s + (d0 + d1 - 2 * s) * tt)
        y = y0 + height * (s * t * t + d0 * tt) * inv_den
        jacobian = (s * inv_den).square() * (d1 * t * t + 2 * s * tt + d0 * t1 * t1)
        return torch.where(inside, y, x), torch.where(inside, torch.log(jacobian), 0.0)


class MixedSplineTransform(Transform):
    """Element-wise monotonic rational-quadratic spline over dimensions of mixed kinds.

    Every feature is first mapped to the canonical interval ``[-1, 1]`` by
    ``u = (x - offset) / half_width``, transformed by one
    :class:`UnitRQSTransform` (identity outside ``[-1, 1]``), and mapped back.
    The first ``shift.shape[-1]`` features are circular (torsions,
    ``offset = 0``, ``half_width = pi``): after the spline they are rotated by
    ``shift`` and wrapped onto ``[-pi, pi)``. The spline's end derivatives are
    both 1, so the circular map is a C1 diffeomorphism of the circle and
    densities stay continuous across ``+-pi``.

    Parameters
    ----------
    params : Tensor, shape (B, F, 3K - 1)
        Unconstrained spline parameters (see :class:`UnitRQSTransform`).
    shift : Tensor, shape (B, C)
        Rotation of the ``C`` leading circular features, radians.
    offset, half_width : Tensor, shape (F,)
        Centre and half-width of each feature's spline interval.
    slope : float
        Bounds of the spline parameters (see :class:`UnitRQSTransform`).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, params: Tensor, shift: Tensor, offset: Tensor, half_width: Tensor, slope: float) -> None:
        super().__init__()
        self.spline = UnitRQSTransform(params, slope=slope)
        self.shift = shift
        self.offset = offset
        self.half_width = half_width
        self.inv_half_width = 1 / half_width

    def _rotate(self, y: Tensor, sign: float) -> Tensor:
        n = self.shift.shape[-1]
        if n == 0:
            return y
        head = wrap_angle(y[..., :n] + sign * self.shift)
        return torch.cat((head, y[..., n:]), dim=-1)

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``y`` of shape (B, F) and ``log|det dy/dx|`` of shape (B,)."""
        v, ladj = self.spline.call_and_ladj((x - self.offset) * self.inv_half_width)
        y = self._rotate(self.offset + self.half_width * v, 1.0)
        return y, ladj.sum(dim=-1)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def _inverse(self, y: Tensor) -> Tensor:
        v = (self._rotate(y, -1.0) - self.offset) * self.inv_half_width
        return self.offset + self.half_width * self.spline.inv(v)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``x`` of shape (B, F) and ``log|det dx/dy|`` of shape (B,)."""
        v = (self._rotate(y, -1.0) - self.offset) * self.inv_half_width
        u = self.spline.inv(v)
        _, ladj = self.spline.call_and_ladj(u)
        return self.offset + self.half_width * u, -ladj.sum(dim=-1)


class MixedCouplingTransform(CouplingTransform):
    """zuko :class:`~zuko.transforms.CouplingTransform` with explicit index orders.

    ``y_b = f(x_b | x_a)`` with ``x_a = x[..., idx_a]``, ``x_b = x[..., idx_b]``
    in the given orders (the conditioner relies on them); ``idx_a`` and
    ``idx_b`` partition the features.

    Parameters
    ----------
    meta : callable
        ``meta(x_a)`` returns the :class:`MixedSplineTransform` for ``x_b``;
        ``x_a`` has shape (B, len(idx_a)), possibly zero columns.
    idx_a, idx_b : LongTensor
        Untransformed and transformed feature indices.
    """

    def __init__(self, meta: Callable[[Tensor], MixedSplineTransform], idx_a: LongTensor, idx_b: LongTensor) -> None:
        Transform.__init__(self)
        self.meta = meta
        self.idx_a = idx_a
        self.idx_b = idx_b

    @property
    def inv(self) -> Transform:
        return _InverseMixedCoupling(self)


class _InverseMixedCoupling(Transform):
    """Inverse of a :class:`MixedCouplingTransform` with a one-pass ``call_and_ladj``."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, coupling: MixedCouplingTransform) -> None:
        super().__init__()
        self.coupling = coupling

    @property
    def inv(self) -> Transform:
        return self.coupling

    def _call(self, y: Tensor) -> Tensor:
        return self.call_and_ladj(y)[0]

    def log_abs_det_jacobian(self, y: Tensor, x: Tensor) -> Tensor:
        return self.call_and_ladj(y)[1]

    def call_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``x`` of shape (B, D) and ``log|det dx/dy|`` of shape (B,)."""
        y_a, y_b = self.coupling.split(y)
        x_b, ladj = self.coupling.meta(y_a).inverse_and_ladj(y_b)
        return self.coupling.merge(y_a, x_b, y.shape), ladj
