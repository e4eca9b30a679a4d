"""Evaluation of generated samples against reference MD.

Submodules (functions on plain numpy arrays):

- :mod:`~trade_md.analysis.observables`: backbone phi/psi through mdtraj, per
  named residue (``"ALA2"``), basin assignment (the only submodule that
  imports mdtraj);
- :mod:`~trade_md.analysis.metrics`: Ramachandran KL/JS on fixed bins with noise
  floors, JS of joint basin populations, Kish ESS; re-exports
  :mod:`~trade_md.analysis.energies` (energy Wasserstein distance, also on the
  central 99 % with the outlier fraction, and overlap) and
  :mod:`~trade_md.analysis.free_energy` (basin free-energy differences with
  bootstrap errors, NLL);
- :mod:`~trade_md.analysis.residues`: per-residue and joint-basin metrics of a
  peptide and the "within noise" verdict rule;
- :mod:`~trade_md.analysis.summary`: the verdict table that opens ``report.md``;
- :mod:`~trade_md.analysis.plots`: PNG figures (matplotlib, Agg, no pyplot);
- :mod:`~trade_md.analysis.report`: ``metrics.json`` and ``report.md``;
- :mod:`~trade_md.analysis.evaluate`: all of it for sample sets against MD.

Submodules are imported on first access, so ``trade_md.analysis.metrics``
works without loading mdtraj or matplotlib, and ``import trade_md`` loads
none of them (``trade_md.evaluate`` is looked up on first use too).
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["observables", "metrics", "energies", "free_energy", "residues", "summary", "plots", "report", "evaluate"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
