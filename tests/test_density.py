"""The model contract: every ConditionalDensity implementation passes the same test.

Shapes, sampler/density agreement at several conditions and per-sample
conditions, dtype following the model, gradients w.r.t. the condition, and
clear errors for bad conditions.
"""
import pytest
import torch

from trade_md.density import CONDITIONS, ConditionalDensity
from trade_md.flows import ConditionalFlow, ConditionedFlow, FlowConfig
from trade_md.generator import BoltzmannGenerator
from trade_md.testsystems import CouplingFlow, ScaledBaseFlow

SMALL = FlowConfig(hidden=(16,), bins=4)


def _perturbed(flow: ConditionalFlow) -> ConditionalFlow:
    """Move the flow away from the identity (zero-initialized last layers make every check trivial)."""
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return flow


def conditioned_temperature(_):
    flow = ConditionalFlow(["torsion", "angle", "bond", "torsion", "angle"], 1, SMALL)
    return ConditionedFlow(_perturbed(flow), reference=300.0), (200.0, 300.0, 650.0)


def conditioned_beta(_):
    flow = ConditionalFlow(["real"] * 3, 1, FlowConfig(schedule=("real/0 | *", "real/1 | *"), hidden=(16,), bins=4))
    return ConditionedFlow(_perturbed(flow), reference=1.0, condition="beta"), (0.3, 1.0, 2.5)


def scaled_base(_):
    flow = ConditionalFlow(["real"] * 2, 1, FlowConfig(schedule=("real/0 | *", "real/1 | *"), hidden=(16,), bins=4))
    return ScaledBaseFlow(ConditionedFlow(_perturbed(flow), reference=1.0)), (0.5, 1.0, 1.5)


def coupling(_):
    flow = ConditionalFlow(["real"] * 4, 1, FlowConfig(schedule=("real/0 | *", "real/1 | *"), hidden=(16,), bins=4))
    return CouplingFlow(_perturbed(flow), reference=0.27), (0.24, 0.27, 0.305)


def cartesian(request):
    torch.manual_seed(0)
    bg = BoltzmannGenerator.for_system(request.getfixturevalue("ala2"), 600.0, flow={"hidden": [16], "bins": 4})
    _perturbed(bg.flow)
    return bg.density, (300.0, 600.0, 900.0)


IMPLEMENTATIONS = {
    "ConditionedFlow(temperature)": conditioned_temperature,
    "ConditionedFlow(beta)": conditioned_beta,
    "ScaledBaseFlow": scaled_base,
    "CouplingFlow(kappa)": coupling,
    "CartesianFlow": cartesian,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def case(request):
    return IMPLEMENTATIONS[request.param](request)


def test_is_a_conditional_density_with_a_known_condition(case):
    model, _ = case
    assert isinstance(model, ConditionalDensity)
    assert model.condition in CONDITIONS


def test_sample_and_log_prob_agree_at_every_condition(case):
    model, conditions = case
    shapes = set()
    for c in conditions:
        x, log_p = model.sample(16, c)
        assert log_p.shape == (16,) and x.shape[0] == 16
        shapes.add(tuple(x.shape))
        torch.testing.assert_close(model.log_prob(x, c), log_p, rtol=0, atol=1e-7)
    assert len(shapes) == 1
    c = torch.tensor(conditions).repeat_interleave(4)  # one condition per sample
    x, log_p = model.sample(len(c), c)
    torch.testing.assert_close(model.log_prob(x, c), log_p, rtol=0, atol=1e-7)
    single = torch.stack([model.log_prob(x[i:i + 1], float(c[i]))[0] for i in range(len(c))])
    torch.testing.assert_close(single, log_p, rtol=0, atol=1e-7)


def test_the_density_depends_on_the_condition(case):
    model, conditions = case
    x, _ = model.sample(8, conditions[1])
    assert not torch.allclose(model.log_prob(x, conditions[0]), model.log_prob(x, conditions[2]))


def test_dtype_follows_the_model(case):
    model, conditions = case
    model = model.to(torch.float32)
    x, log_p = model.sample(4, conditions[0])
    assert x.dtype == log_p.dtype == torch.float32
    assert model.log_prob(x, torch.full((4,), conditions[0], dtype=torch.float32)).dtype == torch.float32


def test_log_prob_is_differentiable_in_the_condition(case):
    model, conditions = case
    x, _ = model.sample(6, conditions[1])
    c = torch.full((6,), conditions[1], requires_grad=True)
    (g,) = torch.autograd.grad(model.log_prob(x.detach(), c).sum(), c)
    assert torch.isfinite(g).all() and bool((g != 0).any())


@pytest.mark.parametrize("bad, message", [
    (0.0, "finite and > 0"), (-1.0, "finite and > 0"), (float("nan"), "finite and > 0"),
    (torch.full((5, 1), 1.0), r"shape \(5,\)"), (torch.full((4,), 1.0), r"shape \(5,\)"),
])
def test_bad_conditions_are_errors(case, bad, message):
    model, conditions = case
    x, _ = model.sample(5, conditions[1])
    if isinstance(bad, torch.Tensor):
        bad = bad * conditions[1]
    with pytest.raises(ValueError, match=message):
        model.log_prob(x, bad)
    if not isinstance(bad, torch.Tensor):
        with pytest.raises(ValueError, match=message):
            model.sample(5, bad)


@pytest.mark.gpu
def test_device_follows_the_model(case):
    model, conditions = case
    model = model.cuda()
    x, log_p = model.sample(4, conditions[0])
    assert x.is_cuda and log_p.is_cuda
    assert model.log_prob(x, conditions[0]).is_cuda
