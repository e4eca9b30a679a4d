"""The paper's experiments: credible-region coverage, and short runs of the phi^4 and two-moons examples."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trade_md.config import ConfigError
from trade_md.testsystems import calibration, phi4_experiment
from trade_md.testsystems.calibration import CalibrationRunConfig, coverage_curve, run_calibration
from trade_md.testsystems.lattice_mcmc import OBSERVABLES
from trade_md.testsystems.phi4_experiment import Phi4ExperimentConfig, run_phi4_experiment

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


class GaussianPower:
    """q(x|beta) = exp(-beta x^2 / 2) in 2-D, with its exact sampler."""

    condition = "beta"

    def log_q(self, x, c):
        return -0.5 * c * (x**2).sum(-1)

    def sample(self, n, c, generator=None):
        return torch.randn(n, 2, generator=generator) / math.sqrt(c)


class GaussianModel(torch.nn.Module):
    """p(x|beta) = N(0, scale^2 / beta), a ConditionalDensity with a chosen width error."""

    condition = "beta"

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def log_prob(self, x, c):
        var = self.scale**2 / c
        return -0.5 * (x**2).sum(-1) / var - math.log(2 * math.pi * var)

    def sample(self, n, c):
        x = torch.randn(n, 2) * self.scale / math.sqrt(c)
        return x, self.log_prob(x, c)


def test_an_exact_model_is_calibrated_and_a_narrow_one_is_overconfident():
    levels = np.linspace(0.05, 0.95, 19)
    exact = coverage_curve(GaussianModel(1.0), GaussianPower(), 2.0, levels, 20000, seed=3)
    assert np.all(np.abs(exact.coverage - levels) < 4 * np.maximum(exact.stderr, 1e-3))
    assert exact.error < 0.01
    # the exact coverage of the narrow model's region: P(chi2_2 <= scale^2 * q_a) = 1 - (1 - a)^(scale^2)
    narrow = coverage_curve(GaussianModel(0.7), GaussianPower(), 2.0, levels, 20000, seed=3)
    np.testing.assert_allclose(narrow.coverage, 1 - (1 - levels) ** 0.49, atol=0.015)
    assert np.all(narrow.coverage < levels) and narrow.error > 0.1
    with pytest.raises(ValueError, match=r"levels must be .* in \(0, 1\)"):
        coverage_curve(GaussianModel(1.0), GaussianPower(), 2.0, [0.5, 1.0], 100)


def test_the_example_configurations_load_and_the_baseline_must_differ(tmp_path):
    from trade_md.config import load_yaml

    phi4 = load_yaml(Phi4ExperimentConfig, WORKFLOWS / "phi4_kappa.yaml")
    assert phi4.data.kappas == (0.25, 0.29) and phi4.lattice.size == 8
    assert min(phi4.evaluation.kappas) == 0.24 and max(phi4.evaluation.kappas) == 0.305
    moons = load_yaml(CalibrationRunConfig, WORKFLOWS / "two_moons_calibration.yaml")
    assert moons.calibration.conditions == (0.5, 1.0, 2.0)
    text = (WORKFLOWS / "phi4_kappa.yaml").read_text().replace("reference: 0.27", "reference: null")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match="transfer.reference"):
        load_yaml(Phi4ExperimentConfig, tmp_path / "bad.yaml")


def test_an_experiment_needs_an_output_folder(tmp_path):
    import dataclasses

    from trade_md.config import load_yaml
    from trade_md.testsystems.run import experiment_folder

    moons = load_yaml(CalibrationRunConfig, WORKFLOWS / "two_moons_calibration.yaml")
    homeless = dataclasses.replace(moons, run=dataclasses.replace(moons.run, out_dir=None))
    with pytest.raises(ConfigError, match="no output folder"):
        experiment_folder(homeless, CalibrationRunConfig)
    config, folder = experiment_folder(homeless, CalibrationRunConfig, tmp_path / "x")
    assert config is homeless and folder.is_dir()
    config, folder = experiment_folder(WORKFLOWS / "two_moons_calibration.yaml", CalibrationRunConfig, tmp_path / "y")
    assert config == moons and folder == tmp_path / "y"


def _short(path: Path, replacements: dict, out: Path) -> Path:
    text = path.read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    out.write_text(text)
    return out


@pytest.mark.slow
def test_phi4_example_short_version(tmp_path):
    config = _short(WORKFLOWS / "phi4_kappa.yaml", {
        "size: 8": "size: 4",
        "n_train: 20000": "n_train: 1000",
        "n_validation: 2000": "n_validation: 100",
        "chains: 100, sweeps: 4400, thermalize: 1000, every: 20": "chains: 20, sweeps: 1200, thermalize: 200, every: 20",
        "kappas: [0.24, 0.25, 0.26, 0.27, 0.28, 0.29, 0.3, 0.305]": "kappas: [0.24, 0.305]",
        "n_samples: 20000": "n_samples: 1000",
        "chains: 32, sweeps: 10000, thermalize: 2000, every: 2": "chains: 8, sweeps: 1000, thermalize: 200, every: 2",
        "hidden: [128, 128]": "hidden: [16]",
        "warmup_steps: 2500": "warmup_steps: 10",
        "ramp_steps: 400": "ramp_steps: 10",
        "widen_steps: 400": "widen_steps: 10",
        "steps: 5000": "steps: 30",
        "batch_size: 256": "batch_size: 64",
        "snis_samples: 256": "snis_samples: 64",
        "validate_every: 50": "validate_every: 10",
    }, tmp_path / "phi4.yaml")
    results = run_phi4_experiment(config, tmp_path / "out", progress=False, workers=2)
    # the arms trained side by side (spawned processes, float32 default dtype there) are the models trained
    # one after the other in this process
    in_turn = run_phi4_experiment(config, tmp_path / "in_turn", progress=False, workers=1)
    assert in_turn["models"] == results["models"]
    for name in OBSERVABLES + ("ess",):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved["models"]) == {"trade", "nll"} and len(saved["reference"]) == 2
    for rows in results["models"].values():
        assert all(0 < r["ess"] <= 1 for r in rows)
    # the ordered phase at 0.305 is more magnetized than 0.24 (a physics check of the reference)
    ref = results["reference"]
    assert all(r["tau_abs_m_sweeps"] >= 0.5 * 2 and 0.3 < r["acceptance"] < 0.7 for r in ref)
    assert ref[1]["abs_m"]["value"] > ref[0]["abs_m"]["value"] + 10 * ref[1]["abs_m"]["stderr"]
    assert "within 2 combined standard errors" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.slow
def test_two_moons_calibration_short_version(tmp_path):
    config = _short(WORKFLOWS / "two_moons_calibration.yaml", {
        "steps: 2000": "steps: 60",
        "warmup_steps: 300": "warmup_steps: 20",
        "ramp_steps: 300": "ramp_steps: 20",
        "widen_steps: 300": "widen_steps: 20",
        "n_train: 20000": "n_train: 2000",
        "n_validation: 2000": "n_validation: 200",
        "n_samples: 20000": "n_samples: 2000",
        "validate_every: 50": "validate_every: 20",
    }, tmp_path / "moons.yaml")
    results = run_calibration(config, tmp_path / "out")
    assert set(results["models"]) == {"trade_grid", "nll"}
    for curves in results["models"].values():
        assert [c["condition"] for c in curves] == [0.5, 1.0, 2.0]
        assert all(0 <= c["error"] <= 0.5 for c in curves)
    assert (tmp_path / "out" / "calibration.png").stat().st_size > 1000
    # running it again resumes the finished trainings: the same models, the same curves
    again = run_calibration(config, tmp_path / "out")
    assert again["models"] == results["models"]


@pytest.mark.parametrize("main, args, message", [
    (phi4_experiment.main, ["--workers", "0", str(WORKFLOWS / "phi4_kappa.yaml")], "workers must be a positive integer"),
    (phi4_experiment.main, ["missing.yaml"], "configuration file not found: missing.yaml"),
    (calibration.main, ["missing.yaml"], "configuration file not found: missing.yaml"),
])
def test_example_command_lines_report_bad_input_in_one_line(main, args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: " + message in err and "Traceback" not in err
