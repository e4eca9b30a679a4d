"""Tests of trade_md.flows: transform contract, sampler/density agreement,
periodicity, normalization, temperature derivatives, domains and shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from zuko.transforms import MonotonicRQSTransform

from trade_md.config import ConfigError, from_dict
from trade_md.flows import DEFAULT_SCHEDULE, ConditionalFlow, ConditionedFlow, FlowConfig
from trade_md.flows.base import MixedBase
from trade_md.flows.config import LayerSpec, resolve_schedule
from trade_md.flows.transforms import UnitRQSTransform, wrap_angle

torch.set_num_threads(1)

T_RATIOS = (0.5, 1.0, 1.7)  # T / T0
MIXED = ("torsion", "angle", "torsion", "bond", "real", "angle")

# One single-layer schedule per layer type (on MIXED), plus context-only layers.
LAYER_TYPES = {
    "circular": ("torsion | angle, bond",),
    "bounded": ("angle, bond | torsion, real",),
    "real": ("real | torsion, angle",),
    "mixed": ("* | torsion/0",),
    "context-only": ("torsion, angle, bond, real | ",),
}


def small_config(schedule: tuple[str, ...] = DEFAULT_SCHEDULE, **kwargs) -> FlowConfig:
    return FlowConfig(schedule=schedule, **{"hidden": (24, 24), "bins": 5, **kwargs})


def make_flow(
    kinds=MIXED, config: FlowConfig | None = None, seed: int = 0, scale: float = 0.3, dtype=torch.float64
) -> ConditionalFlow:
    """A flow moved away from the identity (zero init makes every check trivial)."""
    torch.manual_seed(seed)
    flow = ConditionalFlow(kinds, context_dim=1, config=config or small_config()).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def domain_points(kinds, n: int, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    """(n, D) points well inside the domain of every kind."""
    g = torch.Generator().manual_seed(seed)
    cols = []
    for k in kinds:
        u = torch.rand(n, generator=g, dtype=dtype)
        if k == "torsion":
            cols.append((2 * u - 1) * math.pi)
        elif k == "real":
            cols.append(2.5 * torch.randn(n, generator=g, dtype=dtype))
        else:
            cols.append(0.02 + 0.96 * u)
    return torch.stack(cols, dim=-1)


def contexts(n: int, t_ratio: float, dtype=torch.float64) -> torch.Tensor:
    return torch.full((n, 1), math.log(t_ratio), dtype=dtype)


def mixed_contexts(n: int, dtype=torch.float64) -> torch.Tensor:
    """(n, 1) contexts cycling through log(T / T0) for T / T0 in T_RATIOS."""
    return torch.log(torch.tensor(T_RATIOS, dtype=dtype)).repeat(n // 3 + 1)[:n, None]


def assert_same_point(kinds, x: torch.Tensor, y: torch.Tensor, atol: float) -> None:
    """Equality on the product domain: torsions compared modulo 2 pi."""
    diff = y - x
    circular = torch.tensor([k == "torsion" for k in kinds])
    diff[:, circular] = wrap_angle(diff[:, circular])
    assert diff.abs().max() < atol


def check_contract(flow: ConditionalFlow, x: torch.Tensor, context: torch.Tensor) -> None:
    """Round trip, ladj(inverse) = -ladj(forward), log-dets against autograd slogdet."""
    z, ladj = flow.forward(x, context)
    x2, ladj2 = flow.inverse(z, context)
    assert z.shape == x.shape and ladj.shape == (x.shape[0],)
    assert_same_point(flow.kinds, x, x2, atol=1e-9)
    torch.testing.assert_close(ladj, -ladj2, rtol=0, atol=1e-9)
    assert ladj.abs().max() > 1e-3  # the check is not vacuous
    for i in range(3):
        c = context[i : i + 1]
        jac_fwd = torch.autograd.functional.jacobian(lambda v: flow.forward(v[None], c)[0][0], x[i])
        jac_inv = torch.autograd.functional.jacobian(lambda v: flow.inverse(v[None], c)[0][0], z[i])
        for jac, expected in ((jac_fwd, ladj[i]), (jac_inv, ladj2[i])):
            sign, logdet = torch.linalg.slogdet(jac)
            assert sign > 0
            torch.testing.assert_close(logdet, expected, rtol=0, atol=1e-8)


def assert_all_parameters_have_gradients(flow: ConditionalFlow) -> None:
    missing = [name for name, p in flow.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"


# ---------------------------------------------------------------- transform contract


@pytest.mark.parametrize("t_ratio", T_RATIOS)
@pytest.mark.parametrize("layer_type", sorted(LAYER_TYPES))
def test_layer_contract(layer_type: str, t_ratio: float) -> None:
    flow = make_flow(config=small_config(LAYER_TYPES[layer_type]))
    assert len(flow.layers) == 1
    x = domain_points(MIXED, 16)
    check_contract(flow, x, contexts(16, t_ratio))


@pytest.mark.parametrize("layer_type", sorted(LAYER_TYPES))
def test_layer_gradients_reach_every_parameter(layer_type: str) -> None:
    flow = make_flow(config=small_config(LAYER_TYPES[layer_type]))
    x = domain_points(MIXED, 15)
    flow.log_prob(x, mixed_contexts(15)).sum().backward()
    assert_all_parameters_have_gradients(flow)


def test_unit_spline_is_zukos_spline() -> None:
    """UnitRQSTransform = zuko's MonotonicRQSTransform(bound=1) under the map between
    their parameter bounds (tanh vs soft-clip), in both directions."""
    torch.manual_seed(2)
    k, slope = 6, 1e-3
    params = 4 * torch.randn(64, 3, 3 * k - 1, dtype=torch.float64)
    ours = UnitRQSTransform(params, slope=slope)
    bound = torch.full((3 * k - 1,), -math.log(slope), dtype=torch.float64)
    bound[: 2 * k] /= 2
    clipped = bound * torch.tanh(params / bound)
    theirs = MonotonicRQSTransform(*(clipped / (1 - clipped.abs() / bound)).split((k, k, k - 1), -1), 1.0, slope)
    x = torch.cat([2 * torch.rand(64, 2, dtype=torch.float64) - 1, 3 * torch.randn(64, 1, dtype=torch.float64)], -1)
    for a, b in zip(ours.call_and_ladj(x), theirs.call_and_ladj(x)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.inv(x), theirs.inv(x), rtol=1e-10, atol=1e-10)
    assert (ours.derivatives[..., [0, -1]] == 1).all() and ours.derivatives.min() >= slope


@pytest.mark.parametrize("t_ratio", T_RATIOS)
def test_flow_contract(t_ratio: float) -> None:
    flow = make_flow(config=small_config(repeats=2))
    x = domain_points(MIXED, 16)
    check_contract(flow, x, contexts(16, t_ratio))


def test_every_parameter_gets_gradients_from_nll_and_double_backward() -> None:
    flow = make_flow(config=small_config(repeats=2))
    x = domain_points(MIXED, 32)
    context = mixed_contexts(32)
    flow.log_prob(x, context).sum().backward()
    assert_all_parameters_have_gradients(flow)
    flow.zero_grad()
    context.requires_grad_(True)
    (g,) = torch.autograd.grad(flow.log_prob(x, context).sum(), context, create_graph=True)
    g.square().sum().backward()
    assert_all_parameters_have_gradients(flow)


def test_identity_at_initialization() -> None:
    flow = ConditionalFlow(MIXED, config=small_config()).double()
    x = domain_points(MIXED, 8)
    for t_ratio in T_RATIOS:
        z, ladj = flow.forward(x, contexts(8, t_ratio))
        torch.testing.assert_close(z, x)
        assert ladj.abs().max() < 1e-12


# ---------------------------------------------------------------- sampler and density


@pytest.mark.parametrize("dtype, tol, scale", [(torch.float64, 1e-9, 0.3), (torch.float32, 1e-3, 0.2)])
def test_sample_log_density_matches_log_prob(dtype, tol: float, scale: float) -> None:
    # float32 round trips lose precision where the splines are very steep, hence the milder flow
    flow = make_flow(config=small_config(repeats=2), dtype=dtype, scale=scale)
    for t_ratio in T_RATIOS:
        x, log_p = flow.sample(500, contexts(500, t_ratio, dtype))
        assert x.dtype == dtype and x.shape == (500, len(MIXED)) and log_p.shape == (500,)
        assert torch.isfinite(log_p).all()
        torch.testing.assert_close(flow.log_prob(x, contexts(500, t_ratio, dtype)), log_p, rtol=tol, atol=tol)


def test_sample_log_density_matches_log_prob_alanine_sized() -> None:
    kinds = ["bond"] * 9 + ["angle"] * 20 + ["torsion"] * 19
    flow = make_flow(kinds, config=FlowConfig(hidden=(64, 64)), scale=0.05, dtype=torch.float32)
    context = mixed_contexts(150, torch.float32)
    x, log_p = flow.sample(150, context)
    torch.testing.assert_close(flow.log_prob(x, context), log_p, rtol=0, atol=5e-3)


@pytest.mark.parametrize("t_ratio", T_RATIOS)
@pytest.mark.parametrize("sigma0", [0.02, 0.1, 0.5])
def test_base_matches_scipy(sigma0: float, t_ratio: float) -> None:
    """Base density and sampler at temperature T (a sampler that ignored T, as the research code's did, fails)."""
    base = MixedBase(["torsion", "angle", "real"], bounded_sigma=sigma0, real_sigma=1.3).double()
    log_t = torch.full((20000,), math.log(t_ratio), dtype=torch.float64)
    torch.manual_seed(3)
    z = base.rsample(log_t)
    sigma_b, sigma_r = sigma0 * math.sqrt(t_ratio), 1.3 * math.sqrt(t_ratio)
    bounded = stats.truncnorm(-0.5 / sigma_b, 0.5 / sigma_b, loc=0.5, scale=sigma_b)
    laws = [stats.uniform(-math.pi, 2 * math.pi), bounded, stats.norm(0, sigma_r)]
    for j, law in enumerate(laws):
        assert stats.kstest(z[:, j].numpy(), law.cdf).pvalue > 1e-3
    expected = sum(law.logpdf(z[:, j].numpy()) for j, law in enumerate(laws))
    np.testing.assert_allclose(base.log_prob(z, log_t).numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind, interval", [("angle", (0.0, 1.0)), ("torsion", (-math.pi, math.pi))])
def test_samples_follow_the_density_at_each_temperature(kind: str, interval) -> None:
    """Kolmogorov-Smirnov test of flow samples against the CDF of exp(log_prob) (1-D).

    Catches a sampler that ignores T, which sampler/density agreement cannot.
    """
    flow = make_flow((kind,))
    grid = torch.linspace(*interval, 200_001, dtype=torch.float64)
    for t_ratio in T_RATIOS:
        with torch.no_grad():
            density = flow.log_prob(grid[:, None], contexts(grid.numel(), t_ratio)).exp()
            torch.manual_seed(7)
            x, _ = flow.sample(20000, contexts(20000, t_ratio))
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(density, grid)])
        assert abs(cdf[-1].item() - 1) < 1e-4  # normalization by quadrature
        result = stats.kstest(x[:, 0].numpy(), lambda v: np.interp(v, grid.numpy(), cdf.numpy()))
        assert result.pvalue > 1e-3, (t_ratio, result)


