"""The trainer: transfer proofs on the multi-well, resume, divergence handling, strict configs."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from trade_md.config import ConfigError, load_yaml, save_yaml
from trade_md.flows import FlowConfig
from trade_md.losses import GradientLossConfig
from trade_md.testsystems import (
    ProblemConfig,
    ScaledBaseFlow,
    ToyRunConfig,
    build_problem,
    train_from_config,
    transfer_metrics,
)
from trade_md.train import OptimConfig, RunConfig, TrainConfig, TransferConfig, train

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "toy_multiwell.yaml"


def make_config(method="trade_grid", dim=2, steps=60, curriculum=10, n_train=2000, hidden=(32,), batch=128, **transfer):
    """A small multi-well run: data at T = 1 only, range [0.5, 1.5]."""
    return ToyRunConfig(
        problem=ProblemConfig(name="multiwell", dim=dim, n_train=n_train, n_validation=500, dtype="float32"),
        flow=FlowConfig(schedule=("real/0 | *", "real/1 | *"), repeats=2, hidden=hidden, bins=8, real_bound=4.0),
        transfer=TransferConfig(
            method=method,
            condition_range=(0.5, 1.5),
            warmup_steps=curriculum,
            ramp_steps=curriculum,
            widen_steps=curriculum,
            **{"snis_samples": 64, **transfer},
        ),
        optim=OptimConfig(steps=steps, batch_size=batch, lr=3e-3),
        run=RunConfig(progress=False, validate_every=10, checkpoint_every=20, restore_best=False),
    )


def read_log(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run(config, out, target=None, resume=False):
    problem = build_problem(config.problem, config.flow)
    result = train(problem.model, target or problem.target, problem.data, config, out, resume=resume)
    return problem, result


# ------------------------------------------------------------------ transfer proofs
#
# Thresholds. The model's own fit at T0 = 1 (10k samples, a small flow) has
# KL ~ 0.005 nats, and with the same flow and data NLL-only training has KL
# ~0.4 at T = 0.5 and ~0.14 at T = 1.5 (2-D), ~1.0 and ~0.37 (5-D). A transfer
# that keeps within 0.03 nats (2-D) or 0.08 nats (5-D) of the truth at both
# ends loses no more than a few times the boundary fit's own error, is an
# order of magnitude better than NLL-only, and is far outside Monte-Carlo noise
# (standard error ~0.001 with 20k exact samples). The 3x ratio to NLL-only is
# the requirement.


def transfer_proof(tmp_path, dim, steps, threshold, n_train, hidden, methods=("trade_grid",), **gradient):
    results = {}
    for method in methods + ("nll",):
        config = make_config(
            method,
            dim=dim,
            steps=steps,
            curriculum=steps // 5,
            n_train=n_train,
            hidden=hidden,
            batch=256,
            snis_samples=256,
            gradient=GradientLossConfig(**gradient),
        )
        config.run.validate_every = 50
        config.run.checkpoint_every = steps
        config.run.restore_best = True
        problem, _ = run(config, tmp_path / method)
        results[method] = {
            T: transfer_metrics(problem.model, problem.target, T, 20000, seed=3) for T in (0.5, 1.0, 1.5)
        }
    for method in methods:
        for T in (0.5, 1.5):
            m = results[method][T]
            assert m.kl < threshold, (method, T, m)
            assert m.ess > 0.9, (method, T, m)
        assert results["nll"][0.5].kl > 3 * results[method][0.5].kl, results
    return results


@pytest.mark.parametrize("derivative", ["autograd", "central_difference"])
def test_trade_transfers_the_2d_multiwell_from_T1_data_only(tmp_path, derivative):
    transfer_proof(tmp_path, dim=2, steps=800, threshold=0.03, n_train=10000, hidden=(64, 64), derivative=derivative)


@pytest.mark.slow
def test_trade_transfers_the_5d_multiwell_from_T1_data_only(tmp_path):
    transfer_proof(
        tmp_path, dim=5, steps=2000, threshold=0.08, n_train=20000, hidden=(64, 64),
        methods=("trade_grid", "trade_continuous"),
    )  # fmt: skip


# ---------------------------------------------------------------- resume, logging


class Crash(Exception):
    pass


class CrashingTarget:
    """Delegates to a target and raises after ``calls`` evaluations (a kill mid-run).

    trade_grid evaluates the target once per refresh of its SNIS table (and
    takes the derivatives at its evaluation points from there): with
    ``refresh_every=1`` that is once per step after the warm-up.
    """

    def __init__(self, target, calls):
        self.target, self.calls, self.condition = target, calls, target.condition

    def evaluate(self, x, c):
        self.calls -= 1
        if self.calls < 0:
            raise Crash("killed")
        return self.target.evaluate(x, c)

    def log_q(self, x, c):
        return self.target.log_q(x, c)

    def dlogq_dc(self, x, c):
        return self.target.dlogq_dc(x, c)


def test_killed_run_resumes_exactly(tmp_path):
    config = make_config("trade_grid", steps=60, refresh_every=1)
    _, full = run(config, tmp_path / "full")
    problem = build_problem(config.problem, config.flow)
    # the target is evaluated once per step after the 10 warm-up steps: die in step 45, after the step-40 checkpoint
    with pytest.raises(Crash):
        train(problem.model, CrashingTarget(problem.target, 34), problem.data, config, tmp_path / "killed")
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=False)["step"] == 40
    _, resumed = run(config, tmp_path / "killed", resume=True)
    assert resumed.step == full.step == 60
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    log_a, log_b = read_log(tmp_path / "full" / "log.csv"), read_log(tmp_path / "killed" / "log.csv")
    assert [int(r["step"]) for r in log_b] == list(range(1, 61))
    assert log_a == log_b


@pytest.mark.slow
def test_sigkilled_cli_run_resumes(tmp_path):
    """A real SIGKILL of a ``train_from_config`` process after a checkpoint, then ``resume=True``."""
    config = make_config("trade_grid", steps=400)
    config.run.out_dir = str(tmp_path / "out")
    save_yaml(config, tmp_path / "cfg.yaml")
    code = f"from trade_md.testsystems import train_from_config; train_from_config({str(tmp_path / 'cfg.yaml')!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    log = tmp_path / "out" / "log.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(read_log(log)) >= 60:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = torch.load(tmp_path / "out" / "last.pt", weights_only=False)["step"]
    assert 20 <= stopped < 400
    result = train_from_config(tmp_path / "cfg.yaml", resume=True)
    assert result.step == 400
    assert [int(r["step"]) for r in read_log(log)] == list(range(1, 401))


def test_log_has_every_term_ess_and_a_one_cycle_learning_rate(tmp_path):
    config = make_config("trade_grid", steps=60)
    run(config, tmp_path)
    rows = read_log(tmp_path / "log.csv")
    assert len(rows) == 60
    for column in ("loss", "boundary", "transfer", "transfer_weight", "lr", "grad_norm", "validation", "range_low"):
        assert column in rows[0]
    ess_columns = [c for c in rows[0] if c.startswith("ess@")]
    assert len(ess_columns) == config.transfer.grid_size
    last = rows[-1]
    assert all(0 < float(last[c]) <= 1 for c in ess_columns)
    assert math.isnan(float(rows[0]["transfer"])) and math.isfinite(float(last["transfer"]))
    assert float(rows[5]["range_high"]) == 1.0 and float(last["range_low"]) == pytest.approx(0.5)
    lr = [float(r["lr"]) for r in rows]
    peak = lr.index(max(lr))
    assert 0 < peak < 59 and lr[-1] < lr[0] < lr[peak]
    assert [r["step"] for r in rows if r["validation"] != "nan"] == [str(s) for s in range(10, 61, 10)]
    assert (tmp_path / "best.pt").exists() and (tmp_path / "config.yaml").exists()


@pytest.mark.parametrize("method", ["trade_continuous", "reweighting", "reverse_kl"])
def test_every_method_trains_and_changes_the_model(tmp_path, method):
    """A baseline that silently does nothing (as the research code's reweighting did, through a
    misspelled configuration key) would end where NLL-only ends."""
    problem_nll, _ = run(make_config("nll", steps=30), tmp_path / "nll")
    problem, _ = run(make_config(method, steps=30), tmp_path / method)
    rows = read_log(tmp_path / method / "log.csv")
    assert math.isfinite(float(rows[-1]["transfer"]))
    if method != "reverse_kl":
        assert 0 < float(rows[-1]["ess_mean"]) <= 1
    pairs = zip(problem.model.state_dict().values(), problem_nll.model.state_dict().values(), strict=True)
    differ = [not torch.equal(a, b) for a, b in pairs]
    assert any(differ)


def test_energy_free_trade_and_tsf_like_models_train(tmp_path):
    config = make_config("trade_grid", steps=30, energy_free=True)
    run(config, tmp_path / "free")
    assert math.isfinite(float(read_log(tmp_path / "free" / "log.csv")[-1]["transfer"]))
    config = make_config("nll", steps=30)
    config.problem.scaled_base_only = True
    problem, _ = run(config, tmp_path / "tsf")
    assert isinstance(problem.model, ScaledBaseFlow)
    x, log_p = problem.model.sample(100, 0.7)
    torch.testing.assert_close(log_p, problem.model.log_prob(x, 0.7))


class Sabotaged(torch.nn.Module):
    """A model whose density is NaN during training calls ``nan_from <= call < nan_to``,
    and 1000 nats too low at validation number ``bad_validation``."""

    def __init__(self, model, nan_from, nan_to, bad_validation):
        super().__init__()
        self.model = model
        self.calls = self.validations = 0
        self.nan_from, self.nan_to, self.bad_validation = nan_from, nan_to, bad_validation

    def sample(self, n, c):
        return self.model.sample(n, c)

    def log_prob(self, x, c):
        log_p = self.model.log_prob(x, c)
        if self.training:
            self.calls += 1
            if self.nan_from <= self.calls < self.nan_to:
                return log_p * math.nan
            return log_p
        self.validations += 1
        return log_p - 1000.0 if self.validations == self.bad_validation else log_p


def test_divergence_skips_steps_reloads_and_keeps_the_best_checkpoint(tmp_path):
    config = make_config("nll", steps=80)
    config.run.max_skips = 10
    config.run.checkpoint_every = 10
    problem = build_problem(config.problem, config.flow)
    # NaN losses in steps 31-42 (12 skips: reload after 10); validation at step 60 is 1000 nats off
    model = Sabotaged(problem.model, nan_from=31, nan_to=43, bad_validation=6)
    result = train(model, problem.target, problem.data, config, tmp_path)
    rows = read_log(tmp_path / "log.csv")
    assert result.step == 80 and result.skipped_steps == 12 and result.reloads == 2
    assert [r["step"] for r in rows if r["skipped"] == "1"] == [str(s) for s in range(31, 43)]
    assert "reload" in rows[39]["event"]
    assert "validation diverged" in rows[59]["event"]
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["step"] != 60 and best["validation"] < 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_guard_does_not_take_the_onset_of_the_transfer_term_for_a_spike(tmp_path):
    """The transfer term, 1e4 x the boundary loss, is switched on after 10 NLL steps: no step is skipped then.

    Judged on the total loss (as before), every step of the ramp exceeded the
    NLL-only history and was skipped until the guard reloaded and halved the weight.
    """
    config = make_config("trade_grid", steps=20, curriculum=10, weight=1e4)
    config.run.spike_window = 5
    _, result = run(config, tmp_path)
    rows = read_log(tmp_path / "log.csv")
    ramp = rows[10:20]
    assert all(math.isfinite(float(r["transfer"])) for r in ramp)
    assert float(ramp[-1]["transfer_weight"]) * float(ramp[-1]["transfer"]) > 100 * float(ramp[-1]["boundary"])
    assert [r["event"] for r in ramp if r["event"]] == [] and result.reloads == 0


def test_fresh_run_refuses_a_used_folder_and_resume_refuses_another_config(tmp_path):
    config = make_config("nll", steps=20)
    run(config, tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        run(config, tmp_path)
    config.optim.lr = 1e-2
    with pytest.raises(ConfigError, match="optim.lr"):
        run(config, tmp_path, resume=True)


def test_a_molecular_style_run_records_only_its_three_sections(tmp_path):
    """A TrainConfig is transfer + optim + run: no toy problem in a molecular run's config.yaml."""
    toy = make_config("nll", steps=2)
    problem = build_problem(toy.problem, toy.flow)
    train(problem.model, problem.target, problem.data, TrainConfig(toy.transfer, toy.optim, toy.run), tmp_path)
    assert list(yaml.safe_load((tmp_path / "config.yaml").read_text())) == ["transfer", "optim", "run"]


