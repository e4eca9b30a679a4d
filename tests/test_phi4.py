"""phi^4 on a periodic lattice: action and d/dkappa log q, exact 2x2 moments, Metropolis, observables."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from trade_md.density import CONDITIONS
from trade_md.flows import ConditionalFlow, FlowConfig
from trade_md.targets import Target, energy_free_target
from trade_md.testsystems import (
    CouplingFlow,
    Phi4Lattice,
    integrated_autocorrelation,
    lattice_observables,
    metropolis,
)
from trade_md.testsystems.phi4 import exact_moments


def _action_by_loops(phi: np.ndarray, kappa: float, lam: float) -> float:
    """The action of one (L, L) field written site by site (independent of the torch implementation)."""
    size = phi.shape[0]
    total = 0.0
    for i in range(size):
        for j in range(size):
            hop = phi[i, j] * (phi[(i + 1) % size, j] + phi[i, (j + 1) % size])
            total += -2 * kappa * hop + phi[i, j] ** 2 + lam * (phi[i, j] ** 2 - 1) ** 2
    return total


@pytest.mark.parametrize("size", [2, 4, 6])
def test_action_matches_a_site_by_site_sum(size):
    target = Phi4Lattice(size, lam=0.03)
    x = torch.randn(5, size * size) * 1.5
    kappa = torch.tensor([0.1, 0.25, 0.3, 0.5, 1.0])
    expected = [_action_by_loops(x[b].reshape(size, size).numpy(), float(kappa[b]), 0.03) for b in range(5)]
    torch.testing.assert_close(target.action(x, kappa), torch.tensor(expected), rtol=1e-12, atol=1e-10)
    assert isinstance(target, Target) and target.condition == "kappa" and "kappa" in CONDITIONS


def test_dlogq_dkappa_matches_autograd_and_finite_differences():
    target = Phi4Lattice(8)
    x = torch.randn(16, 64)
    kappa = torch.full((16,), 0.27, requires_grad=True)
    terms = target.evaluate(x, kappa)
    (autograd,) = torch.autograd.grad(terms.log_q.sum(), kappa)
    torch.testing.assert_close(terms.dlogq_dc, autograd, rtol=1e-12, atol=1e-10)
    h = 1e-5
    fd = (target.log_q(x, 0.27 + h) - target.log_q(x, 0.27 - h)) / (2 * h)
    torch.testing.assert_close(terms.dlogq_dc, fd, rtol=1e-7, atol=1e-6)
    assert terms.dlogq_dc.shape == (16,)


def test_force_matches_finite_differences_of_the_action():
    """The field gradient (what a backward-KL boundary differentiates) is consistent with the action."""
    target = Phi4Lattice(4)
    x = torch.randn(3, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(target.action(x, 0.3).sum(), x)
    h = 1e-6
    for site in (0, 5, 15):
        e = torch.zeros(16)
        e[site] = h
        fd = (target.action(x.detach() + e, 0.3) - target.action(x.detach() - e, 0.3)) / (2 * h)
        torch.testing.assert_close(grad[:, site], fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Phi4Lattice(3), "even integer >= 2"),
        (lambda: Phi4Lattice(8, lam=0.0), "lam"),
        (lambda: Phi4Lattice(4).action(torch.zeros(2, 4, 4), 0.3), r"shape \(batch, 16\)"),
        (lambda: Phi4Lattice(4).action(torch.zeros(2, 15), 0.3), r"4x4 lattice"),
        (lambda: Phi4Lattice(4).action(torch.zeros(2, 16), 0.0), "kappa"),
        (lambda: Phi4Lattice(4).action(torch.zeros(2, 16), -0.2), "kappa"),
        (lambda: metropolis(Phi4Lattice(2), torch.tensor([0.2, -0.1]), 10, 0), "kappa"),
        (lambda: energy_free_target(None, 0.27, "kappa"), "temperature' or 'beta'"),
    ],
)
def test_bad_inputs_are_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_exact_moments_converge_and_decouple_at_small_kappa():
    for kappa in (0.2, 0.3):
        coarse, fine = exact_moments(kappa, points=32), exact_moments(kappa, points=40, half_width=7.0)
        for key in coarse:
            assert coarse[key] == pytest.approx(fine[key], rel=1e-7)
    # kappa -> 0: independent sites, <m^2> = <phi^2> / 4 and action per site = <phi^2 + lam (phi^2 - 1)^2>
    lam = 0.02
    weight = lambda p: math.exp(-(p * p + lam * (p * p - 1) ** 2))  # noqa: E731
    z = integrate.quad(weight, -np.inf, np.inf)[0]
    phi2 = integrate.quad(lambda p: p * p * weight(p), -np.inf, np.inf)[0] / z
    local = integrate.quad(lambda p: (p * p + lam * (p * p - 1) ** 2) * weight(p), -np.inf, np.inf)[0] / z
    tiny = exact_moments(1e-9, lam, points=32)
    assert tiny["m2"] == pytest.approx(phi2 / 4, rel=1e-7)
    assert tiny["action"] == pytest.approx(local, rel=1e-7)


@pytest.mark.parametrize("kappa", [0.2, 0.3])
def test_metropolis_reproduces_exact_2x2_observables(kappa):
    """Seeded: every observable within 4 jackknife standard errors of exact quadrature (the errors are
    autocorrelation-aware: whole chains are the jackknife groups)."""
    ex = exact_moments(kappa, points=32)
    exact = {
        "abs_m": ex["abs_m"],
        "action": ex["action"],
        "susceptibility": 4 * (ex["m2"] - ex["abs_m"] ** 2),
        "binder": 1 - ex["m4"] / (3 * ex["m2"] ** 2),
    }
    chains = metropolis(Phi4Lattice(2), torch.full((32,), kappa), sweeps=2500, thermalize=300, seed=7)
    assert 0.4 < float(chains.acceptance.mean()) < 0.6  # the tuned step
    c, t = chains.magnetization.shape
    obs = lattice_observables(chains.magnetization.flatten().numpy(), chains.action.flatten().numpy(), 4,
                              np.repeat(np.arange(c), t))
    for name, value in exact.items():
        assert abs(obs[name].value - value) < 4 * obs[name].stderr, (name, obs[name], value)
        assert obs[name].stderr < 0.1 * abs(value)  # the bound is not vacuous


def test_metropolis_keeps_the_last_configurations_and_their_measurements():
    target = Phi4Lattice(4)
    chains = metropolis(target, torch.tensor([0.2, 0.3]), sweeps=40, thermalize=5, every=4, keep=3, seed=0)
    assert chains.magnetization.shape == (2, 10) and chains.fields.shape == (2, 3, 16)
    torch.testing.assert_close(target.magnetization(chains.fields[:, -1]), chains.magnetization[:, -1])
    torch.testing.assert_close(target.action(chains.fields[:, -1], chains.kappa), chains.action[:, -1])


def test_observables_follow_their_formulas_and_weights_act_as_multiplicities(rng):
    m, s = rng.normal(0.5, 1.0, 600), rng.normal(10.0, 2.0, 600)
    groups = np.arange(600) % 12
    obs = lattice_observables(m, s, 16, groups)
    assert obs["abs_m"].value == pytest.approx(np.abs(m).mean())
    assert obs["action"].value == pytest.approx(s.mean() / 16)
    assert obs["susceptibility"].value == pytest.approx(16 * ((m**2).mean() - np.abs(m).mean() ** 2))
    assert obs["binder"].value == pytest.approx(1 - (m**4).mean() / (3 * (m**2).mean() ** 2))
    # i.i.d. data: the jackknife error of a mean is the standard error
    assert obs["action"].stderr == pytest.approx(s.std(ddof=1) / math.sqrt(600) / 16, rel=0.35)
    # weight 2 on the first half == those samples twice
    half = np.arange(600) < 300
    weighted = lattice_observables(m, s, 16, groups, np.where(half, math.log(2.0), 0.0))
    doubled = lattice_observables(np.r_[m, m[half]], np.r_[s, s[half]], 16, np.r_[groups, groups[half]])
    for name in weighted:
        assert weighted[name].value == pytest.approx(doubled[name].value, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 groups"):
        lattice_observables(m, s, 16, np.zeros(600, dtype=int))


def test_integrated_autocorrelation_of_ar1_chains(rng):
    rho, chains, length = 0.8, 40, 4000
    x = np.zeros((chains, length))
    noise = rng.normal(size=(chains, length))
    for t in range(1, length):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    assert integrated_autocorrelation(x) == pytest.approx((1 + rho) / (2 * (1 - rho)), rel=0.1)
    assert integrated_autocorrelation(noise) == pytest.approx(0.5, abs=0.05)


def test_coupling_flow_widens_with_kappa_and_names_kappa_in_errors():
    flow = ConditionalFlow(["real"] * 4, 1, FlowConfig(schedule=("real/0 | *", "real/1 | *"), hidden=(8,), bins=4))
    model = CouplingFlow(flow, reference=0.27)
    assert model.condition == "kappa"
    # identity transform at initialization: the base is N(0, kappa / kappa0)
    x, _ = model.sample(20000, 0.54)
    assert float(x.detach().var()) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="kappa"):
        model.log_prob(x[:3], -0.1)
    with pytest.raises(ValueError, match="kappa"):
        model.sample(3, 0.0)


def test_checkerboard_order_puts_every_neighbour_on_the_other_half():
    lattice = Phi4Lattice(6)
    order = lattice.checkerboard_order()
    assert sorted(order.tolist()) == list(range(36))
    position = torch.argsort(order)  # site -> flow coordinate
    for site in range(36):
        r, c = divmod(site, 6)
        for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            neighbour = (rr % 6) * 6 + cc % 6
            assert position[site] % 2 != position[neighbour] % 2, (site, neighbour)


def test_coupling_flow_with_an_order_is_the_flow_of_the_reordered_field():
    torch.manual_seed(0)
    flow = ConditionalFlow(["real"] * 4, 1, FlowConfig(schedule=("real/0 | *", "real/1 | *"), hidden=(8,), bins=4))
    with torch.no_grad():  # a non-trivial flow: random last layers
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    order = [2, 0, 3, 1]
    plain, ordered = CouplingFlow(flow, 0.27), CouplingFlow(flow, 0.27, order=order)
    x = torch.randn(50, 4)
    assert torch.allclose(ordered.log_prob(x, 0.3), plain.log_prob(x[:, order], 0.3), atol=1e-6)
    y, log_p = ordered.sample(50, 0.3)
    assert torch.allclose(ordered.log_prob(y, 0.3), log_p, atol=1e-4)
    assert set(ordered.state_dict()) - set(plain.state_dict()) == set() and "order" in ordered.state_dict()
    assert not torch.equal(ordered.state_dict()["order"], plain.state_dict()["order"])
    with pytest.raises(ValueError, match="permutation"):
        CouplingFlow(flow, 0.27, order=[0, 1, 1, 2])
