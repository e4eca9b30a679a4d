"""Evaluation of generated samples against reference MD.

Submodules (functions on plain numpy arrays):

- :mod:`~trade_md.analysis.observables`: backbone phi/psi through mdtraj, basin
  assignment (the only submodule that imports mdtraj);
- :mod:`~trade_md.analysis.metrics`: Ramachandran KL/JS on fixed bins with noise
  floors, Kish ESS, energy Wasserstein distance and overlap, basin free-energy
  differences with bootstrap errors, NLL;
- :mod:`~trade_md.analysis.plots`: PNG figures (matplotlib, Agg, no pyplot);
- :mod:`~trade_md.analysis.report`: ``metrics.json`` and ``report.md``.

Submodules are imported on first access, so ``trade_md.analysis.metrics``
works without loading mdtraj or matplotlib.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["observables", "metrics", "plots", "report"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