def test_sample_is_reparametrized_in_context_and_parameters() -> None:
    flow = make_flow(config=small_config(repeats=2))
    c = torch.log(torch.tensor([[0.7], [1.3], [1.6], [0.5]], dtype=torch.float64)).requires_grad_(True)
    torch.manual_seed(5)
    x, log_p = flow.sample(4, c)
    (dx_dc,) = torch.autograd.grad(x.sum(), c, retain_graph=True)
    h = 1e-6
    with torch.no_grad():
        torch.manual_seed(5)
        x_plus, _ = flow.sample(4, c + h)
        torch.manual_seed(5)
        x_minus, _ = flow.sample(4, c - h)
    diff = x_plus - x_minus
    circular = torch.tensor([k == "torsion" for k in MIXED])
    diff[:, circular] = wrap_angle(diff[:, circular])
    torch.testing.assert_close(dx_dc[:, 0], diff.sum(-1) / (2 * h), rtol=1e-5, atol=1e-6)
    assert dx_dc.abs().min() > 0
    (x.sum() + log_p.sum()).backward()
    assert_all_parameters_have_gradients(flow)


# ---------------------------------------------------------------- periodicity


def test_log_prob_continuous_across_torsion_boundary() -> None:
    flow = make_flow(config=small_config(repeats=2))
    x = domain_points(MIXED, 64)

    def log_p_at(i: int, angle: float, c: torch.Tensor) -> torch.Tensor:
        xi = x.clone()
        xi[:, i] = angle
        return flow.log_prob(xi, c)

    for t_ratio in T_RATIOS:
        c = contexts(64, t_ratio)
        for i in (j for j, k in enumerate(MIXED) if k == "torsion"):
            torch.testing.assert_close(log_p_at(i, -math.pi, c), log_p_at(i, math.pi, c), rtol=0, atol=1e-10)
            # the jump between pi - h and -pi + h vanishes linearly with h
            jump = {h: (log_p_at(i, math.pi - h, c) - log_p_at(i, -math.pi + h, c)).abs().max() for h in (1e-3, 1e-6)}
            assert jump[1e-6] < 3e-3 * jump[1e-3] + 1e-10 and jump[1e-6] < 1e-2
            assert (log_p_at(i, math.pi, c) - log_p_at(i, 2.0, c)).abs().max() > 1e-2  # log p depends on x_i


