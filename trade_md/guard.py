"""The divergence guard: skip bad steps, fall back to the last good state, back off.

A step whose loss is not finite, or spikes above the recent losses, is
skipped (no optimizer step). After ``run.max_skips`` consecutive skips, or a
validation loss that is not finite or more than ``run.divergence_tolerance``
nats above the lowest one so far, the model and optimizer are restored to
the last good state (the last healthy validation) and the transfer weight is
scaled by ``run.backoff``.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:
    from .train_config import RunConfig

__all__ = ["DivergenceGuard"]


class DivergenceGuard:
    """Spike detection, skip counting, and reload with back-off (its state goes into checkpoints).

    Parameters
    ----------
    run : RunConfig
        ``spike_factor``, ``spike_window``, ``max_skips``, ``divergence_tolerance`` and ``backoff``.

    Attributes
    ----------
    weight_scale : float
        Factor on the transfer weight, ``backoff ** reloads``.
    recent : list of float
        The last ``spike_window`` finite losses.
    consecutive_skips, skipped_steps, reloads : int
    lowest_validation : float
        Lowest healthy validation loss so far (nats; ``inf`` before the first).
    last_good : dict or None
        Copies of the model and optimizer states at the last healthy validation.
    """

    def __init__(self, run: "RunConfig") -> None:
        self.run = run
        self.weight_scale = 1.0
        self.recent: list[float] = []
        self.consecutive_skips = 0
        self.skipped_steps = 0
        self.reloads = 0
        self.lowest_validation = math.inf
        self.last_good: Optional[dict] = None

    # ------------------------------------------------------------------ steps
    def is_spike(self, loss: float) -> bool:
        """Whether ``loss`` exceeds the median of :attr:`recent` by ``spike_factor`` robust deviations."""
        if len(self.recent) < self.run.spike_window:
            return False
        values = torch.tensor(self.recent)
        median = values.median()
        mad = (values - median).abs().median()
        scale = 1.4826 * mad + 1e-3 * (1 + median.abs())
        return bool(loss > median + self.run.spike_factor * scale)

    def screen(self, loss: float) -> str:
        """Why a step with this loss must be skipped (``"non-finite loss"``, ``"loss spike"``), or ``""``."""
        if not math.isfinite(loss):
            return "non-finite loss"
        return "loss spike" if self.is_spike(loss) else ""

    def record(self, loss: float, skipped: bool) -> bool:
        """Count a finished step; True when the consecutive skips call for :meth:`reload`."""
        if math.isfinite(loss):
            self.recent = (self.recent + [loss])[-self.run.spike_window:]
        if skipped:
            self.skipped_steps += 1
            self.consecutive_skips += 1
        else:
            self.consecutive_skips = 0
        return self.consecutive_skips >= self.run.max_skips

    # ------------------------------------------------------------- validation
    def diverged(self, validation: float) -> bool:
        """Whether a validation loss (nats) calls for :meth:`reload`."""
        return not math.isfinite(validation) or validation > self.lowest_validation + self.run.divergence_tolerance

    def healthy(self, validation: float, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Note a healthy validation loss and keep the current state as the last good one."""
        self.lowest_validation = min(self.lowest_validation, validation)
        self.remember(model, optimizer)

    def remember(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Keep copies of the model and optimizer states as the last good state."""
        self.last_good = {
            "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
        }

    def reload(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Back off: restore the last good state into ``model`` and ``optimizer``, scale the transfer weight."""
        self.reloads += 1
        self.weight_scale *= self.run.backoff
        self.consecutive_skips = 0
        self.recent = []
        if self.last_good is not None:
            model.load_state_dict(self.last_good["model"])
            # a copy: the optimizer would otherwise update the snapshot's tensors in place
            optimizer.load_state_dict(copy.deepcopy(self.last_good["optimizer"]))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Counters, recent losses, lowest validation and the last good state, for checkpoints."""
        return {
            "weight_scale": self.weight_scale,
            "recent": list(self.recent),
            "consecutive_skips": self.consecutive_skips,
            "skipped_steps": self.skipped_steps,
            "reloads": self.reloads,
            "lowest_validation": self.lowest_validation,
            "last_good": self.last_good,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        for key in self.state_dict():
            setattr(self, key, state[key])
