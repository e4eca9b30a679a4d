"""Calibration of a tempered-posterior model: coverage of its credible regions against the exact posterior.

At a likelihood power ``beta`` the model's highest-density credible region
of level ``a`` is ``{theta : log p_theta(theta|beta) >= t_a}``, with ``t_a``
the ``1 - a`` quantile of ``log p_theta`` over model samples. Its coverage
is the probability of that region under the exact tempered posterior,
estimated with exact samples. A calibrated model has coverage ``a`` at
every level; the calibration error is the mean ``|coverage - a|`` over the
levels. Over-confident models (too narrow) fall below the diagonal.

The experiment (``python -m trade_md.testsystems.calibration
workflows/two_moons_calibration.yaml``) trains one toy run
(:class:`~trade_md.testsystems.ToyRunConfig`, e.g. TRADE on
``two_moons`` with data at ``beta = 1``) and the same configuration with
``transfer.method: nll`` (a model trained at ``beta0`` only), then writes
``results.json``, ``summary.md`` and ``calibration.png`` (one panel per
``beta``) to ``run.out_dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .. import validators
from .._io import atomic_path, atomic_write_text
from ..config import ConfigError
from ..density import ConditionalDensity, model_like
from ..train import train
from .harness import ToyTarget, build_problem
from .run import ToyRunConfig, experiment_folder, run_example

__all__ = ["CalibrationCurve", "coverage_curve", "CalibrationConfig", "CalibrationRunConfig", "run_calibration"]


@dataclass(frozen=True)
class CalibrationCurve:
    """Coverage of a model's credible regions at one condition.

    Attributes
    ----------
    condition : float
    levels : (K,) array
        Nominal credibility levels in ``(0, 1)``.
    coverage : (K,) array
        Exact posterior mass of the model's region of each level.
    stderr : (K,) array
        Binomial standard error of each coverage (from the exact samples).
    error : float
        Mean ``|coverage - levels|``.
    """

    condition: float
    levels: np.ndarray
    coverage: np.ndarray
    stderr: np.ndarray
    error: float

    def to_dict(self) -> dict:
        """Plain lists and floats (for JSON)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dataclasses.asdict(self).items()}


def coverage_curve(
    model: ConditionalDensity, target: ToyTarget, c: float, levels, n: int, seed: int = 0
) -> CalibrationCurve:
    """Coverage of the model's highest-density credible regions at condition ``c`` (module docstring).

    Parameters
    ----------
    model : ConditionalDensity
    target : ToyTarget
        Exact sampler of the posterior at ``c``.
    c : float
    levels : sequence of float
        Nominal levels, each in ``(0, 1)``.
    n : int
        Model samples (for the thresholds) and exact samples (for the coverage).
    seed : int
        Seeds both; the global torch RNG is left untouched.
    """
    c = validators.positive_number("c", c)
    n = validators.positive_int("n", n)
    levels = np.asarray(levels, dtype=float)
    if levels.ndim != 1 or not levels.size or not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"levels must be a non-empty 1-D sequence of values in (0, 1), got {levels.tolist()}")
    like = model_like(model)
    exact = target.sample(n, c, torch.Generator().manual_seed(seed)).to(like)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        _, log_p_model = model.sample(n, c)
        log_p_exact = model.log_prob(exact, c)
    thresholds = np.quantile(log_p_model.cpu().numpy(), 1.0 - levels)
    coverage = (log_p_exact.cpu().numpy()[None, :] >= thresholds[:, None]).mean(1)
    stderr = np.sqrt(coverage * (1 - coverage) / n)
    return CalibrationCurve(c, levels, coverage, stderr, float(np.abs(coverage - levels).mean()))


