"""The boundary term at ``c0`` and the validation loss that selects the best model.

``transfer.boundary`` picks one:

``nll``         negative log-likelihood of the training data; validation: NLL of the held-out data
``reverse_kl``  data-free backward KL at ``c0`` (needs forces); validation: the same on fixed draws
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from ..losses import nll, reverse_kl
from .base import MethodSetup

__all__ = ["Boundary", "NLLBoundary", "ReverseKLBoundary", "BOUNDARIES"]


class Boundary(abc.ABC):
    """The boundary term of the loss and the validation loss (nats), built from a :class:`MethodSetup`."""

    name: ClassVar[str]

    def __init__(self, setup: MethodSetup) -> None:
        self.setup = setup

    @abc.abstractmethod
    def loss(self) -> Tensor:
        """This step's boundary term (0-d, differentiable)."""

    @abc.abstractmethod
    def validation_loss(self) -> float:
        """The validation loss (nats) of the model as it is; leaves the global RNG as the training needs it."""


class NLLBoundary(Boundary):
    """NLL of a random batch of the training data at ``c0``; validation on the held-out part."""

    name = "nll"

    def __init__(self, setup: MethodSetup) -> None:
        if setup.data is None or setup.data.validation is None:
            raise ValueError("boundary 'nll' needs training data with held-out validation data")
        super().__init__(setup)

    def loss(self) -> Tensor:
        train = self.setup.data.train
        index = torch.randint(len(train), (self.setup.batch_size,)).to(train.x.device)
        return nll(self.setup.model, train.x[index], train.condition[index])

    def validation_loss(self) -> float:
        """Mean ``-log p`` of the held-out samples (in chunks of 4 batches)."""
        val, chunk = self.setup.data.validation, 4 * self.setup.batch_size
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(val), chunk):
                log_p = self.setup.model.log_prob(val.x[start:start + chunk], val.condition[start:start + chunk])
                total += float(log_p.sum())
        return -total / len(val)


class ReverseKLBoundary(Boundary):
    """Backward KL at ``c0`` from model samples (data-free); validation on 4 batches drawn with ``seed + 1``."""

    name = "reverse_kl"

    def __init__(self, setup: MethodSetup) -> None:
        if setup.target is None:
            raise ValueError("boundary 'reverse_kl' needs a target")
        super().__init__(setup)

    def loss(self) -> Tensor:
        s = self.setup
        return reverse_kl(s.model, s.target, s.batch_size, s.reference)

    def validation_loss(self) -> float:
        s = self.setup
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(s.seed + 1)
            return float(reverse_kl(s.model, s.target, 4 * s.batch_size, s.reference))


#: The boundary terms by name (``transfer.boundary``).
BOUNDARIES: dict[str, type[Boundary]] = {cls.name: cls for cls in (NLLBoundary, ReverseKLBoundary)}
