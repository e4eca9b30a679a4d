"""TRADE on a grid of conditions (``transfer.method: trade_grid``).

The gradient loss is evaluated at conditions drawn from a log-spaced grid
over the range; the SNIS estimates of ``E_c[d/dc log q]`` are kept per grid
point in a table refreshed every ``transfer.refresh_every`` steps (moving
averages), and each point's loss is weighted by its causality weight, so that
far conditions are fitted after near ones. The samples of the last refresh,
with their energies, are kept as the pool of evaluation points
(``evaluation_points: samples_c``), so a step between refreshes draws no
samples and computes no energies. The grid is the method's state.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import validators
from ..density import ConditionalDensity, model_like
from ..losses import GradientLoss, GradientLossConfig, evaluation_points, gradient_loss, snis_at_conditions
from ..targets import Target
from .base import MethodSetup, TrainingMethod, TransferTerm, register_method

__all__ = ["ConditionGrid", "grid_gradient_loss", "TradeGrid"]


class ConditionGrid:
    """State of the grid mode: conditions, SNIS table, running losses, causality weights.

    The grid is log-spaced over ``[low, high]``. For every point it keeps an
    exponential moving average of the SNIS estimate of ``E_c[d/dc log q]``
    (refreshed every few steps), its last relative ESS, an exponential
    moving average of the gradient loss there, and the samples of its last
    refresh with their ``d/dc log q`` (the pool of evaluation points). Causality weights are
    ``exp(-epsilon * sum of the running losses of the points strictly between
    c0 and the point)``, so far conditions are fitted after near ones.

    Parameters
    ----------
    low, high : float
        Range of the condition, ``0 < low < high``.
    reference : float
        ``c0``, the condition of the boundary data.
    size : int
        Number of grid points (>= 2).
    ema : float
        Memory of the moving averages in ``[0, 1)`` (0: latest value only).
    causality_eps : float
        ``epsilon`` of the causality weights (0 disables them).
    """

    def __init__(self, low: float, high: float, reference: float, size: int, ema: float, causality_eps: float) -> None:
        low, high = validators.value_range("(low, high)", (low, high), positive=True)
        size = _grid_size("size", size)
        self.reference = validators.positive_number("reference", reference)
        self.ema = _ema("ema", ema)
        self.causality_eps = validators.non_negative_number("causality_eps", causality_eps)
        self.conditions = torch.logspace(math.log10(low), math.log10(high), size, dtype=torch.float64)
        self.expectation = torch.full((size,), math.nan, dtype=torch.float64)
        self.ess = torch.zeros(size, dtype=torch.float64)
        self.running_loss = torch.full((size,), math.nan, dtype=torch.float64)
        self.pool_x: Optional[Tensor] = None  # (K, n, ...) samples of the last refresh, model dtype/device
        self.pool_dlogq: Optional[Tensor] = None  # (K, n) their d/dc log q
        self.pooled = torch.zeros(size, dtype=torch.bool)  # grid points whose pool is filled

    @property
    def size(self) -> int:
        """Number of grid points K."""
        return self.conditions.shape[0]

    def active(self, low: float, high: float) -> Tensor:
        """Bool mask (K,) of the grid points inside the current range ``[low, high]``."""
        tol = 1e-9
        return (self.conditions >= low * (1 - tol)) & (self.conditions <= high * (1 + tol))

    def refresh(self, model: ConditionalDensity, target: Target, points: Tensor, n: int) -> None:
        """Update the SNIS table at the grid points with indices ``points`` from ``n`` samples each."""
        if points.numel() == 0:
            return
        like = model_like(model)
        conditions = self.conditions[points].to(like)
        draws = snis_at_conditions(model, target, conditions, n)
        estimate = draws.estimate
        shape = (points.numel(), n, *draws.x.shape[1:])
        if self.pool_x is None or tuple(self.pool_x.shape[1:]) != shape[1:] or self.pool_x.dtype != draws.x.dtype:
            self.pool_x = draws.x.new_zeros((self.size, *shape[1:]))
            self.pool_dlogq = draws.dlogq_dc.new_zeros((self.size, n))
            self.pooled[:] = False
        self.pool_x[points.to(self.pool_x.device)] = draws.x.reshape(shape)
        self.pool_dlogq[points.to(self.pool_x.device)] = draws.dlogq_dc.reshape(shape[:2])
        self.pooled[points] = True
        new = estimate.mean.detach().to(torch.float64).cpu()
        old = self.expectation[points]
        fresh = torch.isnan(old)
        blended = torch.where(fresh, new, self.ema * old + (1 - self.ema) * new)
        # keep the old value where the new estimate failed (no usable sample)
        self.expectation[points] = torch.where(torch.isfinite(new), blended, old)
        self.ess[points] = estimate.ess.detach().to(torch.float64).cpu()

    def record_losses(self, index: Tensor, per_sample: Tensor, valid: Tensor) -> None:
        """Fold this step's per-sample losses into the running loss of each grid point."""
        index, per_sample, valid = index.cpu(), per_sample.detach().to(torch.float64).cpu(), valid.cpu()
        for k in torch.unique(index[valid]).tolist():
            mean = per_sample[(index == k) & valid].mean()
            old = self.running_loss[k]
            self.running_loss[k] = mean if torch.isnan(old) else self.ema * old + (1 - self.ema) * mean

    def causality_weights(self) -> Tensor:
        """Weights (K,) ``exp(-eps * sum of running losses strictly between c0 and each point)``."""
        distance = torch.log(self.conditions / self.reference)
        losses = torch.nan_to_num(self.running_loss, nan=0.0)
        weights = torch.ones(self.size, dtype=torch.float64)
        for k in range(self.size):
            between = (torch.sign(distance) == torch.sign(distance[k])) & (distance.abs() < distance[k].abs())
            weights[k] = math.exp(-self.causality_eps * float(losses[between].sum()))
        return weights

    def state_dict(self) -> dict:
        """The table, ESS and running losses (float64 CPU tensors) and the pool (CPU) for checkpoints."""
        state = {
            "conditions": self.conditions.clone(),
            "expectation": self.expectation.clone(),
            "ess": self.ess.clone(),
            "running_loss": self.running_loss.clone(),
            "pooled": self.pooled.clone(),
        }
        if self.pool_x is not None:
            state["pool_x"], state["pool_dlogq"] = self.pool_x.detach().cpu(), self.pool_dlogq.detach().cpu()
        return state

    def load_state_dict(self, state: dict, like: Optional[Tensor] = None) -> None:
        """Restore :meth:`state_dict` output; the grid's conditions must match.

        ``like``: a tensor whose device the pool moves to. A state without a
        pool (older checkpoints) leaves it empty: the next step refreshes.
        """
        if not torch.allclose(state["conditions"], self.conditions):
            raise ValueError("the saved grid has different conditions than this one")
        self.expectation = state["expectation"].clone()
        self.ess = state["ess"].clone()
        self.running_loss = state["running_loss"].clone()
        if "pool_x" in state:
            device = None if like is None else like.device
            self.pool_x = state["pool_x"].to(device, copy=True)
            self.pool_dlogq = state["pool_dlogq"].to(device, copy=True)
            self.pooled = state["pooled"].clone()
        else:
            self.pool_x = self.pool_dlogq = None
            self.pooled = torch.zeros(self.size, dtype=torch.bool)


