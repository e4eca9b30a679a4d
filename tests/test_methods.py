"""Training methods and their registry, the curriculum functions and the divergence guard."""
import math

import pytest
import torch

from trade_md.config import ConfigError
from trade_md.curriculum import check_curriculum, condition_range, curriculum_done, curriculum_steps, transfer_weight
from trade_md.guard import DivergenceGuard
from trade_md.losses import reverse_kl
from trade_md.methods import TrainingMethod, TransferTerm, base, method_class, method_names, register_method
from trade_md.train import OptimConfig, RunConfig, TransferConfig

from tests.test_train import make_config, read_log, run


# ------------------------------------------------------------------ registry
def test_every_method_is_registered_by_its_name():
    assert set(method_names()) == {"trade_grid", "trade_continuous", "nll", "reweighting", "reverse_kl"}
    for name in method_names():
        assert method_class(name).name == name
    with pytest.raises(ValueError, match="transfer.method must be one of .*got 'reweigthing'"):
        method_class("reweigthing")


def test_method_specific_settings_are_checked_by_the_method():
    with pytest.raises(ValueError, match="transfer.grid_size must be an integer >= 2"):
        TransferConfig(method="trade_grid", grid_size=1)
    with pytest.raises(ValueError, match=r"transfer.ema must be in \[0, 1\)"):
        TransferConfig(method="trade_grid", ema=1.0)
    TransferConfig(method="trade_continuous", grid_size=1)  # no grid: any size
    with pytest.raises(ValueError, match="energy_free applies to the TRADE methods only"):
        TransferConfig(method="reweighting", energy_free=True)


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, so that methods registered by a test disappear after it."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_a_new_method_is_one_class_and_its_registration(registry, tmp_path):
    @register_method
    class UpperEndKL(TrainingMethod):
        """Backward KL at the upper end of the current range only."""

        name = "upper_end_kl"

        def columns(self):
            return ["upper"]

        def loss(self, step, low, high):
            if low == high:
                return None
            s = self.setup
            return TransferTerm(reverse_kl(s.model, self.target, s.batch_size, high), {"upper": high})

    _, result = run(make_config("upper_end_kl", steps=30), tmp_path)
    rows = read_log(tmp_path / "log.csv")
    assert result.step == 30 and float(rows[-1]["upper"]) == pytest.approx(1.5)
    assert math.isnan(float(rows[0]["transfer"])) and math.isfinite(float(rows[-1]["transfer"]))
    with pytest.raises(ValueError, match="already registered"):
        register_method(UpperEndKL)


# ---------------------------------------------------------------- curriculum
def test_curriculum_warms_up_ramps_and_widens():
    tc = TransferConfig(method="trade_grid", condition_range=(0.5, 2.0), weight=2.0,
                        warmup_steps=10, ramp_steps=4, widen_steps=2)
    assert curriculum_steps(tc) == 14
    assert [transfer_weight(tc, s) for s in (0, 9, 10, 11, 13, 50)] == [0.0, 0.0, 0.5, 1.0, 2.0, 2.0]
    assert condition_range(tc, 1.0, 9) == (1.0, 1.0)
    low, high = condition_range(tc, 1.0, 10)
    assert low == pytest.approx(0.5**0.5) and high == pytest.approx(2.0**0.5)
    assert condition_range(tc, 1.0, 11) == (0.5, 2.0)
    assert [curriculum_done(tc, s) for s in (12, 13)] == [False, True]
    nll = TransferConfig(method="nll", warmup_steps=10)
    assert curriculum_steps(nll) == 0 and transfer_weight(nll, 100) == 0.0 and curriculum_done(nll, 0)
    check_curriculum(nll, OptimConfig(steps=2))
    with pytest.raises(ConfigError, match="shorter than the curriculum"):
        check_curriculum(tc, OptimConfig(steps=13))


# --------------------------------------------------------------------- guard
def test_guard_skips_spikes_and_non_finite_losses_and_reloads_after_max_skips():
    guard = DivergenceGuard(RunConfig(spike_window=5, spike_factor=10.0, max_skips=2, backoff=0.5))
    assert guard.screen({"boundary": math.nan}) == "non-finite loss"
    for loss in (1.0, 1.1, 0.9, 1.0, 1.05):
        assert guard.screen({"boundary": loss}) == "" and not guard.record({"boundary": loss}, skipped=False)
    assert guard.screen({"boundary": 100.0}) == "loss spike (boundary)" and guard.screen({"boundary": 1.2}) == ""
    # a term switched on now has no history: however large, it is judged once it has one
    assert guard.screen({"boundary": 1.0, "transfer": 1e4}) == ""
    assert guard.screen({"boundary": 1.0, "transfer": math.inf}) == "non-finite loss"
    assert not guard.record({"boundary": 100.0}, skipped=True)
    assert guard.record({"boundary": math.inf}, skipped=True)  # the second consecutive skip
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    guard.remember(model, optimizer)
    good = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    guard.reload(model, optimizer)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), good))
    assert (guard.reloads, guard.weight_scale, guard.consecutive_skips, guard.recent) == (1, 0.5, 0, {})
    assert guard.skipped_steps == 2


def test_guard_judges_validation_against_the_lowest_healthy_one_and_round_trips():
    guard = DivergenceGuard(RunConfig(divergence_tolerance=2.0))
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    assert not guard.diverged(5.0)
    guard.healthy(5.0, model, optimizer)
    assert guard.lowest_validation == 5.0 and guard.last_good is not None
    assert not guard.diverged(6.9) and guard.diverged(7.1) and guard.diverged(math.nan)
    other = DivergenceGuard(RunConfig(divergence_tolerance=2.0))
    guard.record({"boundary": 1.0, "transfer": 3.0}, skipped=False)
    other.load_state_dict(guard.state_dict())
    assert other.state_dict().keys() == guard.state_dict().keys() and other.lowest_validation == 5.0
    assert other.recent == {"boundary": [1.0], "transfer": [3.0]}
    older = {**guard.state_dict(), "recent": [1.0, 2.0]}  # before the terms were judged separately
    other.load_state_dict(older)
    assert other.recent == {}
