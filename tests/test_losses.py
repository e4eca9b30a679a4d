"""Losses: SNIS, the TRADE gradient loss, the grid state, boundary and baseline terms."""

import math

import pytest
import torch

from trade_md import units
from trade_md.flows import ConditionalFlow, ConditionedFlow, FlowConfig
from trade_md.losses import (
    GradientLossConfig,
    condition_derivative,
    evaluation_points,
    gradient_loss,
    log_uniform_conditions,
    nll,
    reverse_kl,
    reweighted_nll,
    snis,
    snis_at_conditions,
    soft_clip,
)
from trade_md.methods.trade_continuous import continuous_gradient_loss
from trade_md.methods.trade_grid import ConditionGrid, grid_gradient_loss
from trade_md.targets import BoltzmannTarget, PowerTarget, energy_free_target
from trade_md.testsystems import MultiWell

DIM = 3


class GaussianTemperatureOracle(torch.nn.Module):
    """Exact model of q = exp(-|x|^2 / (2T)): p(x|T) = N(0, T I), so log Z(T) = d/2 log(2 pi T)."""

    condition = "temperature"

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def log_prob(self, x, c):
        c = torch.as_tensor(c, dtype=x.dtype).expand(x.shape[0])
        return -0.5 * (x**2).sum(-1) / c - 0.5 * DIM * torch.log(2 * math.pi * c) + 0 * self.dummy

    def sample(self, n, c):
        c = torch.as_tensor(c, dtype=torch.get_default_dtype()).expand(n)
        x = torch.sqrt(c)[:, None] * torch.randn(n, DIM)
        return x, self.log_prob(x, c)


class GaussianPowerOracle(GaussianTemperatureOracle):
    """Exact model of q = N(0, I)^beta: p(x|beta) = N(0, I / beta)."""

    condition = "beta"

    def log_prob(self, x, c):
        return super().log_prob(x, 1.0 / torch.as_tensor(c, dtype=x.dtype))

    def sample(self, n, c):
        return super().sample(n, 1.0 / torch.as_tensor(c, dtype=torch.get_default_dtype()))


def harmonic_target():
    return BoltzmannTarget(lambda x: units.KB * 0.5 * (x**2).sum(-1))


def power_target():
    return PowerTarget(lambda x: -0.5 * (x**2).sum(-1))


def random_flow(condition="temperature", reference=1.0, dim=2):
    """A small real-valued ConditionedFlow with non-zero last layers (so it depends on c)."""
    flow = ConditionalFlow(["real"] * dim, 1, FlowConfig(schedule=("real/0 | *", "real/1 | *"), hidden=(16,), bins=4))
    with torch.no_grad():
        for layer in flow.layers:
            layer.hyper[-1].weight.normal_(0, 0.3)
            layer.hyper[-1].bias.normal_(0, 0.3)
    return ConditionedFlow(flow, reference=reference, condition=condition)


def test_snis_estimate_of_dlogq_dT_matches_the_exact_value_within_5_stderr():
    target = MultiWell(2)
    T, T_prop = 0.7, 0.8
    x = target.sample(20000, T_prop, torch.Generator().manual_seed(5))
    log_proposal = target.log_q(x, T_prop) - target.log_Z(T_prop)
    terms = target.evaluate(x, T)
    estimate = snis(terms.log_q - log_proposal, terms.dlogq_dc)
    h = 1e-5
    exact = (target.log_Z(T + h) - target.log_Z(T - h)) / (2 * h)
    assert abs(float(estimate.mean) - exact) < 5 * float(estimate.stderr)
    assert 0.5 < float(estimate.ess) < 1.0


def test_snis_drops_unusable_samples_and_reports_ess():
    log_w = torch.tensor([[0.0, 0.0, -math.inf, math.nan], [0.0, math.log(3.0), 0.0, 0.0]])
    values = torch.tensor([[1.0, 3.0, 100.0, 100.0], [1.0, 1.0, 1.0, math.inf]])
    est = snis(log_w, values)
    torch.testing.assert_close(est.mean, torch.tensor([2.0, 1.0]))
    # weights (1/2, 1/2, 0, 0): ESS 2 of 4; weights (1/5, 3/5, 1/5, 0): ESS 25/11 of 4
    torch.testing.assert_close(est.ess, torch.tensor([0.5, 25 / 11 / 4]))
    none = snis(torch.full((3,), -math.inf), torch.ones(3))
    assert math.isnan(float(none.mean)) and float(none.ess) == 0.0