def grid_gradient_loss(
    model: ConditionalDensity,
    target: Target,
    grid: ConditionGrid,
    active: Tensor,
    batch: int,
    config: GradientLossConfig,
    data: Optional[Tensor] = None,
) -> GradientLoss:
    """One grid-mode gradient-loss evaluation (the SNIS table must be filled).

    Each of the ``batch`` elements draws an active grid point uniformly; its
    expectation comes from the table and its weight is the point's causality
    weight; with ``evaluation_points="samples_c"`` its point is drawn from the
    pool of that grid point (which must be filled), energies included. The
    running losses of the grid are updated.

    Parameters
    ----------
    active : (K,) bool tensor
        Grid points inside the current range (at least one).
    """
    like = model_like(model)
    candidates = torch.nonzero(active).flatten()
    index = candidates[torch.randint(candidates.numel(), (batch,))]
    c = grid.conditions[index].to(like)
    dlogq = None
    if config.evaluation_points == "samples_c":
        if grid.pool_x is None or not bool(grid.pooled[index].all()):
            raise RuntimeError("grid_gradient_loss: refresh the active grid points before drawing from their pool")
        member = torch.randint(grid.pool_x.shape[1], (batch,))
        at = (index.to(grid.pool_x.device), member.to(grid.pool_x.device))
        x, dlogq = grid.pool_x[at], grid.pool_dlogq[at]
        if config.evaluation_noise > 0:
            x, dlogq = x + config.evaluation_noise * torch.randn_like(x), None
    else:
        x = evaluation_points(config.evaluation_points, model, c, grid.reference, data, config.evaluation_noise)
    expectation = grid.expectation[index].to(c)
    weights = grid.causality_weights()[index].to(c)
    result = gradient_loss(model, target, x, c, expectation, config, weights, dlogq_dc=dlogq)
    grid.record_losses(index, result.per_sample, result.valid)
    return result


def _grid_size(name: str, value) -> int:
    """``value`` as an int >= 2 (a grid has two ends)."""
    if validators.positive_int(name, value) < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    return int(value)


def _ema(name: str, value) -> float:
    """``value`` as a float in ``[0, 1)`` (the memory of a moving average; 0 keeps only the latest value)."""
    value = validators.non_negative_number(name, value)
    if not value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


@register_method
class TradeGrid(TrainingMethod):
    """TRADE gradient loss on a log-spaced grid with an SNIS table and causality weights.

    Logs the last relative SNIS ESS (``ess@<c>``) and the running gradient
    loss (``grad_loss@<c>``) of every grid point.
    """

    name = "trade_grid"
    energy_free = True

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        tc = setup.transfer
        low, high = tc.condition_range
        self.grid = ConditionGrid(low, high, setup.reference, tc.grid_size, tc.ema, tc.causality_eps)

    @classmethod
    def check_config(cls, transfer) -> None:
        super().check_config(transfer)
        _grid_size("transfer.grid_size", transfer.grid_size)
        _ema("transfer.ema", transfer.ema)

    def columns(self) -> list[str]:
        labels = [f"{c:.4g}" for c in self.grid.conditions.tolist()]
        return [f"ess@{c}" for c in labels] + [f"grad_loss@{c}" for c in labels]

    def loss(self, step: int, low: float, high: float) -> Optional[TransferTerm]:
        """Refresh the stale SNIS table entries of the active grid points, then the gradient loss there."""
        s, tc, grid = self.setup, self.setup.transfer, self.grid
        active = grid.active(low, high)
        if not bool(active.any()):
            return None
        stale = active & (torch.isnan(grid.expectation) | ~grid.pooled | (step % tc.refresh_every == 0))
        grid.refresh(s.model, self.target, torch.nonzero(stale).flatten(), tc.snis_samples)
        result = grid_gradient_loss(s.model, self.target, grid, active, s.batch_size, tc.gradient, s.train_x)
        logs = dict(zip(self.columns(), grid.ess.tolist() + grid.running_loss.tolist(), strict=True))
        return TransferTerm(result.loss, logs)

    def state_dict(self) -> dict:
        return self.grid.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.grid.load_state_dict(state, like=model_like(self.setup.model))
