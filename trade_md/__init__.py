"""trade_md: temperature-conditioned Boltzmann generators trained with TRADE.

Units follow OpenMM: nm, ps, K, kJ/mol, radians.
"""
__version__ = "0.1.0"

from . import units
from .system import MolecularSystem

__all__ = [
    "__version__",
    "units",
    "MolecularSystem",
]