def test_per_sample_temperatures_do_not_broadcast_importance_weights():
    """With (B,) energies and (B,) temperatures each weight uses its own pair (the research code
    divided a (B,) energy by a (B, 1) temperature: a (B, B) broadcast that made all weights equal)."""
    target = BoltzmannTarget(lambda x: 5.0 * (x**2).sum(-1))  # kJ/mol
    x = torch.randn(200, DIM)
    T = torch.linspace(200.0, 400.0, 200)
    terms = target.evaluate(x, T)
    manual = -5.0 * (x**2).sum(-1) / (units.KB * T)
    torch.testing.assert_close(terms.log_q, manual)
    w = torch.softmax(manual, 0)
    ess = float(snis(terms.log_q, terms.dlogq_dc).ess)
    assert ess == pytest.approx(1.0 / float((w**2).sum()) / 200)
    assert ess < 0.9  # a (B, B) broadcast averaged over rows would give near-equal weights
    with pytest.raises(ValueError):
        target.evaluate(x, T[:, None])


@pytest.mark.parametrize(
    "model,target,conditions,expectation",
    [
        (GaussianTemperatureOracle(), harmonic_target(), (0.5, 1.0, 2.0), lambda c: DIM / (2 * c)),
        (GaussianPowerOracle(), power_target(), (0.3, 1.0, 4.0), lambda c: -DIM / (2 * c)),
    ],
    ids=["temperature", "power"],
)
def test_gradient_residual_vanishes_for_the_exact_model(model, target, conditions, expectation):
    """With the exact model and the exact E_c[dlogq/dc], g = t for every sample.

    Catches a wrong power of T in d/dT log q (the research code had -u/T^3 on one
    path) or a missing 1/beta in the likelihood-power derivative, anywhere between
    the target, the autograd derivative and the scaling.
    """
    config = GradientLossConfig(penalty="mse", target_clip=1e6)
    x = 1.3 * torch.randn(300, DIM)
    c = torch.tensor(conditions).repeat(100)
    exact = expectation(c)
    result = gradient_loss(model, target, x, c, exact, config)
    assert float(result.loss.detach()) < 1e-20
    assert bool(result.valid.all())
    # with the derivative off by a factor 1/c the residual is large
    wrong = gradient_loss(model, target, x, c, exact / c, config)
    assert float(wrong.loss.detach()) > 0.01


def test_condition_derivative_of_a_flow_matches_finite_differences_and_reaches_parameters():
    model = random_flow()
    x = torch.randn(20, 2)
    c = torch.linspace(0.5, 1.5, 20)
    log_p, g = condition_derivative(model, x, c)
    h = 1e-6
    fd = (model.log_prob(x, c + h) - model.log_prob(x, c - h)) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_p, model.log_prob(x, c))
    g.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(gr is not None for gr in grads) and any(float(gr.abs().sum()) > 0 for gr in grads)


def test_central_difference_derivative_matches_autograd_to_second_order():
    """The difference mode: error O(h^2) (100x smaller for a 10x smaller step), reaches the parameters."""
    torch.manual_seed(0)
    model = random_flow()
    x, c = torch.randn(400, 2, dtype=torch.float64), torch.linspace(0.5, 1.5, 400, dtype=torch.float64)
    model = model.double()
    log_p, exact = condition_derivative(model, x, c)
    errors = {}
    for h in (1e-2, 1e-3):
        mean_log_p, fd = condition_derivative(model, x, c, difference_step=h)
        errors[h] = ((fd - exact) * c).abs().median()  # in units of d/dlog c
        torch.testing.assert_close(mean_log_p, log_p.detach(), atol=50 * h * h, rtol=0)  # h^2/2 d2 log p
    scale = (exact * c).abs().median()
    assert errors[1e-2] < 1e-3 * scale and errors[1e-3] < 3e-2 * errors[1e-2]
    _, fd = condition_derivative(model, x, c, difference_step=1e-2)
    fd.pow(2).sum().backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())
    target = MultiWell(2)
    config = dict(penalty="mse")
    a = gradient_loss(model, target, x, c, torch.zeros_like(c), GradientLossConfig(**config))
    b = gradient_loss(model, target, x, c, torch.zeros_like(c),
                      GradientLossConfig(derivative="central_difference", difference_step=1e-3, **config))
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="transfer.gradient.derivative"):
        GradientLossConfig(derivative="forward")
    with pytest.raises(ValueError, match="difference_step"):
        GradientLossConfig(difference_step=0.5)