def test_threads_default_to_one_on_cpu(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        run(make_config("nll", steps=2), tmp_path / "a")
        assert torch.get_num_threads() == 1
        config = make_config("nll", steps=2)
        config.run.threads = 2
        run(config, tmp_path / "b")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------- config


def test_misspelled_keys_and_methods_are_errors(tmp_path):
    """Misspelled keys are errors: the research code's reweighting baseline silently did nothing
    because of one."""
    cases = {
        "transfer:\n  methd: reweighting\n": "did you mean 'method'",
        "transfer:\n  gradient:\n    penality: mse\n": "transfer.gradient.",
        "optim:\n  step: 10\n": "did you mean 'steps'",
        "transfer:\n  method: reweigthing\n": "method must be one of",
        "problem:\n  name: multi_well\n": "problem.name must be one of",
    }
    for text, message in cases.items():
        path = tmp_path / "cfg.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_yaml(ToyRunConfig, path)
    # a molecular run's TrainConfig has no toy problem
    path.write_text("problem:\n  name: multiwell\n")
    with pytest.raises(ConfigError, match="unknown configuration key 'problem'"):
        load_yaml(TrainConfig, path)


def test_the_workflow_example_loads_strictly_and_trains(tmp_path):
    config = load_yaml(ToyRunConfig, WORKFLOW)
    assert config.transfer.method == "trade_grid" and config.problem.reference == 1.0
    data = yaml.safe_load(WORKFLOW.read_text())
    data["optim"]["steps"] = 30
    data["transfer"].update(warmup_steps=5, ramp_steps=5, widen_steps=5)
    data["problem"]["n_evaluation"] = 1000
    data["run"].update(out_dir=str(tmp_path / "out"), progress=False)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(data))
    result = train_from_config(tmp_path / "cfg.yaml")
    assert result.step == 30
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [m["condition"] for m in metrics] == list(config.problem.evaluation)
    assert all(math.isfinite(m["kl"]) for m in metrics)


def test_evaluation_conditions_cannot_influence_training(tmp_path):
    """Model selection uses held-out data at T0 only, never the evaluation temperatures
    (no tuning on the test temperature)."""
    outputs = []
    for evaluation in ((0.5,), (0.7, 1.3)):
        config = make_config("trade_grid", steps=40)
        config.problem.evaluation = evaluation
        config.problem.n_evaluation = 500
        config.run.out_dir = str(tmp_path / str(len(evaluation)))
        save_yaml(config, tmp_path / "cfg.yaml")
        result = train_from_config(tmp_path / "cfg.yaml")
        assert [m.condition for m in result.metrics] == list(evaluation)
        outputs.append((result.best_step, read_log(Path(config.run.out_dir) / "log.csv")))
    assert outputs[0] == outputs[1]
