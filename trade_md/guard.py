"""The divergence guard: skip bad steps, fall back to the last good state, back off.

A step whose loss terms are not finite, or one of which spikes above its
own recent values, is skipped (no optimizer step). The terms (the boundary
loss and the unweighted transfer term) are judged separately, each against
its own history: a term that has just been switched on, or whose weight
ramps up, is no spike. After ``run.max_skips`` consecutive skips, or a
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
    recent : dict of str to list of float
        Per loss term, its last ``spike_window`` finite values.
    consecutive_skips, skipped_steps, reloads : int
    lowest_validation : float
        Lowest healthy validation loss so far (nats; ``inf`` before the first).
    last_good : dict or None
        Copies of the model and optimizer states at the last healthy validation.
    """

    def __init__(self, run: "RunConfig") -> None:
        self.run = run
        self.weight_scale = 1.0
        self.recent: dict[str, list[float]] = {}
        self.consecutive_skips = 0
        self.skipped_steps = 0
        self.reloads = 0
        self.lowest_validation = math.inf
        self.last_good: Optional[dict] = None

    # ------------------------------------------------------------------ steps
    def is_spike(self, name: str, value: float) -> bool:
        """Whether term ``name`` at ``value`` exceeds the median of its recent values by ``spike_factor`` robust deviations."""
        recent = self.recent.get(name, [])
        if len(recent) < self.run.spike_window:
            return False
        values = torch.tensor(recent)
        median = values.median()
        mad = (values - median).abs().median()
        scale = 1.4826 * mad + 1e-3 * (1 + median.abs())
        return bool(value > median + self.run.spike_factor * scale)

    def screen(self, terms: dict[str, float]) -> str:
        """Why a step with these loss terms must be skipped (``"non-finite loss"``, ``"loss spike (term)"``), or ``""``."""
        if not all(math.isfinite(v) for v in terms.values()):
            return "non-finite loss"
        spikes = [name for name, value in terms.items() if self.is_spike(name, value)]
        return f"loss spike ({', '.join(spikes)})" if spikes else ""

    def record(self, terms: dict[str, float], skipped: bool) -> bool:
        """Count a finished step; True when the consecutive skips call for :meth:`reload`."""
        for name, value in terms.items():
            if math.isfinite(value):
                self.recent[name] = (self.recent.get(name, []) + [value])[-self.run.spike_window:]
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
        self.recent = {}
        if self.last_good is not None:
            model.load_state_dict(self.last_good["model"])
            # a copy: the optimizer would otherwise update the snapshot's tensors in place
            optimizer.load_state_dict(copy.deepcopy(self.last_good["optimizer"]))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Counters, recent losses, lowest validation and the last good state, for checkpoints."""
        return {
            "weight_scale": self.weight_scale,
            "recent": {name: list(values) for name, values in self.recent.items()},
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
        if not isinstance(self.recent, dict):  # a checkpoint of an earlier version kept total losses only
            self.recent = {}
