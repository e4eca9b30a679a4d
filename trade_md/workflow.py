"""The main job: MD at one temperature -> TRADE-trained generator -> samples -> report.

``run_workflow(path)`` (CLI: ``trade-md run WORKFLOW.yaml``) runs these
stages, each skipped when its output already exists, so an interrupted
workflow resumes where it stopped:

1. system: built-in name or PDB + force field;
2. reference data at ``T0``: a ReferenceData file, simulated first if missing
   (``data.simulate_nanoseconds``);
3. training (``trade_md.train``) of a :class:`BoltzmannGenerator` with the
   Boltzmann target of OpenMM energies; checkpoints in ``OUT/train``;
4. ``OUT/model.pt``: the best checkpoint by validation NLL at ``T0``;
5. ``OUT/samples_<T>K.h5`` at every sampling temperature;
6. ``OUT/report``: metrics.json, report.md and PNGs against the MD references.

Relative paths in the workflow file are relative to the current directory.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ._io import atomic_write_text
from .config import ConfigError, load_yaml, save_yaml
from .data import ReferenceData
from .energy import OpenMMEnergy
from .flows import FlowConfig
from .generator import BoltzmannGenerator, Samples
from .problems import BoundaryData, TrainingData
from .simulate import simulate
from .system import MolecularSystem
from .targets import BoltzmannTarget
from .train import OptimConfig, RunConfig, TrainConfig, TransferConfig, train

__all__ = ["WorkflowConfig", "run_workflow", "build_system"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SystemSection:
    """The molecule: a capped-peptide ``sequence`` (one-letter codes), a ``pdb`` file, or a built-in
    ``name``; ``forcefield`` lists the XML files (implicit solvent included)."""

    name: Optional[str] = "alanine-dipeptide"
    pdb: Optional[str] = None
    sequence: Optional[str] = None
    forcefield: tuple = ("amber99sbildn.xml", "amber96_obc.xml")
    constraints: Optional[str] = "HBonds"


@dataclass
class DataSection:
    """Reference MD at ``T0``.

    ``train``: ReferenceData file.  If it does not exist and
    ``simulate_nanoseconds`` is set, it is simulated at ``temperature`` (K)
    with ``seed``.  ``stride`` subsamples frames, ``max_frames`` caps them,
    ``validation_fraction`` of the blocks (``block_frames`` frames each) is
    held out for model selection at ``T0``.
    """

    train: str = "data/ala2_600K.h5"
    temperature: Optional[float] = None
    simulate_nanoseconds: Optional[float] = None
    seed: int = 1
    stride: int = 1
    max_frames: Optional[int] = None
    validation_fraction: float = 0.1
    block_frames: int = 100
    split_seed: int = 0


@dataclass
class ModelSection:
    """Generator architecture: flow config, Z-matrix torsion style, dtype."""

    flow: FlowConfig = field(default_factory=FlowConfig)
    torsion_style: str = "relative"
    scale_from_data: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")


@dataclass
class SampleSection:
    """Sampling after training: ``n`` samples at each temperature (K)."""

    temperatures: tuple = (300.0, 450.0, 600.0, 700.0)
    n: int = 10000
    batch_size: int = 4096
    seed: int = 0


@dataclass
class EvaluateSection:
    """MD references per temperature (K -> ReferenceData file) for the report."""

    references: dict = field(default_factory=dict)


@dataclass
class WorkflowConfig:
    """A complete temperature-transfer workflow (see the module docstring)."""

    out_dir: str = "runs/workflow"
    threads: int = 1
    energy_workers: int = 1
    platform: Optional[str] = None
    system: SystemSection = field(default_factory=SystemSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sample: SampleSection = field(default_factory=SampleSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)


def build_system(section: SystemSection) -> MolecularSystem:
    """The MolecularSystem of a workflow's ``system`` section."""
    return MolecularSystem.from_spec(section.name, section.pdb, section.forcefield, section.constraints,
                                     sequence=section.sequence)


def _reference_data(cfg: WorkflowConfig, system: MolecularSystem, log) -> ReferenceData:
    path = Path(cfg.data.train)
    if not path.exists():
        if cfg.data.simulate_nanoseconds is None or cfg.data.temperature is None:
            raise FileNotFoundError(
                f"reference data {path} not found; set data.temperature and data.simulate_nanoseconds to simulate it"
            )
        log(f"simulating {cfg.data.simulate_nanoseconds} ns at {cfg.data.temperature} K -> {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        simulate(system, cfg.data.temperature, cfg.data.simulate_nanoseconds, seed=cfg.data.seed, out=path,
                 platform=cfg.platform, progress=cfg.run.progress)
    data = ReferenceData.load(path, system=system)
    if cfg.data.temperature is not None and abs(cfg.data.temperature - data.temperature) > 1e-6:
        raise ValueError(f"{path} holds data at {data.temperature} K, not data.temperature={cfg.data.temperature} K")
    data = data.subsample(cfg.data.stride)
    if cfg.data.max_frames is not None:
        data = data.select(slice(0, int(cfg.data.max_frames)))
    return data


