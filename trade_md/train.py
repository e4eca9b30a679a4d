"""The training loop: TRADE and its baselines in one harness.

:func:`train` takes objects (a conditional model, a
:class:`~trade_md.targets.Target`, :class:`~trade_md.problems.TrainingData`)
and a :class:`TrainConfig`; :func:`train_from_config` builds a toy problem
from a YAML file and trains it (the CLI's ``trade-md train --config``).

Per step: the boundary term (NLL of data at ``c0``, or backward KL at ``c0``)
plus, after a warm-up, the transfer term of the chosen method with a ramped
weight over a condition range that widens from ``c0``:

``trade_grid``       TRADE gradient loss on a log-spaced grid, SNIS table, causality weights
``trade_continuous`` TRADE gradient loss at conditions drawn each step, fresh SNIS
``nll``              boundary only (NLL-only baseline; TSF-like with a scaled-base model)
``reweighting``      NLL at ``c`` of model samples at ``c0`` reweighted by ``q(x|c) / p(x|c0)``
``reverse_kl``       backward KL at conditions over the range

Adam with a one-cycle learning rate, gradient-norm clipping, divergence
handling (non-finite or spiking losses skip the step; repeated skips or a
validation NLL far above its best restore the state of the last healthy
validation and halve the transfer weight), atomic checkpoints with exact resume, a CSV log of every
loss term, SNIS ESS and learning rate, and the best checkpoint by validation
NLL at ``c0``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._io import atomic_path, atomic_write_text
from .config import ConfigError, load_yaml, save_yaml, to_dict
from .flows import FlowConfig
from .losses import (
    ConditionGrid,
    GradientLossConfig,
    continuous_gradient_loss,
    energy_free_target,
    grid_gradient_loss,
    log_uniform_conditions,
    model_like,
    nll,
    reverse_kl,
    reweighted_nll,
)
from .problems import ProblemConfig, TrainingData, build_problem, transfer_metrics
from .targets import Target

__all__ = [
    "METHODS",
    "BOUNDARIES",
    "TransferConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "check_curriculum",
    "train",
    "train_from_config",
]

METHODS: tuple[str, ...] = ("trade_grid", "trade_continuous", "nll", "reweighting", "reverse_kl")
BOUNDARIES: tuple[str, ...] = ("nll", "reverse_kl")
PathLike = Union[str, os.PathLike]


@dataclass
class TransferConfig:
    """What is learned: boundary term, transfer method and curriculum.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    boundary : {"nll", "reverse_kl"}
        NLL of the training data, or the data-free backward KL at ``c0``.
    reference : float, optional
        ``c0``; defaults to the data's condition when it has a single one.
    condition_range : (float, float)
        Range ``(low, high)`` of the condition, containing ``c0``.
    weight, boundary_weight : float
        Final weight of the transfer term and weight of the boundary term.
    warmup_steps : int
        Steps of boundary-only training.
    ramp_steps : int
        Steps over which the transfer weight rises linearly to ``weight`` after the warm-up.
    widen_steps : int
        Steps after the warm-up over which the range widens (log-linearly) from ``c0`` to ``condition_range``.
    grid_size, refresh_every, ema, causality_eps : (grid mode)
        Grid points; steps between SNIS table refreshes; memory of the moving
        averages; epsilon of the causality weights.
    snis_samples : int
        Model samples per condition for each SNIS estimate (and, for
        ``reweighting``, samples at ``c0``).
    conditions_per_step : int
        Conditions drawn per step (``trade_continuous``, ``reweighting``, ``reverse_kl``).
    energy_free : bool
        TRADE with the model's own density at ``c0`` standing in for ``q``.
    gradient : GradientLossConfig
        Penalty, clipping and evaluation points of the gradient loss.
    """

    method: str = "trade_grid"
    boundary: str = "nll"
    reference: Optional[float] = None
    condition_range: tuple[float, float] = (0.5, 1.5)
    weight: float = 1.0
    boundary_weight: float = 1.0
    warmup_steps: int = 200
    ramp_steps: int = 300
    widen_steps: int = 500
    grid_size: int = 8
    refresh_every: int = 10
    ema: float = 0.9
    causality_eps: float = 1.0
    snis_samples: int = 256
    conditions_per_step: int = 8
    energy_free: bool = False
    gradient: GradientLossConfig = field(default_factory=GradientLossConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {self.boundary!r}")
        low, high = (float(v) for v in self.condition_range)
        if not 0 < low < high:
            raise ValueError(f"condition_range must be (low, high) with 0 < low < high, got {self.condition_range!r}")
        self.condition_range = (low, high)
        if self.reference is not None and not low <= self.reference <= high:
            raise ValueError(f"reference {self.reference} is outside condition_range {self.condition_range}")
        _non_negative_ints(self, "warmup_steps", "ramp_steps", "widen_steps")
        _positive_ints(self, "grid_size", "refresh_every", "snis_samples", "conditions_per_step")
        if not (self.weight >= 0 and self.boundary_weight >= 0 and self.causality_eps >= 0):
            raise ValueError("weight, boundary_weight and causality_eps must be >= 0")
        if self.method == "trade_grid" and self.grid_size < 2:
            raise ValueError("grid_size must be >= 2")
        if self.energy_free and not self.method.startswith("trade"):
            raise ValueError("energy_free applies to the TRADE methods only")


@dataclass
class OptimConfig:
    """Adam with a one-cycle learning rate.

    Parameters
    ----------
    steps : int
        Total optimizer steps.
    batch_size : int
        Boundary batch and number of gradient-loss evaluation points per step.
    lr : float
        Peak learning rate.
    pct_start : float
        Fraction of the steps spent raising the learning rate.
    weight_decay : float
    grad_clip : float
        Maximum gradient norm.
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    pct_start: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 10.0

    def __post_init__(self) -> None:
        _positive_ints(self, "steps", "batch_size")
        if not (self.lr > 0 and 0 < self.pct_start < 1 and self.weight_decay >= 0 and self.grad_clip > 0):
            raise ValueError("need lr > 0, 0 < pct_start < 1, weight_decay >= 0, grad_clip > 0")
        if float(self.pct_start * self.steps) - 1 == 0:  # torch's OneCycleLR divides by pct_start * steps - 1
            raise ConfigError(
                f"optim.pct_start * optim.steps = {self.pct_start:g} * {self.steps} = 1 leaves the one-cycle "
                "learning rate no step to rise in (torch divides by zero); change optim.steps or optim.pct_start"
            )