@pytest.mark.parametrize("condition", ["temperature", "beta"])
def test_flow_sampling_and_log_prob_agree_at_every_condition(condition):
    """The sampler must use the condition the density uses (SNIS relies on it; the research
    code's sampler ignored the temperature)."""
    model = random_flow(condition=condition)
    spreads = []
    for c in (0.5, 1.0, 2.0):
        x, log_p = model.sample(500, c)
        torch.testing.assert_close(log_p, model.log_prob(x, c), rtol=1e-8, atol=1e-8)
        spreads.append(float(x.detach().std()))
    c = torch.tensor([0.5, 2.0]).repeat(250)
    x, log_p = model.sample(500, c)
    torch.testing.assert_close(log_p, model.log_prob(x, c), rtol=1e-8, atol=1e-8)
    # temperature widens the distribution; a power beta narrows it
    assert (spreads[0] < spreads[2]) == (condition == "temperature")


def test_gradient_loss_masks_nonfinite_energies_and_stays_finite():
    def energies(x):
        return torch.where(x[:, 0] > 1.0, torch.full_like(x[:, 0], math.inf), (x**2).sum(-1))

    target = BoltzmannTarget(energies)
    model = random_flow()
    x = torch.randn(64, 2).clamp(-0.9, 0.9)
    x[:5, 0] = 2.0
    result = gradient_loss(model, target, x, torch.full((64,), 1.0), torch.zeros(64), GradientLossConfig())
    assert not bool(result.valid[:5].any()) and bool(result.valid[5:].all())
    assert torch.isfinite(result.loss)
    result.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_soft_clip_is_identity_well_below_the_limit_and_bounded():
    v = torch.tensor([-1e30, -1e6, -15.0, -0.01, 0.0, 0.01, 15.0, 1e6, 1e30])
    out = soft_clip(v, 30.0)
    torch.testing.assert_close(out[2:7], v[2:7], rtol=5e-4, atol=0)
    assert float(out.abs().max()) <= 30.0 * (1 + 1e-12)
    torch.testing.assert_close(out[[0, -1]], torch.tensor([-30.0, 30.0]))
    assert torch.isfinite(soft_clip(torch.tensor([1e30], dtype=torch.float32), 30.0)).all()
    for dtype in (torch.float32, torch.float64):
        v = torch.tensor([0.0, 1.0, 1e9], dtype=dtype, requires_grad=True)
        soft_clip(v, 30.0).sum().backward()
        torch.testing.assert_close(v.grad, torch.tensor([1.0, 1.0, 0.0], dtype=dtype), atol=1e-6, rtol=1e-6)


def test_clipped_targets_bound_the_per_sample_loss():
    target = BoltzmannTarget(lambda x: torch.full((x.shape[0],), 1e9))  # absurd clash energies
    config = GradientLossConfig(target_clip=30.0, loss_clip=100.0)
    result = gradient_loss(
        GaussianTemperatureOracle(), target, torch.randn(8, DIM), torch.full((8,), 300.0), torch.zeros(8), config
    )
    assert float(result.per_sample.max()) <= 100.0 * (1 + 1e-12)


def test_condition_grid_is_log_spaced_with_causality_weights():
    grid = ConditionGrid(0.5, 2.0, reference=1.0, size=5, ema=0.5, causality_eps=1.0)
    torch.testing.assert_close(grid.conditions, torch.tensor([0.5, 0.5 * 2**0.5, 1.0, 2**0.5, 2.0]))
    assert grid.active(0.7, 1.5).tolist() == [False, True, True, True, False]
    torch.testing.assert_close(grid.causality_weights(), torch.ones(5))  # no losses seen yet
    index = torch.tensor([0, 1, 1, 2, 3, 4])
    grid.record_losses(index, torch.tensor([9.0, 1.0, 3.0, 0.5, 0.25, 7.0]), torch.ones(6, dtype=torch.bool))
    torch.testing.assert_close(grid.running_loss, torch.tensor([9.0, 2.0, 0.5, 0.25, 7.0]))
    # points strictly between c0 and each point: 0.5 <- {0.707}, 2.0 <- {1.414}; c0 itself and its neighbours have none
    torch.testing.assert_close(grid.causality_weights(), torch.tensor([math.exp(-2.0), 1.0, 1.0, 1.0, math.exp(-0.25)]))
    grid.record_losses(torch.tensor([1]), torch.tensor([4.0]), torch.ones(1, dtype=torch.bool))
    assert float(grid.running_loss[1]) == pytest.approx(0.5 * 2.0 + 0.5 * 4.0)