def _training_data(data: ReferenceData, cfg: WorkflowConfig, dtype: torch.dtype) -> TrainingData:
    fraction = cfg.data.validation_fraction
    if not 0 < fraction < 1:
        raise ConfigError(f"data.validation_fraction must be in (0, 1), got {fraction}")
    train_part, val_part = data.split([1 - fraction, fraction], seed=cfg.data.split_seed,
                                      block_frames=cfg.data.block_frames)

    def boundary(part: ReferenceData) -> BoundaryData:
        x = torch.as_tensor(part.xyz, dtype=dtype)
        return BoundaryData(x, torch.full((len(part),), part.temperature, dtype=dtype))

    return TrainingData(boundary(train_part), boundary(val_part))


def run_workflow(path: str | Path, out_dir: Optional[str | Path] = None, log=print) -> dict:
    """Run (or resume) the workflow described by a YAML file; returns the metrics per temperature."""
    cfg = load_yaml(WorkflowConfig, path)
    if out_dir is not None:
        cfg = dataclasses.replace(cfg, out_dir=str(out_dir))
    return run(cfg, log=log)


def run(cfg: WorkflowConfig, log=print) -> dict:
    """Run (or resume) a workflow given as a :class:`WorkflowConfig`."""
    from .analysis.evaluate import evaluate

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "workflow.yaml")
    timings = {}
    system = build_system(cfg.system)
    data = _reference_data(cfg, system, log)
    t0 = data.temperature
    dtype = _DTYPES[cfg.model.dtype]
    energy = OpenMMEnergy(system, platform=cfg.platform, n_workers=cfg.energy_workers)
    model_path = out / "model.pt"
    if model_path.exists():
        log(f"{model_path} exists: skipping training")
        bg = BoltzmannGenerator.load(model_path, system=system, energy=energy)
    else:
        torch.manual_seed(cfg.run.seed)
        frames = data.xyz[:: max(1, len(data) // 5000)].astype(np.float64) if cfg.model.scale_from_data else None
        bg = BoltzmannGenerator.for_system(system, reference_temperature=t0, reference_frames=frames,
                                           flow=cfg.model.flow, torsion_style=cfg.model.torsion_style,
                                           energy=energy).to(dtype)
        train_cfg = TrainConfig(flow=cfg.model.flow, transfer=cfg.transfer, optim=cfg.optim,
                                run=dataclasses.replace(cfg.run, out_dir=None, threads=cfg.threads))
        train_dir = out / "train"
        log(f"training on {len(data)} frames at {t0:g} K ({cfg.transfer.method}) -> {train_dir}")
        start = time.perf_counter()
        result = train(bg.density, BoltzmannTarget(energy.energy), _training_data(data, cfg, dtype), train_cfg,
                       train_dir, resume=(train_dir / "last.pt").exists())
        timings["train_s"] = time.perf_counter() - start
        log(f"trained {result.step} steps; best step {result.best_step}, validation NLL {result.best_validation:.3f}; "
            f"{result.skipped_steps} skipped steps, {result.reloads} reloads")
        bg.save(model_path)
    torch.manual_seed(cfg.sample.seed)
    sample_sets = []
    for temperature in cfg.sample.temperatures:
        path = out / f"samples_{float(temperature):g}K.h5"
        if path.exists():
            sample_sets.append(Samples.load(path, system=system))
            continue
        start = time.perf_counter()
        s = bg.sample(cfg.sample.n, float(temperature), batch_size=cfg.sample.batch_size, progress=cfg.run.progress)
        timings[f"sample_{float(temperature):g}K_s"] = time.perf_counter() - start
        s.save(path)
        log(f"{path}: relative ESS {s.relative_ess():.2%}")
        sample_sets.append(s)
    references = {}
    for temperature, ref_path in cfg.evaluate.references.items():
        ref = ReferenceData.load(ref_path, system=system)
        if abs(ref.temperature - float(temperature)) > 1e-6:
            raise ValueError(f"evaluate.references[{temperature}] = {ref_path} holds data at {ref.temperature} K")
        references[ref.temperature] = ref
    with_ref = [s for s in sample_sets if float(s.temperature[0]) in references]
    metrics = {}
    if with_ref:
        result = evaluate(with_ref, references, out / "report", model=bg, training_temperature=t0)
        metrics = result.metrics
        log(f"report: {result.files.report_md}")
    if timings:
        previous = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
        atomic_write_text(out / "timings.json", json.dumps({**previous, **timings}, indent=2))
    return metrics
