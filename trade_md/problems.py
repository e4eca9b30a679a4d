"""Training data containers, toy transfer problems built from a config, and transfer metrics.

The trainer (:mod:`trade_md.train`) takes objects: a conditional model, a
:class:`~trade_md.targets.Target` and :class:`TrainingData`. For toy targets
with exact ``log Z`` this module builds all three from a :class:`ProblemConfig`
(:func:`build_problem`) and measures transfer exactly
(:func:`transfer_metrics`). Molecular problems build the same three objects
from a ``BoltzmannGenerator``, a ``BoltzmannTarget`` and MD frames.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .flows import ConditionalFlow, ConditionedFlow, FlowConfig
from .losses import model_like, snis
from .targets import (
    GaussianMixturePower,
    MultiWell,
    Target,
    TwoMoonsPosterior,
    as_condition,
)

__all__ = [
    "BoundaryData",
    "TrainingData",
    "ProblemConfig",
    "Problem",
    "PROBLEMS",
    "ScaledBaseFlow",
    "build_problem",
    "TransferMetrics",
    "transfer_metrics",
]

#: Toy problems :func:`build_problem` knows.
PROBLEMS: tuple[str, ...] = ("multiwell", "gmm_power", "two_moons")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class BoundaryData:
    """Samples at known conditions: the boundary of the transfer problem.

    Attributes
    ----------
    x : (N, ...) tensor
        Samples (MD frames, toy samples).
    condition : (N,) tensor
        Condition of every sample (temperature in K, or beta).
    """

    x: Tensor
    condition: Tensor

    def __post_init__(self) -> None:
        if self.x.dim() < 1 or self.x.shape[0] < 1:
            raise ValueError(f"x must have a non-empty batch dimension, got shape {tuple(self.x.shape)}")
        self.condition = as_condition(self.condition, self.x)

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, like: Tensor) -> "BoundaryData":
        """Copy onto ``like``'s dtype and device."""
        return BoundaryData(self.x.to(like), self.condition.to(like))


@dataclass
class TrainingData:
    """Training and held-out validation samples (validation picks the best checkpoint).

    Attributes
    ----------
    train : BoundaryData
    validation : BoundaryData or None
        Held-out samples at the boundary conditions; never samples at the
        conditions the transfer is evaluated at.
    """

    train: BoundaryData
    validation: Optional[BoundaryData] = None

    @classmethod
    def split(
        cls, x: Tensor, condition, validation_fraction: float, generator: Optional[torch.Generator] = None
    ) -> "TrainingData":
        """Randomly split samples ``x`` (N, ...) at ``condition`` (scalar or (N,)).

        Parameters
        ----------
        validation_fraction : float
            Fraction in ``[0, 1)`` held out for validation.
        """
        if not 0 <= validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
        c = as_condition(condition, x)
        order = torch.randperm(x.shape[0], generator=generator).to(x.device)
        n_val = int(round(validation_fraction * x.shape[0]))
        val, train = order[:n_val], order[n_val:]
        validation = BoundaryData(x[val], c[val]) if n_val else None
        return cls(BoundaryData(x[train], c[train]), validation)

    def to(self, like: Tensor) -> "TrainingData":
        """Copy onto ``like``'s dtype and device."""
        return TrainingData(self.train.to(like), None if self.validation is None else self.validation.to(like))


