"""The sections of a workflow file (``trade-md run WORKFLOW.yaml``), checked when loaded.

:class:`WorkflowConfig` holds ``system``, ``data``, ``model``, ``transfer``, ``optim``, ``run``,
``sample`` and ``evaluate`` plus the runtime keys; every section validates itself, and the whole
configuration is checked before any stage of :mod:`trade_md.workflow` starts.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from . import validators
from .config import ConfigError
from .curriculum import check_curriculum
from .devices import check_device
from .flows import FlowConfig
from .system import ALANINE_DIPEPTIDE, DEFAULT_CONSTRAINTS, DEFAULT_FORCEFIELD, MolecularSystem
from .train import OptimConfig, RunConfig, TransferConfig
from .zmatrix import DEFAULT_TORSION_STYLE, TORSION_STYLES

__all__ = ["SystemSection", "DataSection", "ModelSection", "SampleSection", "EvaluateSection", "WorkflowConfig",
           "build_system"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SystemSection:
    """The molecule: a capped-peptide ``sequence`` (one-letter codes), a ``pdb`` file, or a built-in
    ``name``; ``forcefield`` lists the XML files (implicit solvent included)."""

    name: Optional[str] = ALANINE_DIPEPTIDE
    pdb: Optional[str] = None
    sequence: Optional[str] = None
    forcefield: tuple[str, ...] = DEFAULT_FORCEFIELD
    constraints: Optional[str] = DEFAULT_CONSTRAINTS


@dataclass
class DataSection:
    """Reference MD at ``T0``.

    ``train``: ReferenceData file, or a list of files of independent runs
    at one temperature (joined in order, exchangeable hydrogens labelled
    alike).  If a single file does not exist and ``simulate_nanoseconds`` is
    set, it is simulated at ``temperature`` (K) with ``seed``.  ``stride`` subsamples frames, ``max_frames`` caps them,
    ``validation_fraction`` of the blocks (``block_frames`` frames each) is
    held out for model selection at ``T0``.
    """

    train: Union[str, tuple[str, ...]] = "data/ala2_600K.h5"
    temperature: Optional[float] = None
    simulate_nanoseconds: Optional[float] = None
    seed: int = 1
    stride: int = 1
    max_frames: Optional[int] = None
    validation_fraction: float = 0.1
    block_frames: int = 100
    split_seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.train, str):
            if not self.train:
                raise ConfigError("data.train lists no files")
            if len(self.train) == 1:
                self.train = self.train[0]
            elif self.simulate_nanoseconds is not None:
                raise ConfigError(f"data.simulate_nanoseconds simulates one file, but data.train lists "
                                  f"{len(self.train)}; simulate each with `trade-md simulate` or name one file")
        if self.temperature is not None:
            validators.temperature("data.temperature", self.temperature)
        if self.simulate_nanoseconds is not None:
            validators.positive_number("data.simulate_nanoseconds", self.simulate_nanoseconds)
        validators.positive_int("data.stride", self.stride)
        validators.positive_int("data.block_frames", self.block_frames)
        if self.max_frames is not None:
            validators.positive_int("data.max_frames", self.max_frames)
        validators.fraction("data.validation_fraction", self.validation_fraction)

    @property
    def files(self) -> tuple[str, ...]:
        """The training-data files, in order (one for a single ``train`` path)."""
        return (self.train,) if isinstance(self.train, str) else tuple(self.train)


@dataclass
class ModelSection:
    """Generator architecture: flow config, Z-matrix torsion style, dtype."""

    flow: FlowConfig = field(default_factory=FlowConfig)
    torsion_style: str = DEFAULT_TORSION_STYLE
    scale_from_data: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        validators.choice("model.torsion_style", self.torsion_style, TORSION_STYLES)
        validators.choice("model.dtype", self.dtype, _DTYPES)


@dataclass
class SampleSection:
    """Sampling after training: ``n`` samples at each temperature (K)."""

    temperatures: tuple[float, ...] = (300.0, 450.0, 600.0, 700.0)
    n: int = 10000
    batch_size: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.temperatures, (str, numbers.Number)):
            raise ConfigError(f"sample.temperatures must be a list of temperatures in K, got {self.temperatures!r}")
        temperatures = tuple(self.temperatures)
        if not temperatures:
            raise ConfigError("sample.temperatures is empty: list at least one temperature in K")
        validators.temperature("sample.temperatures", temperatures)
        temperatures = tuple(float(t) for t in temperatures)
        twice = sorted({t for t in temperatures if temperatures.count(t) > 1})
        if twice:
            raise ConfigError(f"sample.temperatures lists {', '.join(f'{t:g}' for t in twice)} K more than once")
        self.temperatures = temperatures
        validators.positive_int("sample.n", self.n)
        validators.positive_int("sample.batch_size", self.batch_size)


@dataclass
class EvaluateSection:
    """MD references per temperature (K -> ReferenceData file) for the report."""

    references: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        references = {}
        for key, path in dict(self.references).items():
            t = float(validators.temperature("evaluate.references keys", _number(key)))
            if not isinstance(path, (str, os.PathLike)) or not str(path):
                raise ConfigError(f"evaluate.references[{t:g}] must be a file path, got {path!r}")
            references[t] = str(path)
        self.references = references


@dataclass
class WorkflowConfig:
    """A complete temperature-transfer workflow (see the module docstring).

    ``out_dir`` and ``threads`` are set here only: training writes to
    ``<out_dir>/train`` with ``threads`` torch threads, so ``run.out_dir`` and
    ``run.threads`` are refused rather than silently replaced. The model trains and samples on ``device``
    (:mod:`trade_md.devices`); OpenMM computes energies on ``platform``.
    """

    out_dir: str = "runs/workflow"
    threads: int = 1
    energy_workers: int = 1
    platform: Optional[str] = None
    device: str = "auto"
    system: SystemSection = field(default_factory=SystemSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sample: SampleSection = field(default_factory=SampleSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)

    def __post_init__(self) -> None:
        validators.positive_int("threads", self.threads)
        validators.positive_int("energy_workers", self.energy_workers)
        self.device = check_device("device", self.device)
        for key in ("out_dir", "threads"):  # one setting each: the top-level key
            if getattr(self.run, key) is not None:
                raise ConfigError(f"run.{key} is not used in a workflow: set the top-level {key} instead "
                                  f"(got run.{key} = {getattr(self.run, key)!r})")
        check_curriculum(self.transfer, self.optim)

    def training_run(self) -> RunConfig:
        """The ``run`` section as training takes it: with the workflow's ``threads``."""
        return dataclasses.replace(self.run, threads=self.threads)


def _number(text):
    """A mapping key as a number if it reads as one (YAML keys may be strings), else as it is."""
    if isinstance(text, bool):
        return text
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def build_system(section: SystemSection) -> MolecularSystem:
    """The MolecularSystem of a workflow's ``system`` section."""
    return MolecularSystem.from_spec(section.name, section.pdb, section.forcefield, section.constraints,
                                     sequence=section.sequence)
