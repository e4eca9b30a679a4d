"""Training data: samples at the boundary conditions, split into training and validation parts.

The trainer (:func:`trade_md.train.train`) takes a :class:`TrainingData`;
molecular runs build it from MD frames (:mod:`trade_md.workflow`), toy runs
from exact samples (:mod:`trade_md.testsystems`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .density import as_condition

__all__ = ["BoundaryData", "TrainingData"]


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
