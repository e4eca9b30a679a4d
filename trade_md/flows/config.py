"""Configuration of the conditional flows and resolution of the layer schedule.

A flow acts on a vector whose dimensions each have a *kind*:

``"torsion"``
    circular, domain ``[-pi, pi]`` (radians; ``-pi`` and ``pi`` are the same point);
``"angle"``, ``"bond"``
    bounded, domain ``[0, 1]`` (internal coordinates rescaled to the unit interval);
``"narrow_torsion"``
    bounded, domain ``[0, 1]``: a torsion that stays within a window narrower
    than the circle (e.g. the placement of a branch atom against its sibling),
    cut open opposite its centre and rescaled like an angle;
``"real"``
    unbounded, domain ``R`` (toy problems).

The layer schedule is a sequence of coupling layers written as strings
``"<transformed> | <conditioning>"``; each side is a comma-separated list of
groups: a kind (``"torsion"``), one half of a kind (``"torsion/0"`` for the
kind's dimensions at even positions, ``"torsion/1"`` for odd positions; in
general ``"torsion/b.h"`` for the positions whose bit ``b`` is ``h``, so
``"torsion/0"`` is ``"torsion/0.0"`` and ``"torsion/1.0"`` holds positions
0, 1, 4, 5, ...) or ``"*"`` (every dimension not on the other side). Layers
that split by bits 0, 1, 2, ... put every pair of dimensions of a kind on
opposite sides in at least one layer. An empty conditioning side is
a layer conditioned on the context only.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from .. import validators

__all__ = ["KINDS", "BOUNDED_KINDS", "DEFAULT_SCHEDULE", "FlowConfig", "LayerSpec", "resolve_schedule"]

#: The dimension kinds a flow understands.
KINDS: tuple[str, ...] = ("torsion", "angle", "bond", "narrow_torsion", "real")

#: The kinds that live on the unit interval [0, 1].
BOUNDED_KINDS: tuple[str, ...] = ("angle", "bond", "narrow_torsion")

#: Default schedule: torsions given torsions (split halves); the local geometry
#: (angles and narrow torsions, in halves) given the torsions and the other half,
#: so that coordinates around one atom are modelled jointly; torsions given the
#: local geometry; bonds given the rest and the rest given bonds; plus halves of
#: "real" dimensions for toy problems. On 600 K Ace-Ala3-Nme MD the halves of the
#: local geometry improved the held-out NLL by 1 nat over "angle | torsion".
DEFAULT_SCHEDULE: tuple[str, ...] = (
    "torsion/0 | torsion/1",
    "torsion/1 | torsion/0",
    "angle/0, narrow_torsion/0 | torsion, angle/1, narrow_torsion/1",
    "angle/1, narrow_torsion/1 | torsion, angle/0, narrow_torsion/0",
    "torsion | angle, narrow_torsion",
    "bond | *",
    "* | bond",
    "real/0 | *",
    "real/1 | *",
)


@dataclasses.dataclass
class FlowConfig:
    """Architecture of a :class:`~trade_md.flows.ConditionalFlow`.

    Parameters
    ----------
    schedule : tuple of str
        Coupling layers, ``"<transformed> | <conditioning>"`` (see the module
        docstring). A layer is skipped when its transformed side is empty, or
        when it names conditioning groups that are all absent from the flow
        (unless the flow has a single dimension).
    repeats : int
        How many times the schedule is repeated.
    bins : int
        Number of rational-quadratic spline bins.
    hidden : tuple of int
        Hidden widths of each conditioner MLP (SiLU activations).
    bounded_sigma : float
        Width ``sigma0`` of the base truncated normal of angle/bond dimensions
        at ``T = T0``, in units of the ``[0, 1]`` domain; it scales as
        ``sigma0 * sqrt(T / T0)``. The default suits
        :class:`~trade_md.coordinates.InternalCoordinates`' scaling, under
        which alanine dipeptide's bonds and angles at 600-700 K have standard
        deviations of about 0.05-0.07.
    real_sigma : float
        Standard deviation of the base normal of real dimensions at ``T = T0``;
        it scales as ``real_sigma * sqrt(T / T0)``. Match it to the data's
        spread: base mass outside ``[-real_bound, real_bound]`` stays outside.
    real_bound : float
        Real dimensions are transformed by a spline on ``[-real_bound, real_bound]``
        with identity tails outside; at least ``3 * real_sigma`` (99.7 % of
        the base inside), else the flow cannot move the base's tails onto the
        data and a :class:`ValueError` names both.
    min_slope : float
        Bounds the splines like zuko's ``slope``: knot derivatives lie in
        ``[min_slope, 1 / min_slope]`` and bin widths and heights within a
        factor ``1 / min_slope`` of each other.
    """

    schedule: tuple[str, ...] = DEFAULT_SCHEDULE
    repeats: int = 1
    bins: int = 8
    hidden: tuple[int, ...] = (256, 256)
    bounded_sigma: float = 0.1
    real_sigma: float = 1.0
    real_bound: float = 5.0
    min_slope: float = 1e-3

    def __post_init__(self) -> None:
        if isinstance(self.schedule, str):
            raise ValueError("schedule must be a sequence of 'transformed | conditioning' strings, not one string")
        self.schedule = tuple(self.schedule)
        if not self.schedule:
            raise ValueError("schedule must name at least one layer")
        for entry in self.schedule:
            _parse_layer(entry)
        self.repeats = validators.positive_int("repeats", self.repeats)
        if validators.positive_int("bins", self.bins) < 2:
            raise ValueError(f"bins must be an integer >= 2, got {self.bins!r}")
        self.bins = int(self.bins)
        self.hidden = tuple(validators.positive_int("hidden", h) for h in self.hidden)
        for name in ("bounded_sigma", "real_sigma", "real_bound"):
            setattr(self, name, validators.positive_number(name, getattr(self, name)))
        if self.real_bound < 3.0 * self.real_sigma:
            outside = math.erfc(self.real_bound / (self.real_sigma * math.sqrt(2.0)))
            raise ValueError(
                f"real_bound ({self.real_bound:g}) must be at least 3 x real_sigma ({self.real_sigma:g}): the "
                f"splines act on [-real_bound, real_bound] with identity tails, so the {100 * outside:.1f} % of "
                "each real dimension's base mass outside stays there; lower real_sigma to the data's spread "
                "or raise real_bound"
            )
        self.min_slope = validators.fraction("min_slope", self.min_slope)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One resolved coupling layer.

    Attributes
    ----------
    transformed : tuple of int
        Indices of the dimensions the layer transforms (non-empty).
    conditioning : tuple of int
        Indices of the dimensions its conditioner sees (may be empty).
    """

    transformed: tuple[int, ...]
    conditioning: tuple[int, ...]


