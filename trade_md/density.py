"""The model contract: a conditional density ``p(x | c)`` and its condition vocabulary.

Every model that the losses, the trainer and the toy harness accept is a
:class:`ConditionalDensity`:

``log_prob(x, c) -> (B,) tensor``
    The normalized log-density (nats) of ``x`` ``(B, *event_shape)`` at the
    condition(s) ``c``; ``-inf`` for points outside the model's support
    (never an error).
``sample(n, c) -> (x, log_prob)``
    ``n`` reparametrized samples ``(n, *event_shape)`` and their log-density
    ``(n,)``, equal to ``log_prob(x, c)`` (the sampler and the density use the
    same condition); differentiable w.r.t. the parameters and a tensor ``c``.
``condition``
    What ``c`` is, one of :data:`CONDITIONS`.

The condition ``c`` is a float or a ``(B,)`` tensor (one value per sample;
never ``(B, 1)``), finite and > 0:

``"temperature"``
    ``c = T``, in K for molecules (a dimensionless ``T`` for toy targets with
    ``k_B = 1``); the density widens as ``T`` grows.
``"beta"``
    ``c = beta``, the power of a tempered density ``q(x)**beta`` (an
    inverse temperature, a likelihood power); the density narrows as
    ``beta`` grows.
``"kappa"``
    ``c = kappa``, a coupling (the hopping parameter of a lattice field
    theory) on which ``log q`` depends linearly; the field's fluctuations grow
    with ``kappa``. :class:`~trade_md.testsystems.CouplingFlow` is its model
    (:class:`~trade_md.flows.ConditionedFlow` knows temperature and beta only).

Tensors in, tensors out: dtype and device follow the density's parameters
(a float ``c`` takes them; a tensor ``x`` or ``c`` must already have them).
Bad shapes and conditions that are not finite and > 0 raise ``ValueError``.
numpy arrays and :class:`~trade_md.generator.Samples` appear only one level
up, in :class:`~trade_md.generator.BoltzmannGenerator`, which *has* a
density (``bg.density``) and a target but is not a density itself.

Implementations: :class:`~trade_md.flows.ConditionedFlow` (a flow over
internal or toy coordinates), :class:`~trade_md.generator.CartesianFlow`
(Cartesian positions in nm, condition temperature in K) and
:class:`~trade_md.testsystems.ScaledBaseFlow` (the temperature-steerable
baseline). Below the contract, every transform names its directions the
same way: ``forward`` maps data towards the latent space (Cartesian to
internal coordinates, internal coordinates to the flow's latent), the
density direction; ``inverse`` maps back, the sampling direction.
"""
from __future__ import annotations

from typing import Protocol, Union, runtime_checkable

import torch
from torch import Tensor

from . import validators

__all__ = ["CONDITIONS", "ConditionLike", "ConditionalDensity", "as_condition", "check_condition", "model_like"]

#: What a condition can be: a temperature ``T``, a power ``beta`` or a coupling ``kappa`` (see the module docstring).
CONDITIONS: tuple[str, ...] = ("temperature", "beta", "kappa")

#: A condition value: a float, or a 0-d or ``(B,)`` tensor.
ConditionLike = Union[float, Tensor]


@runtime_checkable
class ConditionalDensity(Protocol):
    """A normalized density ``p(x | c)`` with a reparametrized sampler (the contract above).

    Attributes
    ----------
    condition : {"temperature", "beta", "kappa"}
        What the condition ``c`` is.
    """

    condition: str

    def log_prob(self, x: Tensor, c: ConditionLike) -> Tensor:
        """``log p(x | c)``, ``(B,)`` nats, for ``x`` ``(B, *event_shape)`` and ``c`` scalar or ``(B,)``."""

    def sample(self, n: int, c: ConditionLike) -> tuple[Tensor, Tensor]:
        """``n`` samples ``(n, *event_shape)`` at ``c`` (scalar or ``(n,)``) and their ``log p`` ``(n,)``."""


def check_condition(name: str, condition: str) -> str:
    """``condition`` unchanged if it is one of :data:`CONDITIONS`, else ValueError naming ``name``."""
    return validators.choice(name, condition, CONDITIONS)


def as_condition(c: ConditionLike, x: Tensor, name: str = "condition") -> Tensor:
    """Return condition(s) ``c`` as a ``(B,)`` tensor on ``x``'s device and dtype.

    Parameters
    ----------
    c : float or 0-d or (B,) tensor
        Condition value(s); must be finite and > 0. A tensor keeps its
        autograd graph.
    x : (B, ...) tensor
        The batch the conditions belong to.
    name : str
        Name used in error messages.

    Returns
    -------
    (B,) tensor
        ``x``'s floating dtype (the default dtype for an integer ``x``).

    Raises
    ------
    ValueError
        For any other shape (in particular ``(B, 1)``, which would broadcast a
        ``(B,)`` energy into ``(B, B)``) or a value that is not finite and > 0.
    """
    if x.dim() < 1:
        raise ValueError(f"x must have a batch dimension, got shape {tuple(x.shape)}")
    batch = x.shape[0]
    dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
    c = torch.as_tensor(c, dtype=dtype, device=x.device)
    if c.dim() == 0:
        c = c.expand(batch)
    elif tuple(c.shape) != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {tuple(c.shape)}")
    return validators.positive_values(name, c)


def model_like(model: torch.nn.Module) -> Tensor:
    """An empty tensor with the model's floating dtype and device (default dtype on the CPU if none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.new_empty(0)
    return torch.empty(0)
