"""Temperature-conditioned normalizing flows for internal coordinates.

Coupling flows on zuko's transforms: circular rational-quadratic splines on
torsions, bounded splines on angles, bonds and narrow torsions, unbounded splines on real
dimensions; conditioners see ``(cos, sin)`` of torsions and the context
``[log(T / T0), ...]``; a base distribution that widens with temperature.

:class:`ConditionalFlow` is the building block addressed by a context
tensor; :class:`ConditionedFlow` addresses it by a physical condition and is
a :class:`~trade_md.density.ConditionalDensity` (see :mod:`trade_md.density`
for the contract). Directions: ``forward`` maps data to latent (the density
direction, like the internal-coordinate transform), ``inverse`` latent to
data (the sampling direction).

>>> flow = ConditionalFlow(["torsion", "angle", "bond"], context_dim=1)
>>> model = ConditionedFlow(flow, reference=300.0)
>>> x, log_p = model.sample(5, 450.0)
"""
from .config import BOUNDED_KINDS, DEFAULT_SCHEDULE, KINDS, FlowConfig
from .flow import ConditionalFlow, ConditionedFlow

__all__ = ["KINDS", "BOUNDED_KINDS", "DEFAULT_SCHEDULE", "FlowConfig", "ConditionalFlow", "ConditionedFlow"]
