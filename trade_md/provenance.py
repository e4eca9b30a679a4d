"""What a model file records about how its model was made.

:class:`ModelRecord` travels inside every model file written by
``BoltzmannGenerator.save``: the temperature range (K) it was trained for,
the training method, the training data (path and SHA-256) and the versions of
trade_md, torch, OpenMM and mdtraj of the run that made it.  ``None`` means
not recorded (model files from before the record existed say what is known).
``trade-md info MODEL`` prints it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Optional

from . import validators
from ._version import __version__

__all__ = ["ModelRecord", "current_versions", "OutOfRangeWarning"]

#: the packages whose versions a model file records (besides trade_md itself)
_ENGINES = ("torch", "openmm", "mdtraj")


class OutOfRangeWarning(UserWarning):
    """Sampling at a temperature outside the range the model was trained for."""


def current_versions() -> dict[str, Optional[str]]:
    """``{"trade_md": ..., "torch": ..., "openmm": ..., "mdtraj": ...}`` of this installation (None: not installed)."""
    def of(package: str) -> Optional[str]:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {"trade_md": __version__, **{name: of(name) for name in _ENGINES}}


@dataclass
class ModelRecord:
    """How a model was made; every field None (or empty) where it was not recorded.

    Attributes
    ----------
    temperature_range : (low, high) in K, the temperatures training covered
        (``(T0, T0)`` for a model trained at ``T0`` only).
    method : the training method (``transfer.method``).
    training_data : the training-data file as training was given it.
    training_data_sha256 : SHA-256 (hex) of that file's bytes.
    versions : package -> version of the run that made the model (None: unknown).
    note : free text, e.g. what is known about an older file.
    """

    temperature_range: Optional[tuple[float, float]] = None
    method: Optional[str] = None
    training_data: Optional[str] = None
    training_data_sha256: Optional[str] = None
    versions: dict = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if self.temperature_range is not None:
            low, high = (float(t) for t in validators.temperature("temperature_range", list(self.temperature_range)))
            if low > high:
                raise ValueError(f"temperature_range must be (low, high) in K with low <= high, "
                                 f"got {self.temperature_range!r}")
            self.temperature_range = (low, high)

    def covers(self, temperature: float) -> bool:
        """Whether ``temperature`` (K) lies in :attr:`temperature_range` (True when the range is unknown)."""
        if self.temperature_range is None:
            return True
        low, high = self.temperature_range
        return low * (1 - 1e-9) <= temperature <= high * (1 + 1e-9)

    def lines(self) -> list[str]:
        """Human-readable ``key: value`` lines (what ``trade-md info`` prints)."""
        unknown = "not recorded"
        rng = self.temperature_range
        versions = ", ".join(f"{k} {v if v is not None else 'unknown'}" for k, v in self.versions.items())
        data = self.training_data or unknown
        if self.training_data_sha256:
            data += f" (sha256 {self.training_data_sha256})"
        out = [f"trained temperature range: {f'{rng[0]:g}-{rng[1]:g} K' if rng else unknown}",
               f"training method: {self.method or unknown}",
               f"training data: {data}",
               f"made with: {versions or unknown}"]
        if self.note:
            out.append(f"note: {self.note}")
        return out