# ---------------------------------------------------------------- normalization


@pytest.mark.parametrize("t_ratio", T_RATIOS)
@pytest.mark.parametrize("kinds, box", [
    (("torsion", "angle"), ((-math.pi, math.pi), (0.0, 1.0))),
    (("real", "torsion"), ((-8.0, 8.0), (-math.pi, math.pi))),  # mass beyond |x| = 8: < 1e-8
])
def test_density_integrates_to_one(kinds, box, t_ratio: float) -> None:
    # moderately perturbed: for very peaky densities the uniform-box estimator is heavy-tailed
    flow = make_flow(kinds, config=small_config(repeats=2, hidden=(16, 16), bounded_sigma=0.2), scale=0.2)
    n = 300_000
    g = torch.Generator().manual_seed(11)
    lo = torch.tensor([b[0] for b in box], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in box], dtype=torch.float64)
    x = lo + (hi - lo) * torch.rand(n, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        p = flow.log_prob(x, contexts(n, t_ratio)).exp()
    volume = float(torch.prod(hi - lo))
    integral = volume * p.mean().item()
    stderr = volume * p.std().item() / math.sqrt(n)
    assert stderr < 0.015  # the test resolves a few per cent
    assert abs(integral - 1) < 3 * stderr, (integral, stderr)


# ---------------------------------------------------------------- temperature derivatives


def test_dlogp_dcontext_matches_finite_differences() -> None:
    flow = make_flow(config=small_config(repeats=2))
    x = domain_points(MIXED, 24)
    c = mixed_contexts(24).requires_grad_(True)
    (g,) = torch.autograd.grad(flow.log_prob(x, c).sum(), c)
    h = 1e-5
    with torch.no_grad():
        fd = (flow.log_prob(x, c + h) - flow.log_prob(x, c - h)) / (2 * h)
    torch.testing.assert_close(g[:, 0], fd, rtol=1e-5, atol=1e-7)
    assert g.abs().max() > 1e-2


def test_dlogp_dtemperature_matches_finite_differences() -> None:
    model = ConditionedFlow(make_flow(config=small_config(repeats=2)), reference=300.0)
    x = domain_points(MIXED, 12)
    temperature = torch.tensor([150.0, 300.0, 510.0], dtype=torch.float64).repeat(4).requires_grad_(True)
    (g,) = torch.autograd.grad(model.log_prob(x, temperature).sum(), temperature)
    h = 1e-3
    with torch.no_grad():
        fd = (model.log_prob(x, temperature + h) - model.log_prob(x, temperature - h)) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-9)