@dataclass
class RunConfig:
    """Bookkeeping: seeds, threads, checkpoints, validation, divergence handling.

    Parameters
    ----------
    seed : int
        Seed of the training randomness (batches, model samples).
    threads : int, optional
        torch threads; default 1 on CPU unless ``OMP_NUM_THREADS`` is set
        (two threads under contention were 43x slower here).
    out_dir : str, optional
        Output folder for :func:`train_from_config`.
    checkpoint_every, validate_every : int
        Steps between checkpoints and between validations.
    progress : bool
        Show a tqdm progress bar.
    restore_best : bool
        Load the best checkpoint into the model when training ends.
    spike_factor, spike_window : float, int
        A step whose loss exceeds the median of the last ``spike_window`` losses
        by ``spike_factor`` robust deviations is skipped.
    max_skips : int
        Consecutive skipped steps that trigger a reload of the last good state
        (the model and optimizer at the last healthy validation).
    divergence_tolerance : float
        A validation loss this far (nats) above the best one triggers a reload.
    backoff : float
        Factor applied to the transfer weight at every reload.
    """

    seed: int = 0
    threads: Optional[int] = None
    out_dir: Optional[str] = None
    checkpoint_every: int = 250
    validate_every: int = 50
    progress: bool = True
    restore_best: bool = True
    spike_factor: float = 20.0
    spike_window: int = 50
    max_skips: int = 25
    divergence_tolerance: float = 2.0
    backoff: float = 0.5

    def __post_init__(self) -> None:
        _positive_ints(self, "checkpoint_every", "validate_every", "spike_window", "max_skips")
        if self.threads is not None:
            _positive_ints(self, "threads")
        if not (self.spike_factor > 0 and self.divergence_tolerance > 0 and 0 < self.backoff <= 1):
            raise ValueError("need spike_factor > 0, divergence_tolerance > 0, 0 < backoff <= 1")