def _parse_side(text: str, entry: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    for group in groups:
        kind, _, half = group.partition("/")
        if group != "*" and (kind not in KINDS or _bit_half(half) is None):
            raise ValueError(
                f"unknown group {group!r} in schedule entry {entry!r}; use a kind "
                f"({', '.join(KINDS)}), a half such as 'torsion/0' or 'torsion/1' (bit 0 of the position), "
                "'torsion/1.0' (bit 1 of the position is 0), or '*'"
            )
    return groups


def _bit_half(half: str):
    """``""`` -> ``()`` (the whole kind), ``"h"`` -> ``(0, h)``, ``"b.h"`` -> ``(b, h)``; None if malformed."""
    if half == "":
        return ()
    bit, dot, h = half.rpartition(".")
    if h not in ("0", "1") or (dot and not bit.isdigit()):
        return None
    return (int(bit) if dot else 0, int(h))


def _parse_layer(entry: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(entry, str) or entry.count("|") != 1:
        raise ValueError(f"schedule entry {entry!r} must read 'transformed | conditioning'")
    left, right = entry.split("|")
    transformed, conditioning = _parse_side(left, entry), _parse_side(right, entry)
    if not transformed:
        raise ValueError(f"schedule entry {entry!r} transforms nothing")
    if "*" in transformed and "*" in conditioning:
        raise ValueError(f"schedule entry {entry!r} uses '*' on both sides")
    return transformed, conditioning


def _members(groups: Sequence[str], kinds: Sequence[str]) -> set[int]:
    out: set[int] = set()
    for group in groups:
        if group == "*":
            continue
        kind, _, half = group.partition("/")
        idx = [i for i, k in enumerate(kinds) if k == kind]
        split = _bit_half(half)
        out.update(idx if not split else [i for pos, i in enumerate(idx) if (pos >> split[0]) & 1 == split[1]])
    return out


def resolve_schedule(config: FlowConfig, kinds: Sequence[str]) -> list[LayerSpec]:
    """Turn ``config.schedule`` into index sets for a flow over ``kinds``.

    Parameters
    ----------
    config : FlowConfig
    kinds : sequence of str, length D
        Kind of every dimension.

    Returns
    -------
    list of LayerSpec
        The layers in the data -> latent order, skipped entries removed.

    Raises
    ------
    ValueError
        If no layer remains.
    """
    everything = set(range(len(kinds)))
    layers = []
    for entry in config.schedule * config.repeats:
        left, right = _parse_layer(entry)
        transformed, conditioning = _members(left, kinds), _members(right, kinds)
        if "*" in left:
            transformed = everything - conditioning
        if "*" in right:
            conditioning = everything - transformed
        conditioning -= transformed
        if not transformed or (right and not conditioning and len(kinds) > 1):
            continue
        layers.append(LayerSpec(tuple(sorted(transformed)), tuple(sorted(conditioning))))
    if not layers:
        raise ValueError(f"the schedule {config.schedule} builds no layer for kinds {sorted(set(kinds))}")
    return layers
