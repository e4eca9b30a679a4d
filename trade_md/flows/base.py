"""Temperature-dependent base distribution of the conditional flows."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.special import ndtr, ndtri

from .config import BOUNDED_KINDS

__all__ = ["MixedBase"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MixedBase(nn.Module):
    """Product base distribution whose width grows with temperature.

    Per dimension kind, with ``t = log(T / T0)``:

    - ``"torsion"``: uniform on ``[-pi, pi)``;
    - bounded kinds (``"angle"``, ``"bond"``, ``"narrow_torsion"``): normal
      centred at 0.5, truncated to ``[0, 1]``,
      ``sigma = bounded_sigma * exp(t / 2)``;
    - ``"real"``: ``N(0, sigma^2)``, ``sigma = real_sigma * exp(t / 2)``.

    Densities and samples are in closed form (erf / ndtri) and differentiable in
    ``t``; samples are reparametrized.

    Parameters
    ----------
    kinds : sequence of str, length D
    bounded_sigma : float
        Width of bounded dimensions at ``T = T0`` (units of the unit interval).
    real_sigma : float
        Standard deviation of real dimensions at ``T = T0``.
    """

    def __init__(self, kinds: Sequence[str], bounded_sigma: float, real_sigma: float) -> None:
        super().__init__()
        groups = {
            "torsion": [i for i, k in enumerate(kinds) if k == "torsion"],
            "bounded": [i for i, k in enumerate(kinds) if k in BOUNDED_KINDS],
            "real": [i for i, k in enumerate(kinds) if k == "real"],
        }
        order = groups["torsion"] + groups["bounded"] + groups["real"]
        self.bounded_sigma = bounded_sigma
        self.real_sigma = real_sigma
        for name, idx in groups.items():
            self.register_buffer(f"idx_{name}", torch.tensor(idx, dtype=torch.long))
        self.register_buffer("unsort", torch.argsort(torch.tensor(order, dtype=torch.long)))

    def extra_repr(self) -> str:
        return f"bounded_sigma={self.bounded_sigma}, real_sigma={self.real_sigma}"

    def log_prob(self, z: Tensor, log_t: Tensor) -> Tensor:
        """Log-density of the base (support not checked).

        Parameters
        ----------
        z : Tensor, shape (B, D)
        log_t : Tensor, shape (B,)
            ``log(T / T0)``.

        Returns
        -------
        Tensor, shape (B,)
        """
        half_log_t = 0.5 * log_t
        inv_sqrt_t = torch.exp(-half_log_t)
        out = torch.full_like(log_t, -self.idx_torsion.numel() * math.log(2 * math.pi))
        n_bounded, n_real = self.idx_bounded.numel(), self.idx_real.numel()
        if n_bounded:
            w = (z[:, self.idx_bounded] - 0.5) * (inv_sqrt_t / self.bounded_sigma)[:, None]
            log_norm = torch.log(torch.erf(inv_sqrt_t * (0.5 / (math.sqrt(2) * self.bounded_sigma))))
            out = out - 0.5 * w.square().sum(-1) - n_bounded * (
                math.log(self.bounded_sigma) + half_log_t + _LOG_SQRT_2PI + log_norm
            )
        if n_real:
            w = z[:, self.idx_real] * (inv_sqrt_t / self.real_sigma)[:, None]
            out = out - 0.5 * w.square().sum(-1) - n_real * (math.log(self.real_sigma) + half_log_t + _LOG_SQRT_2PI)
        return out

    def rsample(self, log_t: Tensor) -> Tensor:
        """Reparametrized samples, one per row of ``log_t``.

        Parameters
        ----------
        log_t : Tensor, shape (B,)
            ``log(T / T0)``; dtype and device of the samples.

        Returns
        -------
        Tensor, shape (B, D), differentiable w.r.t. ``log_t``.
        """
        n = log_t.shape[0]
        half_log_t = 0.5 * log_t[:, None]
        like = {"dtype": log_t.dtype, "device": log_t.device}
        parts = [(2 * torch.rand(n, self.idx_torsion.numel(), **like) - 1) * math.pi]
        if self.idx_bounded.numel():
            # Symmetric inverse CDF of the truncated normal, evaluated in the lower
            # tail on both sides so that neither end loses precision.
            sigma = self.bounded_sigma * torch.exp(half_log_t)
            s = 2 * torch.rand(n, self.idx_bounded.numel(), **like) - 1
            p_low = ndtr(-0.5 / sigma)
            t = ndtri(p_low + (1 - s.abs()) * (0.5 - p_low))
            parts.append((0.5 - torch.sign(s) * sigma * t).clamp(0.0, 1.0))
        if self.idx_real.numel():
            eps = torch.randn(n, self.idx_real.numel(), **like)
            parts.append(self.real_sigma * torch.exp(half_log_t) * eps)
        return torch.cat(parts, dim=-1)[:, self.unsort]
