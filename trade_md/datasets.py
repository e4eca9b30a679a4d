"""Models and MD data shipped inside the package, found by name.

``path("ala2")`` is the TRADE-trained alanine-dipeptide model,
``path("ala2_pt_300K")`` the parallel-tempering reference at 300 K; the
files live in ``trade_md/data/`` (listed, with how each was made, in the
repository's ``data/README.md``).  ``resolve`` lets every command take a file
or a shipped name: ``trade-md sample --model ala2``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

__all__ = ["names", "path", "resolve", "describe"]

_FOLDER = Path(__file__).resolve().with_name("data")

#: name -> (kind, file under trade_md/data, what it is)
_SHIPPED = {
    "ala2": ("model", "models/ala2_trade.pt",
             "alanine dipeptide generator trained by TRADE on 600 K MD for 250-700 K"),
    **{f"ala2_pt_{t}K": ("reference", f"ala2_pt_{t}K.h5",
                         f"alanine dipeptide at {t} K, parallel tempering, 10,000 frames with energies")
       for t in (300, 450, 600, 700, 1000)},
}


def names(kind: str | None = None) -> list[str]:
    """The shipped names, of one ``kind`` (``"model"`` or ``"reference"``) or all."""
    if kind is not None and kind not in {k for k, _, _ in _SHIPPED.values()}:
        raise ValueError(f"unknown kind {kind!r}; use 'model' or 'reference'")
    return [name for name, (k, _, _) in _SHIPPED.items() if kind is None or k == kind]


def describe() -> dict[str, str]:
    """``{name: what it is}`` of every shipped file."""
    return {name: f"{kind}: {what}" for name, (kind, _, what) in _SHIPPED.items()}


def path(name: str) -> Path:
    """The file of the shipped model or data set ``name``.

    Raises
    ------
    KeyError
        If ``name`` is not shipped (the message lists the names).
    FileNotFoundError
        If the file is missing from this installation.
    """
    if name not in _SHIPPED:
        raise KeyError(f"no shipped model or data set is called {name!r}; shipped: {', '.join(_SHIPPED)}")
    file = _FOLDER / _SHIPPED[name][1]
    if not file.is_file():
        raise FileNotFoundError(f"the shipped file {file} of {name!r} is missing from this installation")
    return file


def resolve(value: Union[str, os.PathLike], kind: str) -> Path:
    """``value`` as a file: the shipped file of that name when no such file exists, else ``value`` itself.

    Parameters
    ----------
    value : a file path or a shipped name of ``kind``.
    kind : ``"model"`` or ``"reference"``.

    A missing file that is no shipped name comes back unchanged, for the
    reader to report as missing.
    """
    candidate = Path(value)
    if not candidate.exists() and str(value) in names(kind):
        return path(str(value))
    return candidate
