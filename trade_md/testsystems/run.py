"""A toy run: train a toy problem from one YAML file and report exact transfer metrics.

The toy counterpart of :mod:`trade_md.workflow` (CLI: ``trade-md train
--config workflows/toy_multiwell.yaml``). The file has the sections of
:class:`~trade_md.train.TrainConfig` (``transfer``, ``optim``, ``run``) plus
``problem`` and ``flow``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from .._io import atomic_write_text
from ..distributed import World
from ..config import ConfigError, load_yaml
from ..flows import FlowConfig
from ..train import TrainConfig, TrainResult, train
from .harness import ProblemConfig, TransferMetrics, build_problem, transfer_metrics

__all__ = ["ToyRunConfig", "ToyRunResult", "train_from_config", "run_example"]

PathLike = Union[str, os.PathLike]


@dataclass
class ToyRunConfig(TrainConfig):
    """A :class:`~trade_md.train.TrainConfig` plus the toy problem and the flow it trains.

    Parameters
    ----------
    problem : ProblemConfig
        Target, data and evaluation conditions (YAML section ``problem``).
    flow : FlowConfig
        Architecture of the model (YAML section ``flow``).
    """

    problem: ProblemConfig = field(default_factory=ProblemConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)


@dataclass(frozen=True)
class ToyRunResult(TrainResult):
    """A :class:`~trade_md.train.TrainResult` with the exact transfer metrics after training.

    Attributes
    ----------
    metrics : tuple of TransferMetrics
        One per condition of ``problem.evaluation``.
    """

    metrics: tuple[TransferMetrics, ...] = ()


def run_example(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                run: Callable[[argparse.Namespace], str]) -> int:
    """Command line of an example experiment: parse ``argv``, print what ``run`` returns; exit code.

    Bad input (a missing or malformed configuration, a bad option value: ValueError, OSError) is one
    line ``<prog>: error: ...`` and code 2, Ctrl-C one line and code 130 (the runs resume), as with
    ``trade-md``.
    """
    args = parser.parse_args(argv)
    try:
        print(run(args))
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # ConfigError is a ValueError
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


def experiment_folder(config, config_class: type, out_dir: Optional[PathLike] = None) -> tuple:
    """``(config, folder)`` of an example experiment: ``config`` loaded from YAML unless it is already a
    ``config_class``; the folder (created) is ``out_dir`` or the configuration's ``run.out_dir``."""
    if not isinstance(config, config_class):
        config = load_yaml(config_class, config)
    folder = out_dir if out_dir is not None else config.run.out_dir
    if folder is None:
        raise ConfigError("no output folder: set run.out_dir in the configuration or pass out_dir")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return config, folder


def train_from_config(path: PathLike, resume: bool = False, out_dir: Optional[PathLike] = None) -> ToyRunResult:
    """Build the toy problem of a YAML configuration, train it and report transfer metrics.

    Parameters
    ----------
    path : path
        YAML file with the sections of :class:`ToyRunConfig` (unknown keys are errors).
    resume : bool
        Continue a killed run in the same output folder.
    out_dir : path, optional
        Output folder; defaults to ``run.out_dir`` of the configuration.

    Returns
    -------
    ToyRunResult
        ``metrics`` at ``problem.evaluation`` (also written to ``out_dir/metrics.json``);
        the evaluation conditions never influence training or model selection.
    """
    config = load_yaml(ToyRunConfig, path)
    folder = out_dir if out_dir is not None else config.run.out_dir
    if folder is None:
        raise ConfigError("no output folder: set run.out_dir in the configuration or pass out_dir")
    problem = build_problem(config.problem, config.flow)
    result = train(problem.model, problem.target, problem.data, config, folder, resume=resume)
    metrics = tuple(
        transfer_metrics(problem.model, problem.target, c, config.problem.n_evaluation, seed=config.problem.seed + 1)
        for c in config.problem.evaluation
    )
    if World.from_env().is_main:  # under torchrun, rank 0 alone writes outputs
        atomic_write_text(Path(folder) / "metrics.json", json.dumps([m.to_dict() for m in metrics], indent=2))
    return ToyRunResult(**{f.name: getattr(result, f.name) for f in fields(result)}, metrics=metrics)
