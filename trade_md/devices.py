"""Where the model runs: the ``device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

Workflows (``device:``) and the command line (``--device``) name a device
with :func:`check_device` (the spelling, checked when a configuration is
read) and turn it into a ``torch.device`` with :func:`resolve_device` (the
machine, checked when a run starts):

``auto``     CUDA device 0 when torch sees one, else the CPU
``cpu``      the CPU
``cuda``     CUDA device 0; an error naming the problem when torch sees none
``cuda:N``   CUDA device N; an error when torch sees fewer than N + 1

The model, the training batches, the SNIS samples and the samples drawn
live on that device; OpenMM computes energies on its own platform
(:mod:`trade_md.energy`) and hands them back on the device of the positions.
"""
from __future__ import annotations

import re
from typing import Any

import torch

__all__ = ["DEVICE_CHOICES", "check_device", "rank_device", "resolve_device", "openmm_device_properties"]

#: How a device is written (``N``: a CUDA device index).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:N")

_SPELLING = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(name: str, value: Any) -> str:
    """``value`` (stripped, lower case) if spelled as in :data:`DEVICE_CHOICES`, else ValueError naming ``name``."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text is None or not _SPELLING.fullmatch(text):
        raise ValueError(f"{name} must be one of {', '.join(DEVICE_CHOICES)} (N: a CUDA device index), got {value!r}")
    return text


def resolve_device(value: Any, name: str = "device") -> torch.device:
    """The ``torch.device`` that a device name means on this machine.

    Parameters
    ----------
    value : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    name : str
        The setting, for messages (``device``, ``--device``).

    Raises
    ------
    ValueError
        For a misspelled name, ``cuda`` when torch sees no CUDA device, or
        ``cuda:N`` past the last device torch sees.
    """
    text = check_device(name, value)
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ValueError(f"{name} = {text!r}, but torch sees no CUDA device (torch {torch.__version__}, {build}); "
                         f"use {name} = cpu or auto")
    index = int(text.split(":")[1]) if ":" in text else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"{name} = {text!r}, but torch sees {count} CUDA device(s): cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def rank_device(device: torch.device, world) -> torch.device:
    """Under torchrun (``world``: a :class:`~trade_md.distributed.World` of several processes) a CUDA
    device means this rank's GPU, ``cuda:LOCAL_RANK``; otherwise ``device`` itself."""
    if not world.distributed or device.type != "cuda":
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise ValueError(f"rank {world.rank} has LOCAL_RANK={world.local_rank}, but torch sees "
                         f"{torch.cuda.device_count()} CUDA device(s): one GPU per process on a node")
    return torch.device("cuda", world.local_rank)


def openmm_device_properties(platform: str, device: torch.device) -> dict:
    """OpenMM platform properties that put a ``CUDA`` platform's contexts on the model's GPU.

    ``{"DeviceIndex": "N"}`` for the ``CUDA`` platform and a model on ``cuda:N`` (under torchrun each
    rank's own GPU, :func:`rank_device`); ``{}`` otherwise: other platforms keep their own default
    (OpenCL numbers its devices differently from CUDA).
    """
    if platform != "CUDA" or device.type != "cuda":
        return {}
    return {"DeviceIndex": str(0 if device.index is None else device.index)}