def test_double_backward_gradient_matches_finite_differences() -> None:
    """The TRADE path: d/dtheta of a loss on g = d/dc log p (create_graph=True)."""
    flow = make_flow(config=small_config(repeats=2))
    x = domain_points(MIXED, 12)
    c0 = mixed_contexts(12)

    def loss() -> torch.Tensor:
        c = c0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(flow.log_prob(x, c).sum(), c, create_graph=True)
        return g.square().sum()

    params = [p for name, p in flow.named_parameters() if name.endswith("hyper.0.weight")]
    grads = torch.autograd.grad(loss(), params)

    def central_difference(p: torch.Tensor, h: float) -> float:
        values = []
        for step in (h, -2 * h, h):
            with torch.no_grad():
                p[0, 0] += step
            values.append(loss().item())
        return (values[0] - values[1]) / (2 * h)

    for p, grad in zip(params, grads):
        fd = (4 * central_difference(p, 1e-5) - central_difference(p, 2e-5)) / 3  # Richardson, O(h^4)
        assert abs(grad[0, 0].item() - fd) < 1e-5 * max(1.0, abs(fd)), (grad[0, 0].item(), fd)


# ---------------------------------------------------------------- domains and shapes


def test_out_of_domain_gives_minus_inf_and_finite_gradients() -> None:
    flow = make_flow(config=small_config(repeats=2))
    x = domain_points(MIXED, 8)
    bad = [(0, 3.2), (2, -3.2), (1, -0.01), (5, 1.01), (3, 1.5), (4, math.inf), (0, math.nan)]
    for row, (col, value) in enumerate(bad):
        x[row, col] = value
    context = contexts(8, 1.0)
    log_p = flow.log_prob(x, context)
    assert torch.isneginf(log_p[:7]).all() and torch.isfinite(log_p[7])
    log_p[7].backward()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters())


