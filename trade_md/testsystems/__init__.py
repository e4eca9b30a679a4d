"""Toy targets with exact answers, their harness and the models and runs built on them.

Like pymbar's ``testsystems``: targets whose ``log Z(c)`` and samplers are
exact, so that transfer can be measured without MD.

==================  =======================================================================================
:mod:`.multiwell`   :class:`MultiWell`, ``u(x) = sum_i (x_i^4 - 4 x_i^2)``, condition ``"temperature"``
:mod:`.power`       :class:`GaussianMixturePower`, :class:`TwoMoonsPosterior`, condition ``"beta"``
:mod:`.baseline`    :class:`ScaledBaseFlow`, the temperature-steerable (scaled-base) baseline model
:mod:`.harness`     :class:`ProblemConfig`, :func:`build_problem`; :func:`transfer_metrics` (exact KL, ESS)
:mod:`.run`         :class:`ToyRunConfig`, :func:`train_from_config` (``trade-md train --config``)
==================  =======================================================================================

A new toy target is a :class:`~trade_md.targets.BoltzmannTarget` or
:class:`~trade_md.targets.PowerTarget` subclass with ``log_Z(c)`` and
``sample(n, c, generator)`` (the :class:`ToyTarget` protocol), plus its name
in :data:`PROBLEMS`.
"""

from .baseline import ScaledBaseFlow
from .harness import PROBLEMS, Problem, ProblemConfig, ToyTarget, TransferMetrics, build_problem, transfer_metrics
from .multiwell import MultiWell
from .power import GaussianMixturePower, TwoMoonsPosterior
from .run import ToyRunConfig, ToyRunResult, train_from_config

__all__ = [
    "MultiWell",
    "GaussianMixturePower",
    "TwoMoonsPosterior",
    "ToyTarget",
    "ScaledBaseFlow",
    "PROBLEMS",
    "ProblemConfig",
    "Problem",
    "build_problem",
    "TransferMetrics",
    "transfer_metrics",
    "ToyRunConfig",
    "ToyRunResult",
    "train_from_config",
]
