"""What a training method is, and the registry that finds one by the name in ``transfer.method``.

A training method is the transfer term of the loss: how the model learns
the conditions other than ``c0``. The trainer adds it, with the curriculum's
weight, to the boundary term (:mod:`trade_md.methods.boundary`). A method is
a :class:`TrainingMethod` subclass with a ``name``; the decorator
:func:`register_method` makes ``transfer.method: <name>`` find it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

from torch import Tensor

from .. import validators
from ..density import CONDITIONS, ConditionalDensity, model_like
from ..losses import log_uniform_conditions
from ..targets import Target, energy_free_target
from ..training_data import TrainingData

if TYPE_CHECKING:
    from ..train_config import TransferConfig

__all__ = [
    "MethodSetup",
    "TransferTerm",
    "TrainingMethod",
    "DrawnConditionsMethod",
    "ESS_COLUMNS",
    "ess_logs",
    "register_method",
    "method_class",
    "method_names",
]

#: Columns of the methods that log the relative SNIS ESS over the conditions of a step.
ESS_COLUMNS: tuple[str, ...] = ("ess_mean", "ess_min")


@dataclass(frozen=True)
class MethodSetup:
    """What the boundary term and a training method are built from (the trainer makes one).

    Attributes
    ----------
    model : ConditionalDensity
        The model being trained; its parameters set dtype and device.
    target : Target or None
        ``q(x|c)``; None only where neither the boundary nor the method needs it.
    data : TrainingData or None
        Boundary samples at ``c0`` (training and held-out validation parts).
    reference : float
        ``c0``.
    transfer : TransferConfig
    batch_size : int
        Boundary batch and number of gradient-loss evaluation points per step.
    seed : int
        The run's seed (validation draws use ``seed + 1``).
    """

    model: ConditionalDensity
    target: Optional[Target]
    data: Optional[TrainingData]
    reference: float
    transfer: "TransferConfig"
    batch_size: int
    seed: int

    @property
    def like(self) -> Tensor:
        """An empty tensor with the model's dtype and device."""
        return model_like(self.model)

    @property
    def train_x(self) -> Optional[Tensor]:
        """Training samples ``(N, ...)`` at ``c0``, or None without data."""
        return None if self.data is None else self.data.train.x


@dataclass(frozen=True)
class TransferTerm:
    """One step's transfer term.

    Attributes
    ----------
    loss : 0-d tensor
        Differentiable w.r.t. the model's parameters.
    logs : dict of str to float
        Values of the method's :meth:`~TrainingMethod.columns` for the CSV log.
    """

    loss: Tensor
    logs: dict


class TrainingMethod(abc.ABC):
    """The transfer term of one training method.

    Subclasses set the class attributes below, implement :meth:`loss`, and
    override :meth:`columns`, :meth:`check_config` and the state methods when
    they log columns, have settings of their own or keep state between steps
    (which checkpoints then hold).

    Attributes
    ----------
    name : str
        The value of ``transfer.method`` that selects the method.
    transfers : bool
        Whether the method has a transfer term (False: boundary only, no curriculum).
    needs_target : bool
        Whether it needs ``q(x|c)``.
    energy_free : bool
        Whether it supports ``transfer.energy_free`` (the model's density at
        ``c0`` standing in for ``q``; then it needs no target).
    target : Target or None
        What the method's loss uses as ``q``: the setup's target, or the
        energy-free surrogate.
    """

    name: ClassVar[str]
    transfers: ClassVar[bool] = True
    needs_target: ClassVar[bool] = True
    energy_free: ClassVar[bool] = False

    def __init__(self, setup: MethodSetup) -> None:
        self.setup = setup
        if setup.transfer.energy_free:
            self.target = energy_free_target(setup.model, setup.reference, _condition_of(setup))
        else:
            self.target = setup.target
            if self.needs_target and self.target is None:
                raise ValueError(f"method {self.name!r} needs a target")

    @classmethod
    def check_config(cls, transfer: "TransferConfig") -> None:
        """Raise ValueError (naming the key) for settings of ``transfer`` this method cannot use."""
        if transfer.energy_free and not cls.energy_free:
            raise ValueError(f"transfer.energy_free applies to the TRADE methods only, not to {cls.name!r}")

    def columns(self) -> list[str]:
        """Names of the CSV columns this method logs (after the trainer's own)."""
        return []

    @abc.abstractmethod
    def loss(self, step: int, low: float, high: float) -> Optional[TransferTerm]:
        """The transfer term of step ``step`` (0-based) over the current range ``[low, high]``.

        Returns None when there is no term this step (e.g. the range is still a point).
        """

    def state_dict(self) -> dict:
        """The method's state between steps, for checkpoints (empty if it keeps none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (nothing to restore if the method keeps no state)."""


class DrawnConditionsMethod(TrainingMethod):
    """A method trained at conditions drawn afresh each step; subclasses implement :meth:`loss_at`.

    Each step draws ``transfer.conditions_per_step`` conditions log-uniformly
    from the current range; there is no term while the range is a single
    point (during the warm-up).
    """

    def loss(self, step: int, low: float, high: float) -> Optional[TransferTerm]:
        if low == high:
            return None
        conditions = log_uniform_conditions(low, high, self.setup.transfer.conditions_per_step, self.setup.like)
        return self.loss_at(conditions)

    @abc.abstractmethod
    def loss_at(self, conditions: Tensor) -> TransferTerm:
        """The transfer term at the conditions ``(M,)`` drawn for this step."""


def ess_logs(ess: Tensor) -> dict:
    """The :data:`ESS_COLUMNS` values of relative ESS per condition ``ess`` ``(M,)``."""
    return {"ess_mean": float(ess.mean()), "ess_min": float(ess.min())}


def _condition_of(setup: MethodSetup) -> str:
    """The condition (``"temperature"`` or ``"beta"``): the target's, else the model's."""
    if setup.target is not None:
        return setup.target.condition
    condition = getattr(setup.model, "condition", None)
    if condition not in CONDITIONS:
        raise ValueError("energy-free training without a target needs a model with a condition "
                         f"{' or '.join(map(repr, CONDITIONS))} (a ConditionalDensity), got {condition!r}")
    return condition


_REGISTRY: dict[str, type[TrainingMethod]] = {}


def register_method(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    """Class decorator: make ``transfer.method: <cls.name>`` select ``cls``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"a training method named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> tuple[str, ...]:
    """Names of the registered methods, in registration order."""
    return tuple(_REGISTRY)


def method_class(name: str) -> type[TrainingMethod]:
    """The method registered as ``name`` (ValueError naming ``transfer.method`` otherwise)."""
    return _REGISTRY[validators.choice("transfer.method", name, method_names())]
