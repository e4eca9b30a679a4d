"""trade_md: temperature-conditioned Boltzmann generators trained with TRADE.

Units follow OpenMM: nm, ps, K, kJ/mol, radians.

``evaluate`` is loaded on first access (``trade_md.evaluate``), so that
``import trade_md`` does not import matplotlib.
"""
from ._version import __version__

import importlib
from typing import TYPE_CHECKING, Any

from . import datasets, units
from .coordinates import InternalCoordinates, ZMatrix
from .data import ReferenceData
from .energy import OpenMMEnergy
from .flows import ConditionalFlow, FlowConfig
from .generator import BoltzmannGenerator, Samples
from .simulate import simulate
from .tempering import parallel_tempering
from .system import MolecularSystem

if TYPE_CHECKING:  # pragma: no cover - for type checkers; loaded lazily below
    from .analysis.evaluate import evaluate

#: public name -> module that defines it, imported on first access
_LAZY = {"evaluate": ".analysis.evaluate"}

__all__ = [
    "__version__",
    "units",
    "datasets",
    "MolecularSystem",
    "OpenMMEnergy",
    "ReferenceData",
    "simulate",
    "parallel_tempering",
    "ZMatrix",
    "InternalCoordinates",
    "FlowConfig",
    "ConditionalFlow",
    "BoltzmannGenerator",
    "Samples",
    "evaluate",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later accesses skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
