"""The harness of the toy transfer problems: build one from a config, measure transfer exactly.

:func:`build_problem` makes the trainer's three inputs (a model, a
:class:`ToyTarget`, :class:`~trade_md.training_data.TrainingData` of exact
samples at ``c0``) from a :class:`ProblemConfig`; :func:`transfer_metrics`
scores a trained model at any condition with the exact ``log Z`` and exact
samples (KL, ESS, NLL).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import torch
from torch import Tensor

from .. import validators
from ..density import ConditionalDensity, model_like
from ..flows import ConditionalFlow, ConditionedFlow, FlowConfig
from ..losses import snis
from ..targets import Target
from ..training_data import TrainingData
from .baseline import ScaledBaseFlow
from .multiwell import MultiWell
from .power import GaussianMixturePower, TwoMoonsPosterior

__all__ = ["ToyTarget", "ProblemConfig", "Problem", "PROBLEMS", "build_problem", "TransferMetrics", "transfer_metrics"]

#: Toy problems :func:`build_problem` knows.
PROBLEMS: tuple[str, ...] = ("multiwell", "gmm_power", "two_moons")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@runtime_checkable
class ToyTarget(Target, Protocol):
    """A :class:`~trade_md.targets.Target` with exact answers: ``log Z(c)`` and an exact sampler."""

    def log_Z(self, c: float) -> float:
        """``log int q(x|c) dx`` at a scalar condition ``c``."""

    def sample(self, n: int, c: float, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` exact samples of ``q(.|c) / Z(c)``, ``(n, dim)`` in the default dtype."""


@dataclass
class ProblemConfig:
    """A toy transfer problem with exact ``log Z``.

    Parameters
    ----------
    name : {"multiwell", "gmm_power", "two_moons"}
        Target: :class:`MultiWell` (condition ``"temperature"``),
        :class:`GaussianMixturePower` or :class:`TwoMoonsPosterior`
        (condition ``"beta"``).
    dim : int
        Dimension of the multi-well (the others are 2-D).
    reference : float
        ``c0``, the only condition with training data.
    n_train, n_validation : int
        Exact samples at ``c0`` for training and for validation.
    evaluation : tuple of float
        Conditions at which :func:`~trade_md.testsystems.train_from_config` reports
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
        validators.choice("problem.name", self.name, PROBLEMS)
        validators.choice("problem.dtype", self.dtype, _DTYPES)
        self.evaluation = tuple(validators.positive_number("problem.evaluation", c) for c in self.evaluation)
        for name in ("dim", "n_train", "n_evaluation"):
            setattr(self, name, validators.positive_int(f"problem.{name}", getattr(self, name)))
        self.n_validation = validators.non_negative_int("problem.n_validation", self.n_validation)
        self.reference = validators.positive_number("problem.reference", self.reference)


@dataclass
class Problem:
    """What :func:`build_problem` returns: the trainer's three inputs."""

    model: ConditionalDensity
    target: ToyTarget
    data: TrainingData


def _make_target(config: ProblemConfig) -> ToyTarget:
    if config.name == "multiwell":
        return MultiWell(config.dim)
    if config.name == "gmm_power":
        return GaussianMixturePower()
    return TwoMoonsPosterior()


def build_problem(config: ProblemConfig, flow: Optional[FlowConfig] = None) -> Problem:
    """Build the model, target and training data of a toy problem.

    The model is a :class:`~trade_md.flows.ConditionedFlow` over ``"real"``
    dimensions with the target's condition (``"temperature"`` for the
    multi-well, ``"beta"`` otherwise), initialized under ``config.seed`` (a
    :class:`ScaledBaseFlow` around it with ``config.scaled_base_only``); the
    data are exact samples at ``config.reference``.

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
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        flow_model = ConditionalFlow(["real"] * dim, context_dim=1, config=flow or FlowConfig()).to(dtype)
    model: ConditionalDensity = ConditionedFlow(flow_model, reference=config.reference, condition=target.condition)
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


def transfer_metrics(model: ConditionalDensity, target: ToyTarget, c: float, n: int, seed: int = 0) -> TransferMetrics:
    """Measure a model against a toy target with exact ``log Z`` and sampler at condition ``c``.

    Parameters
    ----------
    model : ConditionalDensity
    target : ToyTarget
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