@dataclass
class TrainConfig:
    """The whole configuration tree (YAML sections ``problem``, ``flow``, ``transfer``, ``optim``, ``run``).

    ``problem`` and ``flow`` are used only by :func:`train_from_config` to build
    a toy problem; :func:`train` uses ``transfer``, ``optim`` and ``run``.
    """

    problem: ProblemConfig = field(default_factory=ProblemConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_curriculum(self.transfer, self.optim)


def curriculum_steps(transfer: TransferConfig) -> int:
    """Steps until the transfer term has its full weight and range: ``warmup + max(ramp, widen)`` (0 for ``nll``)."""
    if transfer.method == "nll":
        return 0
    return transfer.warmup_steps + max(transfer.ramp_steps, transfer.widen_steps)


def check_curriculum(transfer: TransferConfig, optim: OptimConfig) -> None:
    """Raise ConfigError if ``optim.steps`` ends before the curriculum of ``transfer`` does.

    The best checkpoint is chosen among validations after the curriculum, at
    the full transfer weight and range; a run shorter than the curriculum
    would never train the transfer term fully and keep no best checkpoint.

    Parameters
    ----------
    transfer, optim : the two sections (YAML sections ``transfer`` and ``optim``)
    """
    needed = curriculum_steps(transfer)
    if optim.steps < needed:
        raise ConfigError(
            f"optim.steps = {optim.steps} is shorter than the curriculum of method {transfer.method!r}: "
            f"transfer.warmup_steps + max(transfer.ramp_steps, transfer.widen_steps) = "
            f"{transfer.warmup_steps} + max({transfer.ramp_steps}, {transfer.widen_steps}) = {needed}; "
            f"the transfer term would never reach its full weight and range and no best checkpoint would be "
            f"kept. Set optim.steps >= {needed} or shorten the curriculum"
        )


def _positive_ints(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _non_negative_ints(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    step : int
        Last completed step.
    best_step : int or None
        Step of the best checkpoint (``best.pt``), None if none was kept.
    best_validation : float
        Its validation loss (NLL at ``c0``, nats); ``inf`` if none.
    out_dir : Path
    skipped_steps, reloads : int
        Steps skipped, and reloads of the last good state (divergence handling).
    metrics : tuple of TransferMetrics
        Transfer metrics (only from :func:`train_from_config` on toy problems).
    lowest_validation : float
        Lowest healthy validation loss of the whole run, curriculum included
        (nats); ``inf`` if no validation was healthy.
    """

    step: int
    best_step: Optional[int]
    best_validation: float
    out_dir: Path
    skipped_steps: int
    reloads: int
    metrics: tuple = ()
    lowest_validation: float = math.inf

    def summary(self) -> str:
        """One line for the end of a run: steps, best checkpoint and validation loss, skips, reloads."""
        text = f"trained {self.step} steps; "
        if self.best_step is not None:
            text += f"best step {self.best_step}, validation loss {self.best_validation:.4g}"
        elif math.isfinite(self.lowest_validation):
            text += (f"no best checkpoint: every validation after the curriculum diverged (lowest validation "
                     f"loss {self.lowest_validation:.4g} during the curriculum); the model holds the last step")
        else:
            text += "no best checkpoint: no validation was healthy; the model holds the last step"
        return text + f"; {self.skipped_steps} skipped steps, {self.reloads} reloads"


#: CSV columns written for every method (then method-specific ESS / loss columns).
BASE_COLUMNS = (
    "step", "lr", "loss", "boundary", "transfer", "transfer_weight", "range_low", "range_high",
    "grad_norm", "skipped", "validation", "event",
)  # fmt: skip


class _Trainer:
    """Loop state of :func:`train` (everything a checkpoint holds)."""

    def __init__(
        self, model, target: Optional[Target], data: Optional[TrainingData], config: TrainConfig, out_dir: Path
    ):
        self.model, self.config, self.out_dir = model, config, out_dir
        self.like = model_like(model)
        self.data = None if data is None else data.to(self.like)
        tc = config.transfer
        if tc.boundary == "nll" and (self.data is None or self.data.validation is None):
            raise ValueError("boundary 'nll' needs training data with held-out validation data")
        if target is None and (tc.boundary == "reverse_kl" or (tc.method != "nll" and not tc.energy_free)):
            raise ValueError(f"method {tc.method!r} with boundary {tc.boundary!r} needs a target")
        self.reference = self._reference()
        self.target = target
        self.loss_target = target
        if tc.energy_free:
            self.loss_target = energy_free_target(model, self.reference, _condition_kind(target, model))
        self.grid = None
        if tc.method == "trade_grid":
            low, high = tc.condition_range
            self.grid = ConditionGrid(low, high, self.reference, tc.grid_size, tc.ema, tc.causality_eps)
        params = [p for p in model.parameters() if p.requires_grad]
        oc = config.optim
        self.params = params
        self.optimizer = torch.optim.Adam(params, lr=oc.lr, weight_decay=oc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=oc.lr, total_steps=oc.steps, pct_start=oc.pct_start
        )
        self.step = 0
        self.weight_scale = 1.0
        self.best_any = math.inf
        self.best_validation = math.inf
        self.best_step: Optional[int] = None
        self.recent: list[float] = []
        self.consecutive_skips = 0
        self.skipped_steps = 0
        self.reloads = 0
        self.last_good: Optional[dict] = None

    # ---------------------------------------------------------------- schedule
    def _reference(self) -> float:
        tc = self.config.transfer
        if tc.reference is not None:
            return float(tc.reference)
        if self.data is None:
            raise ValueError("transfer.reference is required without training data")
        values = torch.unique(self.data.train.condition)
        if values.numel() != 1:
            raise ValueError(f"the data has several conditions {values.tolist()}; set transfer.reference")
        reference = float(values[0])
        low, high = tc.condition_range
        if not low <= reference <= high:
            raise ValueError(f"the data's condition {reference} is outside condition_range {tc.condition_range}")
        return reference

    def transfer_weight(self, step: int) -> float:
        tc = self.config.transfer
        if tc.method == "nll" or step < tc.warmup_steps:
            return 0.0
        ramp = 1.0 if tc.ramp_steps == 0 else min(1.0, (step - tc.warmup_steps + 1) / tc.ramp_steps)
        return tc.weight * ramp * self.weight_scale

    def condition_range(self, step: int) -> tuple[float, float]:
        tc = self.config.transfer
        if step < tc.warmup_steps:
            done = 0.0
        else:
            done = 1.0 if tc.widen_steps == 0 else min(1.0, (step - tc.warmup_steps + 1) / tc.widen_steps)
        low, high = tc.condition_range
        c0 = self.reference
        return c0 * (low / c0) ** done, c0 * (high / c0) ** done

    def curriculum_done(self, step: int) -> bool:
        tc = self.config.transfer
        if tc.method == "nll":
            return True
        return step >= tc.warmup_steps + max(tc.ramp_steps, tc.widen_steps) - 1

    # ------------------------------------------------------------------- terms
    def extra_columns(self) -> list[str]:
        method = self.config.transfer.method
        if method == "trade_grid":
            labels = [f"{c:.4g}" for c in self.grid.conditions.tolist()]
            return [f"ess@{c}" for c in labels] + [f"grad_loss@{c}" for c in labels]
        if method in ("trade_continuous", "reweighting"):
            return ["ess_mean", "ess_min"]
        return []

    def boundary_loss(self) -> Tensor:
        tc, batch = self.config.transfer, self.config.optim.batch_size
        if tc.boundary == "reverse_kl":
            return reverse_kl(self.model, self.target, batch, self.reference)
        train = self.data.train
        index = torch.randint(len(train), (batch,)).to(train.x.device)
        return nll(self.model, train.x[index], train.condition[index])

    def transfer_loss(self, step: int, low: float, high: float) -> tuple[Optional[Tensor], dict]:
        tc, batch = self.config.transfer, self.config.optim.batch_size
        data_x = None if self.data is None else self.data.train.x
        if tc.method == "trade_grid":
            active = self.grid.active(low, high)
            if not bool(active.any()):
                return None, {}
            stale = active & (torch.isnan(self.grid.expectation) | (step % tc.refresh_every == 0))
            self.grid.refresh(self.model, self.loss_target, torch.nonzero(stale).flatten(), tc.snis_samples)
            result = grid_gradient_loss(self.model, self.loss_target, self.grid, active, batch, tc.gradient, data_x)
            logs = dict(
                zip(self.extra_columns(), self.grid.ess.tolist() + self.grid.running_loss.tolist(), strict=True)
            )
            return result.loss, logs
        if low == high:
            return None, {}
        conditions = log_uniform_conditions(low, high, tc.conditions_per_step, self.like)
        if tc.method == "trade_continuous":
            result, estimate = continuous_gradient_loss(
                self.model, self.loss_target, conditions, tc.snis_samples, batch, tc.gradient, self.reference, data_x
            )
            return result.loss, {"ess_mean": float(estimate.ess.mean()), "ess_min": float(estimate.ess.min())}
        if tc.method == "reweighting":
            with torch.no_grad():
                proposal, proposal_log_p = self.model.sample(tc.snis_samples, self.reference)
            result = reweighted_nll(self.model, self.target, proposal, proposal_log_p, conditions)
            return result.loss, {"ess_mean": float(result.ess.mean()), "ess_min": float(result.ess.min())}
        per = max(1, batch // tc.conditions_per_step)
        return reverse_kl(self.model, self.target, per * conditions.shape[0], conditions.repeat_interleave(per)), {}

    # --------------------------------------------------------------- one step
    def is_spike(self, loss: float) -> bool:
        rc = self.config.run
        if len(self.recent) < rc.spike_window:
            return False
        values = torch.tensor(self.recent)
        median = values.median()
        mad = (values - median).abs().median()
        scale = 1.4826 * mad + 1e-3 * (1 + median.abs())
        return bool(loss > median + rc.spike_factor * scale)

    def train_step(self) -> dict:
        step = self.step
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        weight = self.transfer_weight(step)
        low, high = self.condition_range(step)
        boundary = self.boundary_loss()
        total = self.config.transfer.boundary_weight * boundary
        transfer, logs = (None, {}) if weight == 0 else self.transfer_loss(step, low, high)
        if transfer is not None:
            total = total + weight * transfer
        row = {
            "step": step + 1, "lr": self.scheduler.get_last_lr()[0], "loss": float(total.detach()),
            "boundary": float(boundary.detach()),
            "transfer": math.nan if transfer is None else float(transfer.detach()),
            "transfer_weight": weight, "range_low": low, "range_high": high,
            "grad_norm": math.nan, "skipped": 0, "validation": math.nan, "event": "", **logs,
        }  # fmt: skip
        loss_value = row["loss"]
        if not math.isfinite(loss_value):
            row["event"] = "non-finite loss"
        elif self.is_spike(loss_value):
            row["event"] = "loss spike"
        else:
            total.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.optim.grad_clip))
            row["grad_norm"] = grad_norm
            if math.isfinite(grad_norm):
                self.optimizer.step()
            else:
                row["event"] = "non-finite gradient"
        if math.isfinite(loss_value):
            self.recent = (self.recent + [loss_value])[-self.config.run.spike_window :]
        if row["event"]:
            row["skipped"] = 1
            self.skipped_steps += 1
            self.consecutive_skips += 1
        else:
            self.consecutive_skips = 0
        self.scheduler.step()
        self.step += 1
        if self.consecutive_skips >= self.config.run.max_skips:
            row["event"] += "; reload"
            self.reload()
        return row

    # ------------------------------------------------------ validation, state
    def validation_loss(self) -> float:
        """NLL of the held-out data at ``c0`` (nats), or the backward KL at ``c0`` without data."""
        self.model.eval()
        with torch.no_grad():
            if self.config.transfer.boundary == "reverse_kl":
                with torch.random.fork_rng():
                    torch.manual_seed(self.config.run.seed + 1)
                    return float(reverse_kl(self.model, self.target, 4 * self.config.optim.batch_size, self.reference))
            val = self.data.validation
            chunk = 4 * self.config.optim.batch_size
            total = 0.0
            for start in range(0, len(val), chunk):
                log_p = self.model.log_prob(val.x[start : start + chunk], val.condition[start : start + chunk])
                total += float(log_p.sum())
            return -total / len(val)

    def validate(self, row: dict) -> None:
        value = self.validation_loss()
        row["validation"] = value
        if not math.isfinite(value) or value > self.best_any + self.config.run.divergence_tolerance:
            row["event"] = (row["event"] + "; " if row["event"] else "") + "validation diverged; reload"
            self.reload()
            return
        self.best_any = min(self.best_any, value)
        self.last_good = self.snapshot()
        if self.curriculum_done(self.step - 1) and value < self.best_validation:
            self.best_validation, self.best_step = value, self.step
            with atomic_path(self.out_dir / "best.pt") as tmp:
                torch.save({"step": self.step, "validation": value, "model": self.model.state_dict()}, tmp)

    def snapshot(self) -> dict:
        """Copies of the model and optimizer states (the last good state to fall back to)."""
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    def reload(self) -> None:
        """Back off: restore the last good state (last healthy validation), scale the transfer weight."""
        self.reloads += 1
        self.weight_scale *= self.config.run.backoff
        self.consecutive_skips = 0
        self.recent = []
        if self.last_good is not None:
            self.model.load_state_dict(self.last_good["model"])
            # a copy: the optimizer would otherwise update the snapshot's tensors in place
            self.optimizer.load_state_dict(copy.deepcopy(self.last_good["optimizer"]))

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "grid": None if self.grid is None else self.grid.state_dict(),
            "last_good": self.last_good,
            "trainer": {
                "weight_scale": self.weight_scale,
                "best_any": self.best_any,
                "best_validation": self.best_validation,
                "best_step": self.best_step,
                "recent": list(self.recent),
                "consecutive_skips": self.consecutive_skips,
                "skipped_steps": self.skipped_steps,
                "reloads": self.reloads,
            },  # fmt: skip
            "config": to_dict(self.config),
        }

    def load_state_dict(self, state: dict) -> None:
        _check_same_config(state["config"], to_dict(self.config))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.grid is not None:
            self.grid.load_state_dict(state["grid"])
        for key, value in state["trainer"].items():
            setattr(self, key, value)
        self.step = state["step"]
        self.last_good = state["last_good"]

    def checkpoint(self) -> None:
        """Write ``last.pt`` (keeping the one before as ``last.prev.pt``), unless the parameters are not finite."""
        if all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            save_checkpoint(self.state_dict(), self.out_dir / "last.pt")


# ------------------------------------------------------------------ checkpoint files
_CHECKPOINT_KEYS = frozenset({"step", "model", "optimizer", "scheduler", "rng", "trainer", "config"})


def previous_checkpoint(path: PathLike) -> Path:
    """Where the checkpoint before ``path`` is kept: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _checksum(state) -> str:
    """SHA-256 over a nested checkpoint state (tensor bytes, other values by repr), in storage order."""
    digest = hashlib.sha256()

    def walk(value) -> None:
        if isinstance(value, Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, np.ndarray):
            digest.update(f"A{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, dict):
            digest.update(b"{")
            for key, item in value.items():
                digest.update(repr(key).encode())
                walk(item)
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                walk(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    walk(state)
    return digest.hexdigest()


def save_checkpoint(state: dict, path: PathLike) -> None:
    """Write a training checkpoint atomically, keeping the one it replaces.

    The file at ``path`` (if any) becomes :func:`previous_checkpoint` (a hard
    link, or a copy), then the new state replaces ``path``; at every moment
    both names hold complete checkpoints.  The state carries a checksum of
    its contents, so that bytes damaged later are found by
    :func:`load_checkpoint`.
    """
    path = Path(path)
    state = dict(state, checksum=_checksum(state))
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        if path.exists():
            with atomic_path(previous_checkpoint(path)) as prev_tmp:
                try:
                    os.link(path, prev_tmp)
                except OSError:  # no hard links on this file system
                    shutil.copyfile(path, prev_tmp)


def _read_checkpoint(path: Path, device) -> dict:
    """One checkpoint file, or ValueError saying how it is damaged (never torch's own traceback)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd storages on its way to failing
            state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated/corrupt files raise RuntimeError, EOFError, pickle errors ...
        lines = str(err).strip().splitlines()
        raise ValueError(f"{path} is damaged or truncated ({type(err).__name__}: {lines[0] if lines else ''})") from None
    if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= set(state):
        raise ValueError(f"{path} is not a trade_md training checkpoint")
    expected = state.pop("checksum", None)  # checkpoints written before checksums were added have none
    if expected is not None and expected != _checksum(state):
        raise ValueError(f"{path} is damaged (its contents do not match the checksum written with it)")
    return state


def load_checkpoint(path: PathLike, device=None) -> dict:
    """Read the training checkpoint ``path``, falling back to the previous one if it is damaged.

    Parameters
    ----------
    path : ``last.pt`` of a training folder.
    device : torch device to map tensors to (default: as saved).

    Returns
    -------
    dict
        The state of :meth:`_Trainer.state_dict`.  If ``path`` is damaged or
        missing but :func:`previous_checkpoint` is good, a warning names the
        damaged file, the good one is copied onto ``path`` (so the next save
        keeps a good previous checkpoint) and its state is returned: the run
        resumes from that earlier step exactly as if it had been killed then.

    Raises
    ------
    ValueError
        Naming the files, if neither is a readable checkpoint.
    """
    path = Path(path)
    previous = previous_checkpoint(path)
    problems = []
    for candidate in (path, previous):
        if not candidate.exists():
            problems.append(f"{candidate} does not exist")
            continue
        try:
            state = _read_checkpoint(candidate, device)
        except ValueError as err:
            problems.append(str(err))
            continue
        if candidate != path:
            warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {candidate} "
                          f"(step {state['step']})", stacklevel=2)
            with atomic_path(path) as tmp:
                shutil.copyfile(candidate, tmp)
        return state
    raise ValueError("cannot resume training: " + "; ".join(problems)
                     + " (start a fresh run in another folder)")


def _condition_kind(target: Optional[Target], model) -> str:
    """``"temperature"`` or ``"beta"``: from the target, else from a ConditionedFlow's ``kind``."""
    if target is not None:
        return target.condition
    kinds = {"temperature": "temperature", "power": "beta"}
    if getattr(model, "kind", None) in kinds:
        return kinds[model.kind]
    raise ValueError("energy-free training without a target needs a model with kind 'temperature' or 'power'")


_RESUME_FREE_KEYS = {("run", "progress"), ("run", "threads"), ("run", "out_dir")}


def _check_same_config(saved: dict, current: dict) -> None:
    """Raise ConfigError if a resumed run's configuration differs (except progress, threads, out_dir)."""
    differences = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            if (section, key) not in _RESUME_FREE_KEYS and a.get(key) != b.get(key):
                differences.append(f"{section}.{key}: checkpoint {a.get(key)!r}, now {b.get(key)!r}")
    if differences:
        raise ConfigError("cannot resume with a different configuration: " + "; ".join(differences))


def _configure_threads(threads: Optional[int], like: Tensor) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    elif like.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


class _CsvLog:
    """Append-only CSV log; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: Optional[int]) -> None:
        self.path, self.columns = path, columns
        if resume_step is None or not path.exists():
            atomic_write_text(path, ",".join(columns) + "\n")
        else:
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
            if not rows or rows[0] != columns:
                raise ConfigError(f"{path} has other columns than this run; cannot resume its log")
            kept = [r for r in rows[1:] if len(r) == len(columns) and r[0].isdigit() and int(r[0]) <= resume_step]
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerows([columns] + kept)
        self.handle = open(path, "a", newline="")
        self.writer = csv.writer(self.handle)

    def write(self, row: dict) -> None:
        self.writer.writerow([_format(row.get(c, "")) for c in self.columns])

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def train(
    model,
    target: Optional[Target],
    data: Optional[TrainingData],
    config: TrainConfig,
    out_dir: PathLike,
    resume: bool = False,
) -> TrainResult:
    """Train a conditional model with TRADE or a baseline.

    Parameters
    ----------
    model : torch module with ``log_prob(x, c)`` and ``sample(n, c)``
        A :class:`~trade_md.flows.ConditionedFlow`, a Boltzmann generator, ...
        Its parameters set the dtype and device of training.
    target : Target or None
        ``q(x|c)``; may be None only for NLL-only or energy-free TRADE.
    data : TrainingData or None
        Boundary samples (and held-out validation samples) at ``c0``; None
        only with ``transfer.boundary = "reverse_kl"``.
    config : TrainConfig
        ``transfer``, ``optim`` and ``run`` sections are used.
    out_dir : path
        Receives ``config.yaml``, ``log.csv``, ``last.pt`` and ``best.pt``.
    resume : bool
        Continue from ``out_dir/last.pt`` (same configuration required). A
        fresh run refuses a folder that already holds a checkpoint.

    Returns
    -------
    TrainResult
        With ``run.restore_best``, the model holds the best checkpoint's
        parameters on return (if one was kept), else the last step's.
    """
    out_dir = Path(out_dir)
    check_curriculum(config.transfer, config.optim)  # a config may have been edited after construction
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(model, target, data, config, out_dir)
    _configure_threads(config.run.threads, trainer.like)
    checkpoint_path = out_dir / "last.pt"
    has_checkpoint = checkpoint_path.exists() or previous_checkpoint(checkpoint_path).exists()
    if has_checkpoint and not resume:
        raise FileExistsError(f"{out_dir} already holds a training run; pass resume=True or use another folder")
    if resume and has_checkpoint:
        trainer.load_state_dict(load_checkpoint(checkpoint_path, trainer.like.device))
        log = _CsvLog(out_dir / "log.csv", list(BASE_COLUMNS) + trainer.extra_columns(), trainer.step)
    else:
        torch.manual_seed(config.run.seed)
        save_yaml(config, out_dir / "config.yaml")
        log = _CsvLog(out_dir / "log.csv", list(BASE_COLUMNS) + trainer.extra_columns(), None)
        trainer.last_good = trainer.snapshot()
        trainer.checkpoint()
    rc, steps = config.run, config.optim.steps
    try:
        with tqdm(total=steps, initial=trainer.step, disable=not rc.progress, dynamic_ncols=True) as bar:
            while trainer.step < steps:
                row = trainer.train_step()
                if trainer.step % rc.validate_every == 0 or trainer.step == steps:
                    trainer.validate(row)
                log.write(row)
                if trainer.step % rc.checkpoint_every == 0 or trainer.step == steps:
                    log.flush()
                    trainer.checkpoint()
                bar.update(1)
                if trainer.step % 10 == 0:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", weight=f"{row['transfer_weight']:.3g}")
    finally:
        log.close()
    best = out_dir / "best.pt"
    if rc.restore_best and trainer.best_step is not None and best.exists():
        try:
            best_state = torch.load(best, map_location=trainer.like.device, weights_only=False)["model"]
        except Exception as err:  # noqa: BLE001 - a damaged file: keep the last step's parameters
            warnings.warn(f"{best} is damaged or truncated ({type(err).__name__}); "
                          "the model keeps the last step's parameters", stacklevel=2)
        else:
            model.load_state_dict(best_state)
    return TrainResult(
        step=trainer.step,
        best_step=trainer.best_step,
        best_validation=trainer.best_validation,
        out_dir=out_dir,
        skipped_steps=trainer.skipped_steps,
        reloads=trainer.reloads,
        lowest_validation=trainer.best_any,
    )


def train_from_config(path: PathLike, resume: bool = False, out_dir: Optional[PathLike] = None) -> TrainResult:
    """Build the toy problem of a YAML configuration, train it and report transfer metrics.

    Parameters
    ----------
    path : path
        YAML file with the sections of :class:`TrainConfig` (unknown keys are errors).
    resume : bool
        Continue a killed run in the same output folder.
    out_dir : path, optional
        Output folder; defaults to ``run.out_dir`` of the configuration.

    Returns
    -------
    TrainResult
        ``metrics`` holds :class:`~trade_md.problems.TransferMetrics` at
        ``problem.evaluation`` (also written to ``out_dir/metrics.json``).
    """
    config = load_yaml(TrainConfig, path)
    folder = out_dir if out_dir is not None else config.run.out_dir
    if folder is None:
        raise ConfigError("no output folder: set run.out_dir in the configuration or pass out_dir")
    problem = build_problem(config.problem, config.flow)
    result = train(problem.model, problem.target, problem.data, config, folder, resume=resume)
    metrics = tuple(
        transfer_metrics(problem.model, problem.target, c, config.problem.n_evaluation, seed=config.problem.seed + 1)
        for c in config.problem.evaluation
    )
    atomic_write_text(Path(folder) / "metrics.json", json.dumps([m.to_dict() for m in metrics], indent=2))
    return dataclasses.replace(result, metrics=metrics)
