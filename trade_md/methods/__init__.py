"""Training methods: one class per method, found by the name in ``transfer.method``.

=====================  ==========================================================================
``trade_grid``         TRADE gradient loss on a log-spaced grid, SNIS table, causality weights
``trade_continuous``   TRADE gradient loss at conditions drawn each step, fresh SNIS
``nll``                boundary only (NLL-only baseline; TSF-like with a scaled-base model)
``reweighting``        NLL at ``c`` of model samples at ``c0`` reweighted by ``q(x|c) / p(x|c0)``
``reverse_kl``         backward KL at conditions over the range
=====================  ==========================================================================

A new method is one module here with a :class:`TrainingMethod` subclass
decorated with :func:`register_method`, plus its import below.
The boundary term at ``c0`` (``transfer.boundary``) is in :mod:`.boundary`.
"""

from .base import (
    DrawnConditionsMethod,
    MethodSetup,
    TrainingMethod,
    TransferTerm,
    method_class,
    method_names,
    register_method,
)
from .boundary import BOUNDARIES, Boundary
from .nll import NLLOnly
from .reverse_kl import ReverseKL
from .reweighting import Reweighting
from .trade_continuous import TradeContinuous
from .trade_grid import ConditionGrid, TradeGrid

__all__ = [
    "MethodSetup",
    "TrainingMethod",
    "DrawnConditionsMethod",
    "TransferTerm",
    "register_method",
    "method_class",
    "method_names",
    "Boundary",
    "BOUNDARIES",
    "TradeGrid",
    "TradeContinuous",
    "NLLOnly",
    "Reweighting",
    "ReverseKL",
    "ConditionGrid",
]
