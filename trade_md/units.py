"""Units and the one temperature derivative of the Boltzmann log-density.

trade_md uses OpenMM's units throughout: lengths in nm, time in ps,
temperature in K, energies in kJ/mol, angles in radians.

The unnormalized Boltzmann density is ``q(x|T) = exp(-U(x) / (k_B T))``.
Its temperature derivative, ``d/dT log q(x|T) = U(x) / (k_B T**2)``, is what
the TRADE gradient loss regresses onto.  It is implemented exactly once, in
:func:`dlogq_dT`, and every code path (targets, losses, benchmarks) calls it.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

from . import validators

__all__ = [
    "KB",
    "kT",
    "beta",
    "temperature_from_beta",
    "reduced_energy",
    "dlogq_dT",
    "check_temperature",
]

#: Boltzmann constant times Avogadro's number (the molar gas constant), kJ/(mol K).
KB: float = 8.314462618e-3

ArrayLike = Union[float, np.ndarray, torch.Tensor]


def check_temperature(temperature: ArrayLike, name: str = "temperature") -> None:
    """Raise ``ValueError`` unless every temperature is finite and > 0 K.

    Parameters
    ----------
    temperature : float, numpy array or torch tensor
        Temperature(s) in K.
    name : str
        Name used in the error message.
    """
    validators.temperature(name, temperature)


def kT(temperature: ArrayLike) -> ArrayLike:
    """Thermal energy ``k_B T`` in kJ/mol for temperature(s) in K."""
    check_temperature(temperature)
    return KB * temperature


def beta(temperature: ArrayLike) -> ArrayLike:
    """Inverse thermal energy ``1 / (k_B T)`` in mol/kJ for temperature(s) in K."""
    check_temperature(temperature)
    return 1.0 / (KB * temperature)


def temperature_from_beta(b: ArrayLike) -> ArrayLike:
    """Temperature in K for inverse thermal energy ``b`` in mol/kJ."""
    validators.positive_values("beta", b)
    return 1.0 / (KB * b)


def _check_pair(energy: ArrayLike, temperature: ArrayLike) -> None:
    """Energies must be (B,); temperature scalar or (B,) -- never (B, 1)."""
    e_shape = tuple(energy.shape) if hasattr(energy, "shape") else ()
    t_shape = tuple(temperature.shape) if hasattr(temperature, "shape") else ()
    if len(e_shape) > 1:
        raise ValueError(f"energy must have shape (batch,), got {e_shape}")
    if t_shape not in ((), (1,)) and t_shape != e_shape:
        # This is exactly the (B,) / (B, 1) -> (B, B) broadcast the research code fell into.
        raise ValueError(
            f"temperature must be a scalar or have the energy's shape {e_shape}, got {t_shape}"
        )
    check_temperature(temperature)


def reduced_energy(energy: ArrayLike, temperature: ArrayLike) -> ArrayLike:
    """Reduced potential ``U / (k_B T)`` (dimensionless).

    Parameters
    ----------
    energy : (batch,) array or tensor
        Potential energies in kJ/mol.
    temperature : float or (batch,) array or tensor
        Temperature(s) in K.
    """
    _check_pair(energy, temperature)
    return energy / (KB * temperature)


def dlogq_dT(energy: ArrayLike, temperature: ArrayLike) -> ArrayLike:
    """``d/dT log q(x|T) = U(x) / (k_B T**2)`` in 1/K, the one implementation.

    Parameters
    ----------
    energy : (batch,) array or tensor
        Potential energies ``U(x)`` in kJ/mol.
    temperature : float or (batch,) array or tensor
        Temperature(s) in K.

    Returns
    -------
    (batch,) array or tensor, 1/K.
    """
    _check_pair(energy, temperature)
    return energy / (KB * temperature * temperature)