def test_condition_grid_snis_table_is_an_ema_and_round_trips():
    model, target = GaussianTemperatureOracle(), harmonic_target()
    grid = ConditionGrid(0.5, 2.0, reference=1.0, size=3, ema=0.9, causality_eps=0.0)
    grid.refresh(model, target, torch.tensor([0, 2]), 4000)
    exact = DIM / (2 * grid.conditions)
    assert math.isnan(float(grid.expectation[1]))
    torch.testing.assert_close(grid.expectation[[0, 2]], exact[[0, 2]], rtol=0.05, atol=0)
    first = grid.expectation.clone()
    grid.refresh(model, target, torch.tensor([0, 2]), 4000)
    assert not torch.equal(grid.expectation[[0, 2]], first[[0, 2]])
    torch.testing.assert_close(grid.ess[[0, 2]], torch.ones(2, dtype=torch.float64))  # exact model: equal weights
    other = ConditionGrid(0.5, 2.0, reference=1.0, size=3, ema=0.9, causality_eps=0.0)
    other.load_state_dict(grid.state_dict())
    torch.testing.assert_close(other.expectation, grid.expectation, equal_nan=True)
    with pytest.raises(ValueError, match="different conditions"):
        ConditionGrid(0.4, 2.0, 1.0, 3, 0.9, 0.0).load_state_dict(grid.state_dict())


def test_grid_and_continuous_losses_run_on_a_flow():
    model, target = random_flow(), MultiWell(2)
    grid = ConditionGrid(0.5, 1.5, reference=1.0, size=4, ema=0.9, causality_eps=1.0)
    active = grid.active(0.5, 1.5)
    grid.refresh(model, target, torch.nonzero(active).flatten(), 64)
    result = grid_gradient_loss(model, target, grid, active, 32, GradientLossConfig())
    assert torch.isfinite(result.loss) and result.per_sample.shape == (32,)
    assert not bool(torch.isnan(grid.running_loss).all())
    result, estimate = continuous_gradient_loss(
        model, target, torch.tensor([0.6, 1.2]), 64, 32, GradientLossConfig(), reference=1.0
    )
    assert torch.isfinite(result.loss) and estimate.ess.shape == (2,)
    result.loss.backward()


def test_grid_pool_keeps_each_points_samples_and_their_derivatives():
    """The pool of a grid point holds its refresh's samples, with d/dc log q at that point's condition."""
    torch.manual_seed(3)
    model, target = random_flow(), MultiWell(2)
    grid = ConditionGrid(0.5, 1.5, reference=1.0, size=4, ema=0.9, causality_eps=0.0)
    active = grid.active(0.5, 1.5)
    with pytest.raises(RuntimeError, match="refresh"):
        grid_gradient_loss(model, target, grid, active, 8, GradientLossConfig())
    grid.refresh(model, target, torch.tensor([1, 3]), 16)
    assert grid.pooled.tolist() == [False, True, False, True]
    for k in (1, 3):
        c = grid.conditions[k].to(torch.float32).expand(16)
        torch.testing.assert_close(grid.pool_dlogq[k], target.dlogq_dc(grid.pool_x[k], c))
    # a loss drawn from the pool equals the loss at those points with freshly computed derivatives
    only = torch.tensor([False, True, False, False])
    torch.manual_seed(5)
    pooled = grid_gradient_loss(model, target, grid, only, 8, GradientLossConfig())
    torch.manual_seed(5)
    torch.randint(1, (8,))  # the draw of the grid points (one candidate)
    member = torch.randint(16, (8,))
    x = grid.pool_x[1, member]
    c = grid.conditions[1].to(torch.float32).expand(8)
    fresh = gradient_loss(model, target, x, c, grid.expectation[1].to(c).expand(8), GradientLossConfig())
    torch.testing.assert_close(pooled.loss, fresh.loss)
    other = ConditionGrid(0.5, 1.5, reference=1.0, size=4, ema=0.9, causality_eps=0.0)
    other.load_state_dict(grid.state_dict())
    assert torch.equal(other.pool_x, grid.pool_x) and other.pooled.tolist() == grid.pooled.tolist()
    assert other.pool_x.data_ptr() != grid.pool_x.data_ptr()  # a copy: a later refresh of one leaves the other


