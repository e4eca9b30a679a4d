"""Training checkpoint files: atomic writes that keep the previous file, checksums, recovery.

``last.pt`` is replaced atomically at every checkpoint and the file it
replaces is kept as ``last.prev.pt``; a damaged ``last.pt`` (truncated,
bytes changed: the checksum written with it no longer matches) falls back to
``last.prev.pt``, so a run resumes from the step before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import Tensor

from ._io import atomic_path, keep_previous

__all__ = ["CHECKPOINT_KEYS", "previous_checkpoint", "save_checkpoint", "load_checkpoint"]

PathLike = Union[str, os.PathLike]

#: Entries every training checkpoint has (see :meth:`trade_md.train._Trainer.state_dict`).
CHECKPOINT_KEYS = frozenset({"step", "model", "optimizer", "scheduler", "rng", "method", "guard", "best", "config"})


def previous_checkpoint(path: PathLike) -> Path:
    """Where the checkpoint before ``path`` is kept: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _checksum(state) -> str:
    """SHA-256 over a nested checkpoint state (tensor bytes, other values by repr), in storage order."""
    digest = hashlib.sha256()

    def walk(value) -> None:
        if isinstance(value, Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, np.ndarray):
            digest.update(f"A{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, dict):
            digest.update(b"{")
            for key, item in value.items():
                digest.update(repr(key).encode())
                walk(item)
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                walk(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    walk(state)
    return digest.hexdigest()


def save_checkpoint(state: dict, path: PathLike) -> None:
    """Write a training checkpoint atomically, keeping the one it replaces.

    The file at ``path`` (if any) becomes :func:`previous_checkpoint` (a hard
    link, or a copy), then the new state replaces ``path``; at every moment
    both names hold complete checkpoints.  The state carries a checksum of
    its contents, so that bytes damaged later are found by
    :func:`load_checkpoint`.
    """
    path = Path(path)
    state = dict(state, checksum=_checksum(state))
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        keep_previous(path, previous_checkpoint(path))


def _read_checkpoint(path: Path, device) -> dict:
    """One checkpoint file, or ValueError saying how it is damaged (never torch's own traceback)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd storages on its way to failing
            state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated/corrupt files raise RuntimeError, EOFError, pickle errors ...
        lines = str(err).strip().splitlines()
        raise ValueError(f"{path} is damaged or truncated ({type(err).__name__}: {lines[0] if lines else ''})") from None
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= set(state):
        raise ValueError(f"{path} is not a trade_md training checkpoint")
    expected = state.pop("checksum", None)  # checkpoints written before checksums were added have none
    if expected is not None and expected != _checksum(state):
        raise ValueError(f"{path} is damaged (its contents do not match the checksum written with it)")
    return state


def load_checkpoint(path: PathLike, device=None) -> dict:
    """Read the training checkpoint ``path``, falling back to the previous one if it is damaged.

    Parameters
    ----------
    path : ``last.pt`` of a training folder.
    device : torch device to map tensors to (default: as saved).

    Returns
    -------
    dict
        The state of :meth:`trade_md.train._Trainer.state_dict`.  If ``path`` is damaged or
        missing but :func:`previous_checkpoint` is good, a warning names the
        damaged file, the good one is copied onto ``path`` (so the next save
        keeps a good previous checkpoint) and its state is returned: the run
        resumes from that earlier step exactly as if it had been killed then.

    Raises
    ------
    ValueError
        Naming the files, if neither is a readable checkpoint.
    """
    path = Path(path)
    previous = previous_checkpoint(path)
    problems = []
    for candidate in (path, previous):
        if not candidate.exists():
            problems.append(f"{candidate} does not exist")
            continue
        try:
            state = _read_checkpoint(candidate, device)
        except ValueError as err:
            problems.append(str(err))
            continue
        if candidate != path:
            warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {candidate} "
                          f"(step {state['step']})", stacklevel=2)
            with atomic_path(path) as tmp:
                shutil.copyfile(candidate, tmp)
        return state
    raise ValueError("cannot resume training: " + "; ".join(problems)
                     + " (start a fresh run in another folder)")
