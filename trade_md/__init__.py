"""trade_md: temperature-conditioned Boltzmann generators trained with TRADE.

Units follow OpenMM: nm, ps, K, kJ/mol, radians.
"""
__version__ = "0.1.0"

from . import units
from .coordinates import InternalCoordinates, ZMatrix
from .data import ReferenceData
from .energy import OpenMMEnergy
from .flows import ConditionalFlow, FlowConfig
from .generator import BoltzmannGenerator, Samples
from .simulate import simulate
from .tempering import parallel_tempering
from .system import MolecularSystem
from .analysis.evaluate import evaluate

__all__ = [
    "__version__",
    "units",
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