def test_evaluation_points_come_from_the_requested_source():
    model = random_flow()
    c = torch.full((50,), 1.5)
    data = torch.full((10, 2), 7.0)
    assert evaluation_points("data", model, c, 1.0, data).eq(7.0).all()
    noisy = evaluation_points("data", model, c, 1.0, data, noise=0.1)
    assert 0.05 < float((noisy - 7.0).std()) < 0.2
    assert evaluation_points("samples_c", model, c, 1.0).shape == (50, 2)
    assert not evaluation_points("samples_c0", model, c, 1.0).requires_grad
    with pytest.raises(ValueError, match="needs training data"):
        evaluation_points("data", model, c, 1.0)


def test_log_uniform_conditions_cover_the_range():
    c = log_uniform_conditions(0.5, 2.0, 20000, torch.empty(0))
    assert 0.5 <= float(c.min()) and float(c.max()) <= 2.0
    assert float(torch.log(c).mean()) == pytest.approx(0.0, abs=0.02)


def test_nll_at_several_conditions_is_the_mean_over_frames():
    model = GaussianTemperatureOracle()
    x = torch.randn(10, DIM)
    c = torch.tensor([0.5] * 4 + [2.0] * 6)
    expected = -(model.log_prob(x[:4], 0.5).sum() + model.log_prob(x[4:], 2.0).sum()) / 10
    torch.testing.assert_close(nll(model, x, c), expected)


def test_reverse_kl_of_the_exact_model_is_minus_log_Z():
    model, target = GaussianTemperatureOracle(), harmonic_target()
    T = 1.7
    assert float(reverse_kl(model, target, 256, T).detach()) == pytest.approx(
        -0.5 * DIM * math.log(2 * math.pi * T), abs=1e-10
    )


def test_reweighted_nll_weights_a_c0_proposal_towards_c():
    model, target = GaussianTemperatureOracle(), harmonic_target()
    proposal, log_p = model.sample(4000, 1.0)
    c = torch.tensor([1.0, 1.5])
    result = reweighted_nll(model, target, proposal, log_p, c)
    assert float(result.ess[0]) == pytest.approx(1.0)  # proposal = target at c0
    assert 0.3 < float(result.ess[1]) < 1.0
    # the weighted NLL estimates the cross-entropy of p(.|c) with itself: the entropy
    entropy = 0.5 * DIM * (1 + torch.log(2 * math.pi * c))
    torch.testing.assert_close(result.loss, entropy.mean(), rtol=0.03, atol=0)


def test_energy_free_target_is_the_model_density_raised_to_c0_over_c():
    model = GaussianTemperatureOracle()
    x = torch.randn(16, DIM)
    surrogate = energy_free_target(model, 1.0, "temperature")
    # log q(x|T) = log p(x|T0) * T0 / T; differences between samples match the exact target
    exact = harmonic_target()
    for T in (0.5, 2.0):
        d_sur = surrogate.log_q(x, T) - surrogate.log_q(x[:1], T)
        d_ex = exact.log_q(x, T) - exact.log_q(x[:1], T)
        torch.testing.assert_close(d_sur, d_ex)
    power = energy_free_target(GaussianPowerOracle(), 1.0, "beta")
    torch.testing.assert_close(
        power.dlogq_dc(x, 2.0) - power.dlogq_dc(x[:1], 2.0),
        power_target().dlogq_dc(x, 2.0) - power_target().dlogq_dc(x[:1], 2.0),
    )
    with pytest.raises(ValueError, match="condition"):
        energy_free_target(model, 1.0, "pressure")


def test_snis_at_conditions_groups_samples_by_condition():
    model, target = GaussianTemperatureOracle(), harmonic_target()
    x, c, dlogq, estimate = snis_at_conditions(model, target, torch.tensor([0.5, 2.0]), 3000)
    assert x.shape == (6000, DIM) and c[:3000].eq(0.5).all() and c[3000:].eq(2.0).all()
    torch.testing.assert_close(dlogq, target.dlogq_dc(x, c), rtol=0, atol=0)  # the draws' own derivatives
    torch.testing.assert_close(estimate.mean, torch.tensor([DIM / 1.0, DIM / 4.0]), rtol=0.05, atol=0)
