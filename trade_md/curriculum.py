"""The curriculum of a training run, as pure functions of the ``transfer`` settings and the step.

Steps count from 0. The transfer term is off for ``warmup_steps`` steps of
boundary-only training; then its weight rises linearly to
``transfer.weight`` over ``ramp_steps`` steps while the condition range
widens log-linearly from the point ``c0`` to ``transfer.condition_range``
over ``widen_steps`` steps. A method without a transfer term (``nll``) has no
curriculum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import ConfigError
from .methods import method_class

if TYPE_CHECKING:
    from .train_config import OptimConfig, TransferConfig

__all__ = ["curriculum_steps", "check_curriculum", "transfer_weight", "condition_range", "curriculum_done"]


def curriculum_steps(transfer: "TransferConfig") -> int:
    """Steps until the transfer term has its full weight and range: ``warmup + max(ramp, widen)`` (0 for ``nll``)."""
    if not method_class(transfer.method).transfers:
        return 0
    return transfer.warmup_steps + max(transfer.ramp_steps, transfer.widen_steps)


def check_curriculum(transfer: "TransferConfig", optim: "OptimConfig") -> None:
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


def _progress(steps: int, after_warmup: int) -> float:
    """Fraction in ``[0, 1]`` of a phase of ``steps`` steps done at 0-based step ``after_warmup`` of it."""
    return 1.0 if steps == 0 else min(1.0, (after_warmup + 1) / steps)


def transfer_weight(transfer: "TransferConfig", step: int) -> float:
    """Weight of the transfer term at ``step`` (before any back-off): 0, a linear ramp, then ``transfer.weight``."""
    if not method_class(transfer.method).transfers or step < transfer.warmup_steps:
        return 0.0
    return transfer.weight * _progress(transfer.ramp_steps, step - transfer.warmup_steps)


def condition_range(transfer: "TransferConfig", reference: float, step: int) -> tuple[float, float]:
    """The range ``(low, high)`` of conditions at ``step``: ``(c0, c0)`` in the warm-up, widening log-linearly."""
    done = 0.0 if step < transfer.warmup_steps else _progress(transfer.widen_steps, step - transfer.warmup_steps)
    low, high = transfer.condition_range
    return reference * (low / reference) ** done, reference * (high / reference) ** done


def curriculum_done(transfer: "TransferConfig", step: int) -> bool:
    """Whether ``step`` (0-based) has the full weight and range (always, without a transfer term)."""
    return step >= curriculum_steps(transfer) - 1