@dataclass
class CalibrationConfig:
    """Where and how finely calibration is measured (YAML section ``calibration``).

    Parameters
    ----------
    conditions : tuple of float
        Likelihood powers ``beta`` (never used for training or selection).
    levels : int
        Nominal levels ``1/(levels+1), ..., levels/(levels+1)``.
    n_samples : int
        Model and exact samples per condition.
    seed : int
    """

    conditions: tuple[float, ...] = (0.5, 1.0, 2.0)
    levels: int = 19
    n_samples: int = 20000
    seed: int = 1

    def __post_init__(self) -> None:
        self.conditions = tuple(validators.positive_number("calibration.conditions", c) for c in self.conditions)
        if not self.conditions:
            raise ValueError("calibration.conditions must name at least one condition")
        self.levels = validators.positive_int("calibration.levels", self.levels)
        self.n_samples = validators.positive_int("calibration.n_samples", self.n_samples)

    def level_values(self) -> np.ndarray:
        """The nominal levels, ``(levels,)``."""
        return np.arange(1, self.levels + 1) / (self.levels + 1)


@dataclass
class CalibrationRunConfig(ToyRunConfig):
    """A toy run (the TRADE model) plus the ``calibration`` section; the baseline is it with ``method: nll``."""

    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = results["conditions"]
    fig, axes = plt.subplots(1, len(conditions), figsize=(3.4 * len(conditions), 3.4), squeeze=False)
    for ax, (i, c) in zip(axes[0], enumerate(conditions)):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for (name, curves), marker in zip(results["models"].items(), "os"):
            curve = curves[i]
            ax.errorbar(curve["levels"], curve["coverage"], curve["stderr"], fmt=marker + "-", ms=3,
                        label=f"{name} (error {curve['error']:.3f})")
        ax.set_title(f"beta = {c:g}")
        ax.set_xlabel("nominal level")
        ax.set_ylabel("coverage")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _summary(results: dict) -> str:
    names = list(results["models"])
    lines = [f"# Calibration of tempered posteriors ({results['problem']}, data at beta = {results['reference']:g})", "",
             f"Runtime {results['runtime_s']:.0f} s (" + ", ".join(f"{n} training {results['timing'][n]:.0f} s"
                                                         for n in names) + ").", "",
             "| beta | " + " | ".join(f"calibration error {n}" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for i, c in enumerate(results["conditions"]):
        lines.append(f"| {c:g} | " + " | ".join(f"{results['models'][n][i]['error']:.4f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def run_calibration(config: Union[CalibrationRunConfig, str, Path], out_dir: Optional[Union[str, Path]] = None) -> dict:
    """Train the configured model and its ``nll`` twin, measure both curves; returns ``results.json``'s content.

    Parameters
    ----------
    config : CalibrationRunConfig or path of its YAML file (strict keys)
        ``problem`` must be a target with an exact sampler at every condition (all toy problems).
    out_dir : path, optional
        Defaults to ``run.out_dir``; receives ``<method>/`` and ``nll/`` (the training runs, resumed from
        their checkpoints when the experiment is run again) and the results.
    """
    config, folder = experiment_folder(config, CalibrationRunConfig, out_dir)
    start = time.perf_counter()
    cal = config.calibration
    runs = {config.transfer.method: config,
            "nll": dataclasses.replace(config, transfer=dataclasses.replace(config.transfer, method="nll"))}
    if len(runs) != 2:
        raise ConfigError("transfer.method is already 'nll'; the calibration compares a transfer method against it")
    models, timing = {}, {}
    for name, run_config in runs.items():
        t0 = time.perf_counter()
        problem = build_problem(run_config.problem, run_config.flow)
        train(problem.model, problem.target, problem.data, run_config, folder / name, resume=True)
        timing[name] = time.perf_counter() - t0
        models[name] = [coverage_curve(problem.model, problem.target, c, cal.level_values(), cal.n_samples,
                                       cal.seed).to_dict() for c in cal.conditions]
    results = {"problem": config.problem.name, "reference": config.problem.reference,
               "conditions": list(cal.conditions), "models": models, "timing": timing,
               "runtime_s": time.perf_counter() - start}
    atomic_write_text(folder / "results.json", json.dumps(results, indent=1))
    _plot(results, folder / "calibration.png")
    atomic_write_text(folder / "summary.md", _summary(results))
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trade_md.testsystems.calibration",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML configuration (CalibrationRunConfig)")
    parser.add_argument("--out", default=None, help="output folder (default: run.out_dir)")
    return run_example(parser, argv, lambda args: _summary(run_calibration(args.config, args.out)))


if __name__ == "__main__":
    raise SystemExit(main())