def test_boundaries_are_inside_the_domain() -> None:
    flow = make_flow(config=small_config())
    x = torch.tensor([[-math.pi, 0.0, math.pi, 1.0, -30.0, 0.5]], dtype=torch.float64)
    assert torch.isfinite(flow.log_prob(x, contexts(1, 1.0))).all()


def test_shape_errors_are_clear() -> None:
    flow = make_flow(config=small_config())
    x, c = domain_points(MIXED, 4), contexts(4, 1.0)
    for bad_x, bad_c in [(x[0], c), (x[:, :3], c), (x, c[:, 0]), (x, c[:3]), (x, torch.zeros(4, 2, dtype=x.dtype))]:
        with pytest.raises(ValueError, match="shape"):
            flow.log_prob(bad_x, bad_c)
        with pytest.raises(ValueError, match="shape"):
            flow.inverse(bad_x, bad_c)
        with pytest.raises(ValueError, match="shape"):
            flow.forward(bad_x, bad_c)
    with pytest.raises(ValueError, match="shape"):
        flow.sample(5, c)
    with pytest.raises(ValueError, match="dtype"):
        flow.log_prob(x.float(), c.float())
    with pytest.raises(ValueError, match="kind"):
        ConditionalFlow(["torsion", "dihedral"])
    with pytest.raises(ValueError, match="kinds"):
        ConditionalFlow("torsion")
    with pytest.raises(ValueError, match="context_dim"):
        ConditionalFlow(["torsion"], context_dim=0)


