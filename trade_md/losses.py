"""Losses of TRADE and of the baselines it is compared with.

Pure functions of a :class:`~trade_md.density.ConditionalDensity` (the
model) and a :class:`~trade_md.targets.Target`. Only the batch dimension of
``x`` is assumed; conditions are scalars or ``(B,)``. The training methods
(:mod:`trade_md.methods`) assemble them; the grid mode's state lives with
its method (:class:`~trade_md.methods.trade_grid.ConditionGrid`).

The TRADE gradient loss regresses the model's condition derivative
``g = d/dc log p_theta(x|c)`` (autograd, ``create_graph=True``) onto
``t = d/dc log q(x|c) - E_c[d/dc log q]``, with ``E_c`` estimated by
self-normalized importance sampling (SNIS) from model samples at ``c``.
Both ``g`` and ``t`` are multiplied by ``c`` in :func:`scale_to_log_condition`
(one place), which makes them derivatives w.r.t. ``log c``; for temperature
``T dlogq/dT = U / (k_B T)``, so clips are in units of ``k_B T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from . import validators
from .density import ConditionalDensity, as_condition
from .targets import Target

__all__ = [
    "GradientLossConfig",
    "SNISEstimate",
    "GradientLoss",
    "nll",
    "reverse_kl",
    "snis",
    "snis_at_conditions",
    "SNISDraws",
    "condition_derivative",
    "scale_to_log_condition",
    "soft_clip",
    "gradient_loss",
    "evaluation_points",
    "log_uniform_conditions",
    "reweighted_nll",
    "ReweightedNLL",
    "PENALTIES",
    "EVALUATION_POINTS",
]

#: Robust penalties of the gradient regression.
PENALTIES: tuple[str, ...] = ("huber", "mse")
#: Where the gradient loss is evaluated: model samples at c, at c0, or (noised) data at c0.
EVALUATION_POINTS: tuple[str, ...] = ("samples_c", "samples_c0", "data")
DERIVATIVES: tuple[str, ...] = ("autograd", "central_difference")


@dataclass
class GradientLossConfig:
    """Settings of the TRADE gradient regression.

    Parameters
    ----------
    penalty : {"huber", "mse"}
        Penalty of the residual ``c g - c t`` (MSE is ``r^2 / 2``, Huber's quadratic part).
    huber_delta : float
        Huber transition, in units of the scaled target (``k_B T`` for temperature).
    target_clip : float
        Scaled, centred targets are soft-clipped to ``+-target_clip`` (see
        :func:`soft_clip`): flow samples that clash give energies of thousands
        of ``k_B T``.
    loss_clip : float
        Per-sample penalties are soft-clipped to ``loss_clip`` the same way.

    The clips are absolute. The legitimate spread of the scaled targets
    differs between problems (``sqrt(n_dof / 2)``: 4.9 k_B T for alanine
    dipeptide, 7 for Ace-Ala3-Nme at 600 K; about 50 for the phi^4 hopping
    term), so these clips shorten the large, legitimate targets of wide
    problems and give no gradient for residuals above about 22. Clips in
    units of each condition's robust spread (targets at 6 sigma, penalties at
    a 10 sigma residual) were measured on 1 Dec 2026 and were worse at equal
    budgets: phi^4 relative ESS 0.3 / 0.6 % instead of 7.6 / 4.7 % at kappa
    0.24 / 0.305; Ace-Ala3-Nme (3,000 steps) NLL of the 300 K parallel-tempering
    frames -330.72 instead of -331.14 nats. Acting as a trust region (samples whose model
    derivative is far off are ignored), the absolute clips keep the gradient
    term from tearing down the boundary fit early on.
    evaluation_points : {"samples_c", "samples_c0", "data"}
        Model samples at the condition of each batch element (the methods use
        the samples drawn for their SNIS estimates there, with the energies
        already computed: ``trade_continuous`` this step's, ``trade_grid`` those
        of the last refresh of the grid point), model samples at the reference
        ``c0``, or training data (at ``c0``).
    evaluation_noise : float
        Standard deviation of Gaussian noise added to the evaluation points
        (units of ``x``; 0 for none).
    derivative : {"autograd", "central_difference"}
        How ``d/dc log p_theta`` is computed (see :func:`condition_derivative`):
        exactly, with a double backward, or by a central difference in
        ``log c`` (a cheaper step; benchmarks/flow_speed.py gives the ratio).
    difference_step : float
        Step ``h`` in ``log c`` of the central difference.
    """

    penalty: str = "huber"
    huber_delta: float = 5.0
    target_clip: float = 30.0
    loss_clip: float = 100.0
    evaluation_points: str = "samples_c"
    evaluation_noise: float = 0.0
    derivative: str = "autograd"
    difference_step: float = 0.01

    def __post_init__(self) -> None:
        validators.choice("transfer.gradient.penalty", self.penalty, PENALTIES)
        validators.choice("transfer.gradient.evaluation_points", self.evaluation_points, EVALUATION_POINTS)
        for name in ("huber_delta", "target_clip", "loss_clip"):
            setattr(self, name, validators.positive_number(f"transfer.gradient.{name}", getattr(self, name)))
        self.evaluation_noise = validators.non_negative_number("transfer.gradient.evaluation_noise",
                                                               self.evaluation_noise)
        validators.choice("transfer.gradient.derivative", self.derivative, DERIVATIVES)
        self.difference_step = validators.positive_number("transfer.gradient.difference_step", self.difference_step)
        if not self.difference_step <= 0.1:
            raise ValueError(f"transfer.gradient.difference_step must be in (0, 0.1], got {self.difference_step!r}")


# ----------------------------------------------------------------------- boundary


def _mean_finite(values: Tensor) -> Tensor:
    """Mean over the finite entries of a (B,) tensor (NaN if none)."""
    finite = torch.isfinite(values)
    return torch.where(finite, values, torch.zeros_like(values)).sum() / finite.sum()


def nll(model: ConditionalDensity, x: Tensor, c) -> Tensor:
    """Negative log-likelihood ``-mean log p_theta(x|c)`` of data.

    Parameters
    ----------
    model : ConditionalDensity
    x : (B, ...) tensor
        Data, e.g. MD frames.
    c : float or (B,) tensor
        Condition of every frame (several boundary conditions: concatenate
        their data and pass the per-frame conditions).

    Returns
    -------
    0-d tensor
        Mean over the rows with a finite log-density (rows outside the model's
        domain are dropped rather than making the loss infinite).
    """
    c = as_condition(c, x)
    return -_mean_finite(model.log_prob(x, c))


def reverse_kl(model: ConditionalDensity, target: Target, n: int, c) -> Tensor:
    """Backward KL up to ``log Z``: ``E_{x~p_theta(.|c)}[log p_theta(x|c) - log q(x|c)]``.

    Data-free boundary term; needs ``target.log_q`` differentiable in ``x``
    (forces). Samples with a non-finite ``log q`` (an infinite or NaN energy)
    are dropped; finite but huge energies are penalized as they should be.

    Parameters
    ----------
    n : int
        Number of reparametrized model samples.
    c : float or (n,) tensor
        Condition(s).

    Returns
    -------
    0-d tensor
    """
    x, log_p = model.sample(n, c)
    return _mean_finite(log_p - target.log_q(x, as_condition(c, x)))


@dataclass(frozen=True)
class ReweightedNLL:
    """Result of :func:`reweighted_nll`: ``loss`` (0-d) and the relative ``ess`` (M,)."""

    loss: Tensor
    ess: Tensor


def reweighted_nll(
    model: ConditionalDensity, target: Target, proposal: Tensor, proposal_log_p: Tensor, c: Tensor
) -> ReweightedNLL:
    """Reweighting baseline: NLL at ``c`` of samples from the model at ``c0``.

    With ``x_i ~ p_theta(.|c0)`` and self-normalized weights
    ``w_i ~ q(x_i|c) / p_theta(x_i|c0)``, the loss is
    ``-sum_i w_i log p_theta(x_i|c)`` for each condition, averaged over
    conditions. Weights are detached.

    Parameters
    ----------
    proposal : (S, ...) tensor
        Detached model samples at ``c0``.
    proposal_log_p : (S,) tensor
        Their log-density ``log p_theta(x|c0)``.
    c : (M,) tensor
        Conditions to train at.

    Returns
    -------
    ReweightedNLL
    """
    m, s = c.shape[0], proposal.shape[0]
    x = proposal.repeat_interleave(m, 0)
    cond = c.repeat(s)
    with torch.no_grad():
        log_q = target.log_q(x, cond)
    log_w = (log_q - proposal_log_p.detach().repeat_interleave(m, 0)).reshape(s, m).T
    log_p = model.log_prob(x, cond).reshape(s, m).T
    finite = torch.isfinite(log_p)
    weights = _normalized_weights(log_w) * finite
    per_condition = -(weights * torch.where(finite, log_p, torch.zeros_like(log_p))).sum(-1)
    return ReweightedNLL(loss=per_condition.mean(), ess=snis(log_w, log_p.detach()).ess)


# ---------------------------------------------------------------------------- SNIS


@dataclass(frozen=True)
class SNISEstimate:
    """Self-normalized importance-sampling estimate along the last dimension.

    Attributes
    ----------
    mean : (...) tensor
        ``sum_i w_i f_i / sum_i w_i``; NaN where no sample is usable.
    stderr : (...) tensor
        Delta-method standard error ``sqrt(sum_i w_i^2 (f_i - mean)^2) / sum_i w_i``.
    ess : (...) tensor
        Relative effective sample size ``(sum w)^2 / (N sum w^2)`` in ``[0, 1]``.
    """

    mean: Tensor
    stderr: Tensor
    ess: Tensor


def _normalized_weights(log_w: Tensor) -> Tensor:
    """Self-normalized weights along the last dim; non-finite log-weights get weight 0."""
    log_w = torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))
    shift = log_w.max(-1, keepdim=True).values
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    w = torch.exp(log_w - shift)
    return w / w.sum(-1, keepdim=True)


def snis(log_weights: Tensor, values: Tensor) -> SNISEstimate:
    """SNIS estimate of ``E[f]`` from log-weights and values, along the last dimension.

    Parameters
    ----------
    log_weights : (..., N) tensor
        ``log q(x_i) - log p(x_i)`` for proposal samples ``x_i ~ p``.
    values : (..., N) tensor
        ``f(x_i)``.

    Samples with a non-finite log-weight or value are dropped (weight 0).
    """
    if log_weights.shape != values.shape:
        raise ValueError(
            f"log_weights {tuple(log_weights.shape)} and values {tuple(values.shape)} must have the same shape"
        )
    usable = torch.isfinite(log_weights) & torch.isfinite(values)
    log_w = torch.where(usable, log_weights, torch.full_like(log_weights, -math.inf))
    w = _normalized_weights(log_w)
    f = torch.where(usable, values, torch.zeros_like(values))
    mean = (w * f).sum(-1)
    stderr = torch.sqrt((w**2 * (f - mean[..., None]) ** 2).sum(-1))
    ess = 1.0 / (w**2).sum(-1) / values.shape[-1]
    none = ~usable.any(-1)
    nan = torch.full_like(mean, math.nan)
    return SNISEstimate(
        mean=torch.where(none, nan, mean),
        stderr=torch.where(none, nan, stderr),
        ess=torch.where(none, torch.zeros_like(ess), ess),
    )


class SNISDraws(NamedTuple):
    """Model samples drawn for SNIS estimates, with their target derivatives.

    Attributes
    ----------
    x : (M * n, ...) tensor
        The detached samples, condition-major (rows ``m*n .. m*n+n-1`` belong to ``conditions[m]``).
    c : (M * n,) tensor
        Their conditions.
    dlogq_dc : (M * n,) tensor
        ``d/dc log q`` at each sample (from the same energy evaluation).
    estimate : SNISEstimate
        Fields of shape (M,).
    """

    x: Tensor
    c: Tensor
    dlogq_dc: Tensor
    estimate: SNISEstimate


def snis_at_conditions(model: ConditionalDensity, target: Target, conditions: Tensor, n: int) -> SNISDraws:
    """Estimate ``E_c[d/dc log q]`` at each condition from ``n`` model samples there.

    Parameters
    ----------
    conditions : (M,) tensor
    n : int
        Samples per condition.
    """
    c = conditions.repeat_interleave(n)
    with torch.no_grad():
        x, log_p = model.sample(c.shape[0], c)
        terms = target.evaluate(x, c)
    m = conditions.shape[0]
    estimate = snis((terms.log_q - log_p).reshape(m, n), terms.dlogq_dc.reshape(m, n))
    return SNISDraws(x.detach(), c, terms.dlogq_dc.detach(), estimate)


# ------------------------------------------------------------------ gradient loss


def condition_derivative(
    model: ConditionalDensity, x: Tensor, c: Tensor, difference_step: Optional[float] = None
) -> tuple[Tensor, Tensor]:
    """``d/dc log p_theta(x|c)`` per sample, differentiable w.r.t. the parameters.

    By autograd with ``create_graph=True`` (exact; the loss then needs a double
    backward), or, given ``difference_step`` ``h``, by the central difference
    in ``log c``: ``(log p(x|c e^h) - log p(x|c e^-h)) / (2 h c)``, one forward
    pass over a doubled batch and a plain backward. Its error is
    ``O(h^2)`` plus rounding ``~ eps |log p| / h``; on a 48-D alanine-dipeptide-sized
    flow in float32 with ``h = 0.01`` the median error was 4e-4 of a typical
    ``|d/dlog c log p|`` of 3.5 (tests/test_losses.py checks it against autograd).

    Parameters
    ----------
    x : (B, ...) tensor
    c : (B,) tensor
        Conditions (detached copies are differentiated).
    difference_step : float, optional
        ``h`` (dimensionless, a step in ``log c``); ``None`` for autograd.

    Returns
    -------
    log_p : (B,) tensor
        ``log p_theta(x|c)`` (with a difference step: the mean of the two
        evaluations, equal to it up to ``O(h^2)``).
    dlogp_dc : (B,) tensor
        Its derivative w.r.t. ``c``.
    """
    c = as_condition(c, x).detach()
    if difference_step is None:
        c = c.clone().requires_grad_(True)
        log_p = model.log_prob(x, c)
        (dlogp_dc,) = torch.autograd.grad(log_p.sum(), c, create_graph=True)
        return log_p, dlogp_dc
    h = float(difference_step)
    both = model.log_prob(torch.cat([x, x]), torch.cat([c * math.exp(h), c * math.exp(-h)]))
    up, down = both[: x.shape[0]], both[x.shape[0]:]
    return 0.5 * (up + down), (up - down) / (2.0 * h * c)


def scale_to_log_condition(c: Tensor, derivative: Tensor) -> Tensor:
    """``c * d/dc = d/dlog c``: the one scaling applied to model and target derivatives."""
    return c * derivative


def soft_clip(values: Tensor, limit: float) -> Tensor:
    """Smooth clip ``v / (1 + |v / limit|^8)^(1/8)``: bounded by ``+-limit``.

    Nearly the identity below ``limit / 2`` (relative change < 0.05 %, unlike
    ``tanh``, which shrinks ``limit / 6`` by 1 %), saturating above ``limit``.
    Computed in log space so that huge values do not overflow.
    """
    # clamp: a finite log at 0 keeps the gradient there finite (it is 1)
    log_ratio = torch.log(values.abs().clamp_min(torch.finfo(values.dtype).tiny) / limit)
    return values * torch.exp(-torch.nn.functional.softplus(8.0 * log_ratio) / 8.0)


@dataclass(frozen=True)
class GradientLoss:
    """Result of :func:`gradient_loss`.

    Attributes
    ----------
    loss : 0-d tensor
        Weighted mean of the per-sample penalties over valid samples (differentiable).
    per_sample : (B,) tensor
        Detached per-sample penalties (0 where invalid).
    valid : (B,) bool tensor
        Samples with finite model and target derivatives.
    """

    loss: Tensor
    per_sample: Tensor
    valid: Tensor


def gradient_loss(
    model: ConditionalDensity,
    target: Target,
    x: Tensor,
    c: Tensor,
    expectation: Tensor,
    config: GradientLossConfig,
    weights: Optional[Tensor] = None,
    dlogq_dc: Optional[Tensor] = None,
) -> GradientLoss:
    """The TRADE gradient loss at evaluation points ``x`` and conditions ``c``.

    Parameters
    ----------
    model : ConditionalDensity
    target : Target
    x : (B, ...) tensor
        Detached evaluation points.
    c : (B,) tensor
        Conditions.
    expectation : (B,) tensor
        ``E_hat_c[d/dc log q]`` at each sample's condition (detached; from SNIS).
    config : GradientLossConfig
    weights : (B,) tensor, optional
        Per-sample weights (causality weights).
    dlogq_dc : (B,) tensor, optional
        ``d/dc log q`` at ``x`` when already known (e.g. from the SNIS draws
        the points come from); computed from ``target`` otherwise.

    Returns
    -------
    GradientLoss
    """
    c = as_condition(c, x)
    if tuple(expectation.shape) != (x.shape[0],):
        raise ValueError(f"expectation must have shape ({x.shape[0]},), got {tuple(expectation.shape)}")
    with torch.no_grad():
        if dlogq_dc is None:
            dlogq_dc = target.dlogq_dc(x, c)
        elif tuple(dlogq_dc.shape) != (x.shape[0],):
            raise ValueError(f"dlogq_dc must have shape ({x.shape[0]},), got {tuple(dlogq_dc.shape)}")
        t = scale_to_log_condition(c, dlogq_dc - expectation)
        finite_t = torch.isfinite(t)  # before clipping: tanh would turn an infinite energy into the clip value
        t = soft_clip(t, config.target_clip)
    step = config.difference_step if config.derivative == "central_difference" else None
    log_p, g = condition_derivative(model, x, c, step)
    valid = finite_t & torch.isfinite(g) & torch.isfinite(log_p)
    residual = scale_to_log_condition(c, torch.where(valid, g, torch.zeros_like(g))) - torch.where(
        valid, t, torch.zeros_like(t)
    )
    if config.penalty == "huber":
        penalty = torch.nn.functional.huber_loss(
            residual, torch.zeros_like(residual), reduction="none", delta=config.huber_delta
        )
    else:
        penalty = 0.5 * residual**2
    penalty = soft_clip(penalty, config.loss_clip) * valid
    w = penalty.new_ones(penalty.shape) if weights is None else weights
    loss = (w * penalty).sum() / valid.sum().clamp_min(1)
    return GradientLoss(loss=loss, per_sample=penalty.detach(), valid=valid)


def evaluation_points(
    source: str,
    model: ConditionalDensity,
    c: Tensor,
    reference: float,
    data: Optional[Tensor] = None,
    noise: float = 0.0,
) -> Tensor:
    """Detached points where the gradient loss is evaluated, one per condition.

    Parameters
    ----------
    source : {"samples_c", "samples_c0", "data"}
    model : ConditionalDensity
    c : (B,) tensor
        Conditions of the batch.
    reference : float
        ``c0``.
    data : (N, ...) tensor, optional
        Training data, required for ``"data"``; rows are drawn uniformly.
    noise : float
        Standard deviation of added Gaussian noise.

    Returns
    -------
    (B, ...) tensor
    """
    batch = c.shape[0]
    with torch.no_grad():
        if source == "samples_c":
            x = model.sample(batch, c)[0]
        elif source == "samples_c0":
            x = model.sample(batch, torch.full_like(c, reference))[0]
        elif source == "data":
            if data is None:
                raise ValueError("evaluation_points='data' needs training data")
            x = data[torch.randint(data.shape[0], (batch,), device=data.device)]
        else:
            raise ValueError(f"unknown evaluation_points {source!r}; use one of {EVALUATION_POINTS}")
        if noise > 0:
            x = x + noise * torch.randn_like(x)
    return x.detach()


def log_uniform_conditions(low: float, high: float, m: int, like: Tensor) -> Tensor:
    """``m`` conditions drawn log-uniformly from ``[low, high]`` (global torch RNG), ``(m,)``."""
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got ({low}, {high})")
    u = torch.rand(m, dtype=like.dtype, device=like.device)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


