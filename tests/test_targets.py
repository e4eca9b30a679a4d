"""Targets: derivatives, shapes, exact log Z and exact samplers."""

import math

import pytest
import torch

from trade_md import units
from trade_md.density import CONDITIONS, as_condition
from trade_md.targets import BoltzmannTarget, PowerTarget, Target, energy_free_target
from trade_md.testsystems import GaussianMixturePower, MultiWell, ToyTarget, TwoMoonsPosterior


def harmonic(x):
    """U = k_B |x|^2 / 2 in kJ/mol, so that U / (k_B T) = |x|^2 / (2 T)."""
    return units.KB * 0.5 * (x**2).sum(-1)


# (target, conditions to check at, sample shape)
TARGETS = {
    "boltzmann": (lambda: BoltzmannTarget(harmonic), (250.0, 600.0)),
    "multiwell": (lambda: MultiWell(3), (0.5, 1.5)),
    "gmm_power": (lambda: GaussianMixturePower(), (0.3, 2.5)),
    "two_moons": (lambda: TwoMoonsPosterior(), (0.3, 2.5)),
}


@pytest.fixture(params=sorted(TARGETS))
def target_case(request):
    make, conditions = TARGETS[request.param]
    target = make()
    dim = getattr(target, "dim", 2 if request.param != "boltzmann" else 4)
    return target, conditions, dim


def test_every_target_satisfies_the_protocol(target_case):
    target, _, _ = target_case
    assert isinstance(target, Target)
    assert target.condition in CONDITIONS
    assert isinstance(target, ToyTarget) == hasattr(target, "log_Z")


def test_dlogq_dc_is_the_finite_difference_of_log_q(target_case):
    target, conditions, dim = target_case
    x = 0.3 * torch.randn(64, dim)
    for c in conditions:
        h = 1e-5 * c
        fd = (target.log_q(x, c + h) - target.log_q(x, c - h)) / (2 * h)
        torch.testing.assert_close(target.dlogq_dc(x, c), fd, rtol=1e-6, atol=1e-6)


def test_per_sample_conditions_equal_scalar_conditions(target_case):
    target, conditions, dim = target_case
    x = torch.randn(6, dim)
    c = torch.tensor([conditions[0]] * 3 + [conditions[1]] * 3)
    terms = target.evaluate(x, c)
    for rows, value in ((slice(0, 3), conditions[0]), (slice(3, 6), conditions[1])):
        torch.testing.assert_close(terms.log_q[rows], target.log_q(x[rows], value))
        torch.testing.assert_close(terms.dlogq_dc[rows], target.dlogq_dc(x[rows], value))


def test_B1_conditions_are_rejected_not_broadcast(target_case):
    """A (B,) energy against a (B, 1) temperature would broadcast to (B, B) (as in the research code)."""
    target, conditions, dim = target_case
    x = torch.randn(5, dim)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        target.log_q(x, torch.full((5, 1), conditions[0]))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        target.dlogq_dc(x, torch.full((4,), conditions[0]))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_nonpositive_or_nonfinite_conditions_are_rejected(target_case, bad):
    target, _, dim = target_case
    with pytest.raises(ValueError, match="finite and > 0"):
        target.log_q(torch.randn(3, dim), bad)


def test_energy_with_trailing_dimension_is_rejected():
    target = BoltzmannTarget(lambda x: harmonic(x)[:, None])
    with pytest.raises(ValueError, match=r"energy_fn must return a tensor of shape \(3,\)"):
        target.log_q(torch.randn(3, 2), 300.0)


def test_boltzmann_target_is_exp_minus_u_over_kT_with_its_T2_derivative():
    """One formula, U / (k_B T^2) -- the research code had -U / T^3 on one path."""
    target = BoltzmannTarget(harmonic)
    x = torch.randn(7, 4)
    T = torch.linspace(250.0, 700.0, 7)
    u = harmonic(x)
    torch.testing.assert_close(target.log_q(x, T), -u / (units.KB * T))
    torch.testing.assert_close(target.dlogq_dc(x, T), u / (units.KB * T**2))
    assert not torch.allclose(target.dlogq_dc(x, T), u / (units.KB * T**3))


def test_every_temperature_path_uses_the_units_derivative(monkeypatch):
    """d/dT log q is implemented once: BoltzmannTarget, MultiWell and the energy-free target all
    call units.dlogq_dT (the research code computed it by different formulas on different paths)."""
    calls = []
    original = units.dlogq_dT

    def counting(energy, temperature):
        calls.append(energy.shape)
        return original(energy, temperature)

    monkeypatch.setattr(units, "dlogq_dT", counting)

    class Oracle(torch.nn.Module):
        def log_prob(self, x, c):
            return -0.5 * (x**2).sum(-1) / c

    x = torch.randn(5, 2)
    BoltzmannTarget(harmonic).dlogq_dc(x, 300.0)
    MultiWell(2).dlogq_dc(x, 0.7)
    energy_free_target(Oracle(), 1.0, "temperature").dlogq_dc(x, 0.7)
    assert len(calls) == 3