def test_extra_context_columns() -> None:
    flow = ConditionalFlow(MIXED, context_dim=3, config=small_config()).double()
    c = torch.cat([contexts(6, 1.3), torch.randn(6, 2, dtype=torch.float64)], dim=-1)
    x, log_p = flow.sample(6, c)
    torch.testing.assert_close(flow.log_prob(x, c), log_p)


@pytest.mark.gpu
def test_runs_on_cuda() -> None:
    flow = make_flow(config=small_config(repeats=2)).cuda()
    c = mixed_contexts(64).cuda().requires_grad_(True)
    x, log_p = flow.sample(64, c)
    assert x.is_cuda and log_p.is_cuda
    torch.testing.assert_close(flow.log_prob(x.detach(), c.detach()), log_p.detach(), rtol=0, atol=1e-8)
    (g,) = torch.autograd.grad(flow.log_prob(x.detach(), c).sum(), c, create_graph=True)
    g.square().sum().backward()
    assert_all_parameters_have_gradients(flow)
    model = ConditionedFlow(flow, reference=300.0)
    assert model.sample(8, 450.0)[0].is_cuda


# ---------------------------------------------------------------- ConditionedFlow


def test_conditioned_flow_temperature_and_beta() -> None:
    flow = make_flow(config=small_config())
    x = domain_points(MIXED, 5)
    model = ConditionedFlow(flow, reference=300.0)
    torch.testing.assert_close(model.context(600.0, 1), torch.tensor([[math.log(2.0)]], dtype=torch.float64))
    torch.testing.assert_close(model.log_prob(x, 450.0), flow.log_prob(x, contexts(5, 1.5)))
    temperatures = torch.tensor([200.0, 300.0, 400.0, 500.0, 600.0], dtype=torch.float64)
    torch.testing.assert_close(model.log_prob(x, temperatures), flow.log_prob(x, torch.log(temperatures / 300)[:, None]))
    power = ConditionedFlow(flow, reference=1.0, condition="beta")
    torch.testing.assert_close(power.log_prob(x, 0.5), flow.log_prob(x, contexts(5, 2.0)))
    for m, cond in ((model, 450.0), (model, temperatures), (power, torch.full((5,), 0.8, dtype=torch.float64))):
        s, log_p = m.sample(5, cond)
        assert s.shape == (5, len(MIXED)) and log_p.shape == (5,)
        torch.testing.assert_close(m.log_prob(s, cond), log_p)


def test_conditioned_flow_validates_conditions() -> None:
    model = ConditionedFlow(make_flow(config=small_config()), reference=300.0)
    x = domain_points(MIXED, 4)
    with pytest.raises(ValueError, match="shape"):  # the (B,) / (B, 1) broadcast trap
        model.log_prob(x, torch.full((4, 1), 300.0))
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(x, torch.full((3,), 300.0))
    with pytest.raises(ValueError, match="> 0"):
        model.log_prob(x, torch.tensor([300.0, -1.0, 300.0, 300.0]))
    with pytest.raises(ValueError, match="> 0"):
        model.sample(3, 0.0)
    with pytest.raises(ValueError, match="condition must be one of 'temperature', 'beta'"):
        ConditionedFlow(model.flow, reference=300.0, condition="pressure")
    with pytest.raises(ValueError, match="not 'kappa'.*CouplingFlow"):  # a known condition with its own flow
        ConditionedFlow(model.flow, reference=0.25, condition="kappa")
    with pytest.raises(ValueError, match="reference must be finite and > 0"):
        ConditionedFlow(model.flow, reference=0.0)
    with pytest.raises(ValueError, match="context_dim"):
        ConditionedFlow(ConditionalFlow(MIXED, context_dim=2, config=small_config()), reference=300.0)


# ---------------------------------------------------------------- schedule and config