@dataclass
class ProblemConfig:
    """A toy transfer problem with exact ``log Z``.

    Parameters
    ----------
    name : {"multiwell", "gmm_power", "two_moons"}
        Target: :class:`~trade_md.targets.MultiWell` (condition ``T``),
        :class:`~trade_md.targets.GaussianMixturePower` or
        :class:`~trade_md.targets.TwoMoonsPosterior` (condition ``beta``).
    dim : int
        Dimension of the multi-well (the others are 2-D).
    reference : float
        ``c0``, the only condition with training data.
    n_train, n_validation : int
        Exact samples at ``c0`` for training and for validation.
    evaluation : tuple of float
        Conditions at which :func:`~trade_md.train.train_from_config` reports
        transfer metrics after training (never used for model selection).
    n_evaluation : int
        Samples per evaluation condition.
    scaled_base_only : bool
        TSF-like model: the flow's transform is evaluated at ``c0`` and only
        the width of its base distribution follows the condition.
    dtype : {"float32", "float64"}
    seed : int
        Seed of the data and of the model's initialization.
    """

    name: str = "multiwell"
    dim: int = 2
    reference: float = 1.0
    n_train: int = 20000
    n_validation: int = 2000
    evaluation: tuple[float, ...] = (0.5, 1.5)
    n_evaluation: int = 20000
    scaled_base_only: bool = False
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in PROBLEMS:
            raise ValueError(f"problem name must be one of {PROBLEMS}, got {self.name!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")
        self.evaluation = tuple(float(c) for c in self.evaluation)
        for name in ("dim", "n_train", "n_evaluation"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if int(self.n_validation) != self.n_validation or self.n_validation < 0:
            raise ValueError(f"n_validation must be a non-negative integer, got {self.n_validation!r}")
        if not (math.isfinite(self.reference) and self.reference > 0):
            raise ValueError(f"reference must be finite and > 0, got {self.reference!r}")


class ScaledBaseFlow(nn.Module):
    """TSF-like model: a :class:`ConditionedFlow` whose transform is frozen at ``c0``.

    ``log p(x|c) = log N_c(z) + log|dz/dx|`` with ``z = f(x; c0)``: only the
    base width (``sqrt(T_eff / T0)``) depends on the condition, as in
    temperature-steerable flows. Meant for ``"real"`` (toy) dimensions: the
    domain masking of :meth:`ConditionalFlow.log_prob` is not applied.

    Parameters
    ----------
    model : ConditionedFlow
    """

    def __init__(self, model: ConditionedFlow) -> None:
        super().__init__()
        self.model = model

    def _log_t(self, c, batch: int, like: Tensor) -> Tensor:
        c = c.to(like.dtype) if isinstance(c, Tensor) else c
        return self.model.context(c, batch=batch).to(like)[:, 0]

    def log_prob(self, x: Tensor, c) -> Tensor:
        """Log-density of ``x`` (B, D) at condition(s) ``c`` (scalar or (B,)), (B,)."""
        log_t = self._log_t(c, x.shape[0], x)
        z, ladj = self.model.flow.inverse(x, torch.zeros_like(log_t)[:, None])
        return self.model.flow.base.log_prob(z, log_t) + ladj

    def sample(self, n: int, c) -> tuple[Tensor, Tensor]:
        """``n`` samples at condition(s) ``c`` with their log-density, ``(n, D)`` and ``(n,)``."""
        log_t = self._log_t(c, n, model_like(self.model))
        z = self.model.flow.base.rsample(log_t)
        x, ladj = self.model.flow.forward(z, torch.zeros_like(log_t)[:, None])
        return x, self.model.flow.base.log_prob(z, log_t) - ladj


@dataclass
class Problem:
    """What :func:`build_problem` returns: the trainer's three inputs."""

    model: nn.Module
    target: Target
    data: TrainingData


def _make_target(config: ProblemConfig) -> Target:
    if config.name == "multiwell":
        return MultiWell(config.dim)
    if config.name == "gmm_power":
        return GaussianMixturePower()
    return TwoMoonsPosterior()


def build_problem(config: ProblemConfig, flow: Optional[FlowConfig] = None) -> Problem:
    """Build the model, target and training data of a toy problem.

    The model is a :class:`ConditionedFlow` over ``"real"`` dimensions
    (temperature kind for the multi-well, power kind otherwise), initialized
    under ``config.seed``; the data are exact samples at ``config.reference``.

    Parameters
    ----------
    config : ProblemConfig
    flow : FlowConfig, optional
        Flow architecture (defaults to ``FlowConfig()``).
    """
    target = _make_target(config)
    dtype = _DTYPES[config.dtype]
    generator = torch.Generator().manual_seed(config.seed)
    x = target.sample(config.n_train + config.n_validation, config.reference, generator).to(dtype)
    data = TrainingData.split(x, config.reference, config.n_validation / x.shape[0], generator)
    dim = x.shape[1]
    kind = "temperature" if target.condition == "temperature" else "power"
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        flow_model = ConditionalFlow(["real"] * dim, context_dim=1, config=flow or FlowConfig()).to(dtype)
    model: nn.Module = ConditionedFlow(flow_model, reference=config.reference, kind=kind)
    if config.scaled_base_only:
        model = ScaledBaseFlow(model)
    return Problem(model=model, target=target, data=data)


@dataclass(frozen=True)
class TransferMetrics:
    """Exact transfer quality of a model at one condition.

    Attributes
    ----------
    condition : float
    kl : float
        ``KL(p_true || p_theta)`` in nats, from exact samples and the exact ``log Z``.
    kl_stderr : float
        Monte-Carlo standard error of ``kl``.
    ess : float
        Relative effective sample size of importance weights ``q / p_theta``
        of model samples, in ``[0, 1]``.
    nll : float
        ``-E_true[log p_theta]`` in nats.
    """

    condition: float
    kl: float
    kl_stderr: float
    ess: float
    nll: float

    def to_dict(self) -> dict:
        """Plain-float dictionary (for JSON)."""
        return dataclasses.asdict(self)


def transfer_metrics(model, target, c: float, n: int, seed: int = 0) -> TransferMetrics:
    """Measure a model against a toy target with exact ``log Z`` and sampler at condition ``c``.

    Parameters
    ----------
    model : conditional model
    target : toy target with ``log_Z(c)`` and ``sample(n, c, generator)``
    c : float
    n : int
        Exact samples for the KL and model samples for the ESS.
    seed : int
        Seeds both; the global torch RNG is left untouched.
    """
    like = model_like(model)
    x = target.sample(n, c, torch.Generator().manual_seed(seed)).to(like)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        log_p = model.log_prob(x, c)
        diff = target.log_q(x, c) - target.log_Z(c) - log_p
        xs, log_ps = model.sample(n, c)
        ess = snis(target.log_q(xs, c) - log_ps, torch.zeros_like(log_ps)).ess
    return TransferMetrics(
        condition=float(c),
        kl=float(diff.mean()),
        kl_stderr=float(diff.std() / math.sqrt(n)),
        ess=float(ess),
        nll=float(-log_p.mean()),
    )
