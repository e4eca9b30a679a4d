"""Settings of a training run: ``transfer`` (what is learned), ``optim`` and ``run`` (how).

These three sections make a :class:`TrainConfig`, which :func:`trade_md.train.train`
takes; a molecular workflow (:mod:`trade_md.workflow`) and a toy run
(:mod:`trade_md.testsystems`) each wrap them with the settings of their own
problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import validators
from .config import ConfigError
from .curriculum import check_curriculum
from .losses import GradientLossConfig
from .methods import BOUNDARIES, method_class

__all__ = ["TransferConfig", "OptimConfig", "RunConfig", "TrainConfig"]


@dataclass
class TransferConfig:
    """What is learned: boundary term, transfer method and curriculum.

    Parameters
    ----------
    method : str
        A registered training method (:mod:`trade_md.methods`): ``trade_grid``,
        ``trade_continuous``, ``nll``, ``reweighting`` or ``reverse_kl``.
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
        method = method_class(self.method)
        validators.choice("transfer.boundary", self.boundary, tuple(BOUNDARIES))
        low, high = validators.value_range("transfer.condition_range", self.condition_range, positive=True)
        self.condition_range = (low, high)
        if self.reference is not None:
            self.reference = validators.positive_number("transfer.reference", self.reference)
            if not low <= self.reference <= high:
                raise ValueError(f"transfer.reference {self.reference} is outside transfer.condition_range "
                                 f"{self.condition_range}")
        for name in ("warmup_steps", "ramp_steps", "widen_steps"):
            setattr(self, name, validators.non_negative_int(f"transfer.{name}", getattr(self, name)))
        for name in ("grid_size", "refresh_every", "snis_samples", "conditions_per_step"):
            setattr(self, name, validators.positive_int(f"transfer.{name}", getattr(self, name)))
        for name in ("weight", "boundary_weight", "causality_eps"):
            setattr(self, name, validators.non_negative_number(f"transfer.{name}", getattr(self, name)))
        method.check_config(self)


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
        self.steps = validators.positive_int("optim.steps", self.steps)
        self.batch_size = validators.positive_int("optim.batch_size", self.batch_size)
        self.lr = validators.positive_number("optim.lr", self.lr)
        self.pct_start = validators.fraction("optim.pct_start", self.pct_start)
        self.weight_decay = validators.non_negative_number("optim.weight_decay", self.weight_decay)
        self.grad_clip = validators.positive_number("optim.grad_clip", self.grad_clip)
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
        for name in ("checkpoint_every", "validate_every", "spike_window", "max_skips"):
            setattr(self, name, validators.positive_int(f"run.{name}", getattr(self, name)))
        if self.threads is not None:
            self.threads = validators.positive_int("run.threads", self.threads)
        self.spike_factor = validators.positive_number("run.spike_factor", self.spike_factor)
        self.divergence_tolerance = validators.positive_number("run.divergence_tolerance", self.divergence_tolerance)
        if not 0 < validators.positive_number("run.backoff", self.backoff) <= 1:
            raise ValueError(f"run.backoff must be in (0, 1], got {self.backoff!r}")


@dataclass
class TrainConfig:
    """The settings of a training run (YAML sections ``transfer``, ``optim``, ``run``).

    The curriculum must fit into ``optim.steps`` (:func:`~trade_md.curriculum.check_curriculum`).
    """

    transfer: TransferConfig = field(default_factory=TransferConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_curriculum(self.transfer, self.optim)
