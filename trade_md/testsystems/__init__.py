"""Toy targets with exact answers, their harness and the models and runs built on them.

Like pymbar's ``testsystems``: targets whose ``log Z(c)`` and samplers are
exact, so that transfer can be measured without MD.

========================  =======================================================================================
:mod:`.multiwell`         :class:`MultiWell`, ``u(x) = sum_i (x_i^4 - 4 x_i^2)``, condition ``"temperature"``
:mod:`.power`             :class:`GaussianMixturePower`, :class:`TwoMoonsPosterior`, condition ``"beta"``
:mod:`.phi4`              :class:`Phi4Lattice`, phi^4 on a periodic lattice, condition ``"kappa"``; exact 2x2 moments
:mod:`.lattice_mcmc`      checkerboard Metropolis for it, observables with jackknife errors, autocorrelation time
:mod:`.coupling`          :class:`CouplingFlow`, the conditional flow over ``kappa``
:mod:`.phi4_experiment`   the paper's phi^4 experiment (TRADE vs NLL over kappa against Metropolis)
:mod:`.calibration`       coverage of credible regions of tempered posteriors (two-moons experiment)
:mod:`.baseline`          :class:`ScaledBaseFlow`, the temperature-steerable (scaled-base) baseline model
:mod:`.harness`           :class:`ProblemConfig`, :func:`build_problem`; :func:`transfer_metrics` (exact KL, ESS)
:mod:`.run`               :class:`ToyRunConfig`, :func:`train_from_config` (``trade-md train --config``)
========================  =======================================================================================

A new toy target is a :class:`~trade_md.targets.BoltzmannTarget` or
:class:`~trade_md.targets.PowerTarget` subclass with ``log_Z(c)`` and
``sample(n, c, generator)`` (the :class:`ToyTarget` protocol), plus its name
in :data:`PROBLEMS`.
"""

from .baseline import ScaledBaseFlow
from .coupling import CouplingFlow
from .harness import PROBLEMS, Problem, ProblemConfig, ToyTarget, TransferMetrics, build_problem, transfer_metrics
from .lattice_mcmc import integrated_autocorrelation, lattice_observables, metropolis
from .multiwell import MultiWell
from .phi4 import Phi4Lattice
from .power import GaussianMixturePower, TwoMoonsPosterior
from .run import ToyRunConfig, ToyRunResult, train_from_config

__all__ = [
    "MultiWell",
    "GaussianMixturePower",
    "TwoMoonsPosterior",
    "ToyTarget",
    "ScaledBaseFlow",
    "Phi4Lattice",
    "CouplingFlow",
    "metropolis",
    "lattice_observables",
    "integrated_autocorrelation",
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