def test_nan_energies_mean_zero_density():
    target = BoltzmannTarget(lambda x: torch.tensor([1.0, math.nan, math.inf]))
    terms = target.evaluate(torch.zeros(3, 2), 300.0)
    assert terms.log_q[0] == pytest.approx(-1.0 / (units.KB * 300.0))
    assert terms.log_q[1] == -math.inf and terms.log_q[2] == -math.inf
    assert terms.dlogq_dc[1] == math.inf and terms.dlogq_dc[2] == math.inf


def test_tempered_posterior_derivative_is_the_log_likelihood():
    """d/dbeta [log prior + beta log L] = log L, with no 1/beta (the research code's
    likelihood-power derivative of tempered posteriors was off by 1/beta)."""
    target = TwoMoonsPosterior()
    theta = 0.3 * torch.randn(50, 2)
    for beta in (0.2, 0.5, 3.0):
        d = target.dlogq_dc(theta, beta)
        torch.testing.assert_close(d, target.log_likelihood(theta))
        fd = (target.log_q(theta, beta * 1.001) - target.log_q(theta, beta * 0.999)) / (0.002 * beta)
        torch.testing.assert_close(d, fd, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(d / beta, fd, rtol=1e-2)
    torch.testing.assert_close(target.log_q(theta, 0.5), target.log_prior(theta) + 0.5 * target.log_likelihood(theta))


def test_power_target_without_untempered_part():
    target = PowerTarget(lambda x: -0.5 * (x**2).sum(-1))
    x = torch.randn(4, 3)
    torch.testing.assert_close(target.log_q(x, 2.0), -(x**2).sum(-1))


def test_multiwell_log_Z_matches_brute_force_quadrature():
    grid = torch.linspace(-5, 5, 400001)
    for T in (0.5, 1.0, 1.5):
        log_z1 = torch.logsumexp(-(grid**4 - 4 * grid**2) / T, 0) + math.log(grid[1] - grid[0])
        assert MultiWell(3).log_Z(T) == pytest.approx(3 * float(log_z1), abs=1e-8)


def test_normalization_limits_of_the_power_targets():
    assert GaussianMixturePower().log_Z(1.0) == pytest.approx(0.0, abs=1e-10)  # a normalized mixture
    assert TwoMoonsPosterior().log_Z(1e-9) == pytest.approx(0.0, abs=1e-4)  # beta -> 0: the prior


def test_gaussian_mixture_log_Z_for_a_single_component():
    # N(x; 0, s^2 I)^beta in 2-D integrates to (2 pi s^2)^(1 - beta) / beta
    target = GaussianMixturePower(means=[[0.5, -1.0]], stds=[0.7], weights=[1.0])
    for beta in (0.3, 2.0):
        exact = (1 - beta) * math.log(2 * math.pi * 0.49) - math.log(beta)
        assert target.log_Z(beta) == pytest.approx(exact, abs=1e-9)


SAMPLER_CASES = [
    (MultiWell(2), (0.5, 1.5), 1e-4),
    (GaussianMixturePower(), (0.4, 2.0), 1e-4),
    (TwoMoonsPosterior(), (0.3, 1.0), 1e-3),
]


@pytest.mark.parametrize("target,conditions,h", SAMPLER_CASES, ids=["multiwell", "gmm_power", "two_moons"])
def test_exact_samples_reproduce_the_derivative_of_log_Z(target, conditions, h):
    """E_c[d/dc log q] over exact samples = d/dc log Z(c) within 5 standard errors.

    Ties sampler, log_q and log_Z together at each condition; a sampler that
    ignored the condition (as the research code's did) fails.
    """
    generator = torch.Generator().manual_seed(11)
    means = []
    for c in conditions:
        x = target.sample(40000, c, generator)
        d = target.dlogq_dc(x, c)
        exact = (target.log_Z(c * (1 + h)) - target.log_Z(c * (1 - h))) / (2 * h * c)
        stderr = float(d.std()) / math.sqrt(d.shape[0])
        assert abs(float(d.mean()) - exact) < 5 * stderr, (c, float(d.mean()), exact, stderr)
        means.append(float(d.mean()))
    assert abs(means[0] - means[1]) > 20 * stderr


def test_samplers_are_seeded_and_shaped():
    for target, c in ((MultiWell(3), 1.0), (GaussianMixturePower(), 1.0), (TwoMoonsPosterior(), 1.0)):
        a = target.sample(100, c, torch.Generator().manual_seed(3))
        b = target.sample(100, c, torch.Generator().manual_seed(3))
        assert a.shape == (100, getattr(target, "dim", 2)) and a.dtype == torch.get_default_dtype()
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="positive integer"):
        MultiWell(2).sample(0, 1.0)
    with pytest.raises(ValueError, match="finite and > 0"):
        MultiWell(2).sample(10, -1.0)


def test_as_condition_keeps_the_autograd_graph():
    x = torch.zeros(3, 2)
    c = torch.tensor(2.0, requires_grad=True)
    out = as_condition(c, x)
    assert out.shape == (3,) and out.requires_grad
    with pytest.raises(ValueError, match="batch dimension"):
        as_condition(1.0, torch.tensor(1.0))