def test_default_schedule() -> None:
    kinds = ["bond"] * 3 + ["angle"] * 4 + ["torsion", "narrow_torsion", "torsion", "narrow_torsion", "torsion"]
    layers = resolve_schedule(FlowConfig(), kinds)
    bonds, local, torsions = set(range(3)), {3, 4, 5, 6, 8, 10}, {7, 9, 11}
    local0, local1 = {3, 5, 8}, {4, 6, 10}  # halves within each kind: angles 3,5 | 4,6; narrow 8 | 10
    expected = [
        ({7, 11}, {9}), ({9}, {7, 11}),
        (local0, torsions | local1), (local1, torsions | local0),
        (torsions, local),
        (bonds, local | torsions), (local | torsions, bonds),
    ]
    assert [(set(s.transformed), set(s.conditioning)) for s in layers] == expected


@pytest.mark.parametrize("kinds", [
    ("real",), ("torsion",), ("angle",), ("bond",), ("real", "real"), ("torsion", "torsion"),
    ("torsion", "angle"), ("angle", "bond", "bond"), ("real",) * 5,
])
def test_any_combination_of_kinds(kinds) -> None:
    flow = make_flow(kinds)
    transformed = set().union(*(layer.idx_b.tolist() for layer in flow.layers))
    assert transformed == set(range(len(kinds)))
    for t_ratio in T_RATIOS:
        c = contexts(64, t_ratio)
        x, log_p = flow.sample(64, c)
        torch.testing.assert_close(flow.log_prob(x, c), log_p, rtol=0, atol=1e-9)
        check_contract(flow, x, c)


def test_config_validation_and_strict_loading() -> None:
    cfg = from_dict(FlowConfig, {"bins": 4, "hidden": [8, 8], "schedule": ["real/0 | real/1", "real/1 | real/0"]})
    assert cfg.hidden == (8, 8) and cfg.schedule == ("real/0 | real/1", "real/1 | real/0")
    with pytest.raises(ConfigError, match="bins"):
        from_dict(FlowConfig, {"binz": 4})
    for bad in [{"schedule": ["torsion > angle"]}, {"schedule": ["dihedral | angle"]}, {"schedule": ["* | *"]},
                {"schedule": [" | angle"]}, {"schedule": "torsion | angle"}, {"bins": 1}, {"bounded_sigma": 0.0},
                {"repeats": 0}, {"hidden": (8, 0)}, {"min_slope": 1.0}]:
        with pytest.raises(ValueError):
            FlowConfig(**bad)
    with pytest.raises(ValueError, match="no layer"):
        ConditionalFlow(["real", "real"], config=FlowConfig(schedule=("torsion | real",)))
    # a base wider than the spline box keeps 32 % of its mass in the identity tails (two moons, 2026-12-01)
    with pytest.raises(ValueError, match=r"real_bound \(1\) must be at least 3 x real_sigma \(1\).*31.7 %"):
        FlowConfig(real_bound=1.0)
    assert FlowConfig(real_bound=1.0, real_sigma=0.25).real_bound == 1.0


def test_bit_halves_separate_every_pair_of_a_kind():
    kinds = ["angle"] + ["torsion"] * 11  # torsion positions 0..10 are dimensions 1..11
    schedule = tuple(f"torsion/{b}.{h} | torsion/{b}.{1 - h}" for b in range(4) for h in (0, 1))
    layers = resolve_schedule(FlowConfig(schedule=schedule), kinds)
    assert layers[2] == LayerSpec((1, 2, 5, 6, 9, 10), (3, 4, 7, 8, 11))  # bit 1 of the position is 0
    assert resolve_schedule(FlowConfig(schedule=("torsion/0.1 | torsion/0.0",)), kinds) == \
        resolve_schedule(FlowConfig(schedule=("torsion/1 | torsion/0",)), kinds)
    separated = {frozenset((i, j)) for layer in layers for i in layer.transformed for j in layer.conditioning}
    assert all(frozenset((i, j)) in separated for i in range(1, 12) for j in range(i + 1, 12))
    for bad in ("torsion/2", "torsion/x.0", "torsion/1.2", "torsion/.0"):
        with pytest.raises(ValueError, match="unknown group"):
            FlowConfig(schedule=(f"{bad} | *",))
