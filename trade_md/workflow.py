"""The main job: MD at one temperature -> TRADE-trained generator -> samples -> report.

``run_workflow(path)`` (CLI: ``trade-md run WORKFLOW.yaml``) runs these
stages, so an interrupted workflow resumes where it stopped:

1. system: built-in name or PDB + force field;
2. reference data at ``T0``: a ReferenceData file, simulated first if missing
   (``data.simulate_nanoseconds``);
3. training (``trade_md.train``) of a :class:`BoltzmannGenerator` with the
   Boltzmann target of OpenMM energies; checkpoints in ``OUT/train``;
4. ``OUT/model.pt``: the best checkpoint by validation NLL at ``T0``, with its
   record (trained temperature range, training data and its hash, versions);
5. ``OUT/samples_<T>K.h5`` at every sampling temperature;
6. ``OUT/report``: metrics.json, report.md and PNGs against the MD references.

Relative paths in the workflow file are relative to the current directory.

The whole configuration is checked before any stage starts (types, ranges,
the curriculum against ``optim.steps``, the reference files).  Each stage
records what it was made from in ``OUT/stages.json``: the configuration
sections it depends on and the content hashes of its input files.  A stage is
skipped when its output exists and its record matches; it is redone, with all
stages after it, when a setting it depends on changed (the runtime-only keys
``threads``, ``energy_workers``, ``platform``, ``device``, ``run.progress``
never count).  An unfinished training run whose settings changed is refused
rather than resumed.  ``OUT/workflow.yaml`` is written only when a stage is
(re)made from it, so it always describes the outputs beside it.

Under ``torchrun`` (``torchrun --nproc_per_node N -m trade_md run WORKFLOW.yaml``)
every rank reads the data and the stage records, training is data-parallel
(:mod:`trade_md.distributed`; each rank its own OpenMM energies, on CUDA its
own GPU ``cuda:LOCAL_RANK``), and rank 0 alone writes the stage records, the
model, the samples and the report.  The training data must exist beforehand.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ._io import atomic_write_text
from .config import ConfigError, load_yaml, save_yaml, to_dict
from .checkpoints import previous_checkpoint
from .data import ReferenceData
from .devices import openmm_device_properties, rank_device, resolve_device
from .distributed import World
from .energy import OpenMMEnergy, select_platform
from .generator import BoltzmannGenerator, Samples
from .methods import method_class
from .provenance import ModelRecord
from .simulate import simulate
from .system import MolecularSystem
from .targets import BoltzmannTarget
from .train import TrainConfig, train
from .training_data import BoundaryData, TrainingData
from .weights import pareto_k_note

from .workflow_config import _DTYPES, WorkflowConfig, build_system

__all__ = ["WorkflowConfig", "run_workflow", "build_system"]

# ------------------------------------------------------------------ stage records
#: Keys that change how a run executes, never what it makes: they never trigger a redo.
RUNTIME_KEYS = frozenset({"out_dir", "threads", "energy_workers", "platform", "device", "run.progress",
                          "run.threads", "run.out_dir"})


#: Data keys that only say how to make (simulate) the data file; training depends on the file's contents.
_SIMULATION_ONLY = ("data.train", "data.temperature", "data.simulate_nanoseconds", "data.seed")


def _flat(value, prefix: str) -> dict:
    """``{"section.key": value}`` of a nested dict (lists kept as values)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _settings(cfg: WorkflowConfig, *sections: str) -> dict:
    """Flat settings of the named sections of ``cfg``, without the runtime-only keys."""
    tree = to_dict(cfg)
    flat = {}
    for section in sections:
        flat.update(_flat(tree[section], section))
    return {k: v for k, v in flat.items() if k not in RUNTIME_KEYS}


def _fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _changes(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every key whose value differs."""
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _changed_sections(changes: list[str]) -> str:
    sections = sorted({c.split(":")[0].split(".")[0].split("[")[0] for c in changes})
    return ", ".join(sections)


class _Stages:
    """``OUT/stages.json``: per stage, the settings and input-file hashes it was made from.

    Also writes ``OUT/workflow.yaml`` the first time a stage is (re)made in a
    run (:meth:`making`), so that file always describes the outputs beside it.
    Not ``writable`` (ranks > 0 of a distributed run): the same decisions, in
    memory only; rank 0 writes.
    """

    def __init__(self, cfg: WorkflowConfig, out: Path, log, writable: bool = True):
        self.cfg, self.out, self.log, self.writable = cfg, out, log, writable
        self.path = out / "stages.json"
        self.records: dict = {}
        if self.path.exists():
            try:
                self.records = json.loads(self.path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path} is damaged ({err}); delete it to redo every stage") from err
        self._written_config = False

    def get(self, stage: str) -> Optional[dict]:
        return self.records.get(stage)

    def set(self, stage: str, record: Optional[dict]) -> None:
        if record is None:
            self.records.pop(stage, None)
        else:
            self.records[stage] = record
        if self.writable:
            atomic_write_text(self.path, json.dumps(self.records, indent=2, sort_keys=True, default=str))

    def making(self) -> None:
        """Call before (re)making an output: saves the configuration it is made from, once per run."""
        if not self._written_config and self.writable:
            save_yaml(self.cfg, self.out / "workflow.yaml")
            self._written_config = True

    def file_hash(self, path: Path) -> str:
        """SHA-256 of a file's contents, cached in the record by (size, mtime)."""
        st = path.stat()
        cache = self.records.setdefault("file_hashes", {})
        key = str(path.resolve())
        known = cache.get(key)
        if known and known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
            return known["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}
        return cache[key]["sha256"]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# ------------------------------------------------------------------ stages
def _load_references(cfg: WorkflowConfig, system: MolecularSystem) -> dict[float, ReferenceData]:
    """The ``evaluate.references`` files, checked (exist, readable, same molecule, temperature)."""
    references = {}
    for temperature, ref_path in cfg.evaluate.references.items():
        where = f"evaluate.references[{temperature:g}]"
        path = Path(ref_path)
        ref = _load_checked(path, where, system)
        if abs(ref.temperature - temperature) > 1e-6:
            raise ValueError(f"{where} = {path} holds data at {ref.temperature:g} K, not {temperature:g} K")
        references[temperature] = ref
    return references


def _load_checked(path: Path, where: str, system: MolecularSystem) -> ReferenceData:
    """``ReferenceData.load(path, system=system)``, with one-line errors naming the setting ``where``."""
    if not path.is_file():
        raise FileNotFoundError(f"{where}: reference file not found: {path}")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{where}: reference file is not readable: {path}")
    try:
        return ReferenceData.load(path, system=system)
    except (ValueError, OSError) as err:
        raise ValueError(f"{where}: {err}") from err


def _reference_data(cfg: WorkflowConfig, system: MolecularSystem, stages: _Stages) -> tuple[ReferenceData, str]:
    """The training data (simulated first when asked and missing) and the SHA-256 of its file(s)."""
    if isinstance(cfg.data.train, str):
        data, digest = _single_file_data(cfg, system, stages)
    else:
        data, digest = _joined_data(cfg, system, stages)
    if cfg.data.temperature is not None and abs(cfg.data.temperature - data.temperature) > 1e-6:
        raise ValueError(f"data.train holds data at {data.temperature} K, not data.temperature={cfg.data.temperature} K")
    data = data.subsample(cfg.data.stride)
    if cfg.data.max_frames is not None:
        data = data.select(slice(0, int(cfg.data.max_frames)))
    return data, digest


def _joined_data(cfg: WorkflowConfig, system: MolecularSystem, stages: _Stages) -> tuple[ReferenceData, str]:
    """The files of data.train joined; the hash covers every file's hash, in order."""
    paths = [Path(name) for name in cfg.data.files]
    parts = [_load_checked(path, f"data.train[{i}]", system) for i, path in enumerate(paths)]
    hashes = [stages.file_hash(path) for path in paths]
    data = ReferenceData.concatenate(parts, sources=list(cfg.data.files))
    return data, hashlib.sha256(" ".join(hashes).encode()).hexdigest()


def _single_file_data(cfg: WorkflowConfig, system: MolecularSystem, stages: _Stages) -> tuple[ReferenceData, str]:
    log = stages.log
    path = Path(cfg.data.train)
    made_from = _settings(cfg, "system")
    made_from.update({key: getattr(cfg.data, key.split(".")[1]) for key in _SIMULATION_ONLY})
    record = stages.get("data")
    if path.exists() and cfg.data.simulate_nanoseconds is not None:
        made_here = (record is not None and record.get("simulated") and record.get("path") == str(path)
                     and record.get("sha256") == stages.file_hash(path))
        if made_here and record["settings"] != made_from:
            changes = _changes(record["settings"], made_from)
            log(f"{path}: {_changed_sections(changes)} changed ({'; '.join(changes)}): "
                "redoing the simulation and every later stage")
            stages.making()
            path.unlink()
        elif not made_here:
            _check_simulated_file(path, cfg)
    if not path.exists():
        if cfg.data.simulate_nanoseconds is None or cfg.data.temperature is None:
            raise FileNotFoundError(
                f"reference data {path} not found; set data.temperature and data.simulate_nanoseconds to simulate it"
            )
        stages.making()
        log(f"simulating {cfg.data.simulate_nanoseconds} ns at {cfg.data.temperature} K -> {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        simulate(system, cfg.data.temperature, cfg.data.simulate_nanoseconds, seed=cfg.data.seed, out=path,
                 platform=cfg.platform, progress=cfg.run.progress)
        stages.set("data", {"simulated": True, "path": str(path), "settings": made_from,
                            "sha256": stages.file_hash(path)})
    return ReferenceData.load(path, system=system), stages.file_hash(path)


def _check_simulated_file(path: Path, cfg: WorkflowConfig) -> None:
    """Refuse an existing data.train simulated with other settings than data.simulate_nanoseconds / data.seed."""
    settings = ReferenceData.load(path).metadata.get("settings")
    if not isinstance(settings, dict):
        return
    asked = {"nanoseconds": ("data.simulate_nanoseconds", cfg.data.simulate_nanoseconds),
             "seed": ("data.seed", cfg.data.seed)}
    differ = [f"{key} = {value!r} but the file has {settings[k]!r}" for k, (key, value) in asked.items()
              if k in settings and settings[k] != value]
    if differ:
        raise ConfigError(f"data.train {path} exists and was simulated with other settings ({'; '.join(differ)}); "
                          "delete it to simulate it again, or unset data.simulate_nanoseconds to use it as it is")


def _training_data(data: ReferenceData, cfg: WorkflowConfig, dtype: torch.dtype) -> TrainingData:
    fraction = cfg.data.validation_fraction
    train_part, val_part = data.split([1 - fraction, fraction], seed=cfg.data.split_seed,
                                      block_frames=cfg.data.block_frames)

    def boundary(part: ReferenceData) -> BoundaryData:
        x = torch.as_tensor(part.xyz, dtype=dtype)
        return BoundaryData(x, torch.full((len(part),), part.temperature, dtype=dtype))

    return TrainingData(boundary(train_part), boundary(val_part))


def _discard_model_and_after(stages: _Stages) -> None:
    """Remove the model, the training folder, the samples and the report (before training anew; rank 0 only)."""
    out = stages.out
    if not stages.writable:
        return
    for path in [out / "model.pt", out / "train", out / "report", *out.glob("samples_*K.h5")]:
        _remove(path)
    for stage in ("train", "samples", "evaluate"):
        stages.set(stage, None)


def _train_stage(cfg: WorkflowConfig, system: MolecularSystem, energy: OpenMMEnergy, data: ReferenceData,
                 settings: dict, stages: _Stages, timings: dict,
                 device: torch.device, world: World) -> tuple[BoltzmannGenerator, str]:
    """``OUT/model.pt`` on ``device``: loaded if its record matches ``settings``, else trained; and its fingerprint."""
    log, out = stages.log, stages.out
    fingerprint = _fingerprint(settings)
    model_path, train_dir = out / "model.pt", out / "train"
    record = stages.get("train")
    if model_path.exists():
        # a model.pt beside a "started" record was saved by that training (stale ones are removed before it)
        if record is not None and record["fingerprint"] == fingerprint:
            log(f"{model_path} is up to date: skipping training")
            if record.get("status") != "done":
                stages.set("train", dict(record, status="done"))
            return BoltzmannGenerator.load(model_path, system=system, energy=energy).to(device), fingerprint
        if record is None:
            reason = "there is no record of what it was made from"
        else:
            changes = _changes(record["settings"], settings)
            reason = f"{_changed_sections(changes)} changed ({'; '.join(changes)})"
        log(f"{model_path}: {reason}: redoing training, sampling and evaluation")
        stages.making()
        _discard_model_and_after(stages)
    elif _has_checkpoint(train_dir) and record is not None and record["fingerprint"] != fingerprint:
        changes = _changes(record["settings"], settings)
        raise ConfigError(
            f"the training in {train_dir} is unfinished and was started with other settings "
            f"({'; '.join(changes)}); rerun with the settings it was started with (saved in "
            f"{out / 'workflow.yaml'}) to finish it, or delete {train_dir} to train anew with the new ones"
        )
    stages.making()
    stages.set("train", {"status": "started", "fingerprint": fingerprint, "settings": settings})
    t0, dtype = data.temperature, _DTYPES[cfg.model.dtype]
    torch.manual_seed(cfg.run.seed)
    frames = data.xyz[:: max(1, len(data) // 5000)].astype(np.float64) if cfg.model.scale_from_data else None
    bg = BoltzmannGenerator.for_system(system, reference_temperature=t0, reference_frames=frames,
                                       flow=cfg.model.flow, torsion_style=cfg.model.torsion_style,
                                       energy=energy).to(device=device, dtype=dtype)
    train_cfg = TrainConfig(transfer=cfg.transfer, optim=cfg.optim, run=cfg.training_run())
    world.barrier()  # rank 0 has removed a stale training before any rank looks for a checkpoint
    resume = _has_checkpoint(train_dir)
    log(f"{'resuming the training' if resume else 'training'} on {len(data)} frames at {t0:g} K "
        f"({cfg.transfer.method}, on {device}) -> {train_dir}")
    start = time.perf_counter()
    result = train(bg.density, BoltzmannTarget(energy.energy), _training_data(data, cfg, dtype), train_cfg,
                   train_dir, resume=resume)
    timings["train_s"] = time.perf_counter() - start
    log(result.summary())
    trained = cfg.transfer.condition_range if method_class(cfg.transfer.method).transfers else (t0, t0)
    bg.record = ModelRecord(tuple(trained), cfg.transfer.method, ", ".join(cfg.data.files), settings["data.train (sha256)"])
    if world.is_main:
        bg.save(model_path)
    stages.set("train", {"status": "done", "fingerprint": fingerprint, "settings": settings})
    return bg, fingerprint


def _quiet(*_args, **_kwargs) -> None:
    """The log of ranks > 0: rank 0 speaks for the run."""


def _sample_seed(seed: int, temperature: float) -> int:
    """A seed per (sample.seed, T), so each file is reproducible whichever others are (re)made."""
    return int(hashlib.sha256(f"{seed}/{temperature:g}".encode()).hexdigest()[:15], 16)


def _sample_stage(cfg: WorkflowConfig, system: MolecularSystem, bg: BoltzmannGenerator, train_fingerprint: str,
                  stages: _Stages, timings: dict) -> dict[float, tuple[Samples, str]]:
    """``OUT/samples_<T>K.h5`` per temperature: {T: (samples, fingerprint)}; stale files are remade or removed."""
    log, out = stages.log, stages.out
    records = dict(stages.get("samples") or {})
    wanted = {f"{t:g}" for t in cfg.sample.temperatures}
    for key in sorted(set(records) - wanted):
        path = out / records.pop(key)["file"]
        log(f"{key} K is no longer in sample.temperatures: removing {path}")
        stages.making()
        _remove(path)
        stages.set("samples", records)
    sets = {}
    for temperature in cfg.sample.temperatures:
        key = f"{temperature:g}"
        path = out / f"samples_{key}K.h5"
        settings = {"training": train_fingerprint, "sample.n": cfg.sample.n, "sample.batch_size": cfg.sample.batch_size,
                    "sample.seed": cfg.sample.seed, "sample.temperatures": temperature}
        fingerprint = _fingerprint(settings)
        record = records.get(key)
        if path.exists() and record is not None and record["fingerprint"] == fingerprint:
            sets[temperature] = (Samples.load(path, system=system), fingerprint)
            continue
        if path.exists():
            changes = [] if record is None else _changes(record["settings"], settings)
            reason = (f"{_changed_sections(changes)} changed ({'; '.join(changes)})" if changes
                      else "there is no record of what it was made from")
            log(f"{path}: {reason}: redoing the samples at {key} K")
        stages.making()
        torch.manual_seed(_sample_seed(cfg.sample.seed, temperature))
        start = time.perf_counter()
        s = bg.sample(cfg.sample.n, temperature, batch_size=cfg.sample.batch_size, progress=cfg.run.progress)
        timings[f"sample_{key}K_s"] = time.perf_counter() - start
        s.save(path, overwrite=True)  # replaces a stale file atomically
        records[key] = {"file": path.name, "fingerprint": fingerprint, "settings": settings}
        stages.set("samples", records)
        log(f"{path}: relative ESS {s.relative_ess():.2%}{pareto_k_note(s.log_weights)}")
        sets[temperature] = (s, fingerprint)
    return sets


def _evaluate_stage(cfg: WorkflowConfig, bg: BoltzmannGenerator, t0: float, train_fingerprint: str,
                    sets: dict, references: dict, stages: _Stages) -> dict:
    """``OUT/report`` against the MD references; returns the metrics (as in ``report/metrics.json``)."""
    from .analysis.evaluate import evaluate

    log, out = stages.log, stages.out
    report = out / "report"
    with_ref = {t: sets[t] for t in sets if t in references}
    if not with_ref:
        if report.exists() or stages.get("evaluate") is not None:
            stages.making()
            _remove(report)
            stages.set("evaluate", None)
        return {}
    settings = {"training": train_fingerprint}
    for t, (_, fingerprint) in with_ref.items():
        path = Path(cfg.evaluate.references[t])
        settings[f"sample.temperatures[{t:g}]"] = fingerprint
        settings[f"evaluate.references[{t:g}]"] = f"{path} (sha256 {stages.file_hash(path)[:16]})"
    fingerprint = _fingerprint(settings)
    record = stages.get("evaluate")
    metrics_path = report / "metrics.json"
    if record is not None and record["fingerprint"] == fingerprint and metrics_path.exists():
        log(f"{report} is up to date: skipping evaluation")
        return json.loads(metrics_path.read_text())
    if report.exists() and record is not None:
        changes = _changes(record["settings"], settings)
        log(f"{report}: {_changed_sections(changes)} changed ({'; '.join(changes)}): redoing the evaluation")
    stages.making()
    _remove(report)
    result = evaluate([s for s, _ in with_ref.values()], references, report, model=bg, training_temperature=t0)
    stages.set("evaluate", {"fingerprint": fingerprint, "settings": settings})
    log(f"report: {result.files.report_md}")
    return json.loads(metrics_path.read_text())


def _has_checkpoint(train_dir: Path) -> bool:
    """An unfinished training run is in ``train_dir`` (its last checkpoint, or the one before it)."""
    last = train_dir / "last.pt"
    return last.exists() or previous_checkpoint(last).exists()


def run_workflow(path: str | Path, out_dir: Optional[str | Path] = None, log=print,
                 device: Optional[str] = None) -> dict:
    """Run (or resume) the workflow of a YAML file (``out_dir``, ``device``: replace its own); returns the metrics."""
    cfg = load_yaml(WorkflowConfig, path)
    cfg = dataclasses.replace(cfg, out_dir=str(out_dir or cfg.out_dir), device=device or cfg.device)
    return run(cfg, log=log)


def run(cfg: WorkflowConfig, log=print) -> dict:
    """Run (or resume) a workflow given as a :class:`WorkflowConfig`; returns the metrics per temperature.

    Everything that can be checked is checked before the first stage starts
    (the configuration when it is built, then the system and the reference
    files); stages whose record matches the configuration are skipped, the
    others redone (see the module docstring).
    """
    world = World.from_env()
    if world.distributed:
        missing = [p for p in cfg.data.files if not Path(p).is_file()]
        if missing:
            raise ConfigError(f"data.train {missing[0]} does not exist: a distributed run needs its training data "
                              "made beforehand (run the workflow once without torchrun, or `trade-md simulate`)")
    torch.set_num_threads(cfg.threads)
    device = rank_device(resolve_device(cfg.device), world)  # "cuda" without one fails here, before any stage
    out = Path(cfg.out_dir)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    else:
        log = _quiet
    world.start(torch.empty(0, device=device))
    world.barrier()  # rank 0 has made the output folder
    stages = _Stages(cfg, out, log, writable=world.is_main)
    timings: dict = {}
    system = build_system(cfg.system)
    references = _load_references(cfg, system)  # before hours of MD and training
    data, data_hash = _reference_data(cfg, system, stages)
    platform = select_platform(cfg.platform, system.n_atoms)
    energy = OpenMMEnergy(system, platform=platform, n_workers=cfg.energy_workers,
                          properties=openmm_device_properties(platform, device))  # OpenMM on the model's GPU
    train_settings = _settings(cfg, "system", "data", "model", "transfer", "optim", "run")
    for key in _SIMULATION_ONLY:  # what the data file holds counts, by its hash, not how it was made
        train_settings.pop(key)
    train_settings["data.train (sha256)"] = data_hash
    world.barrier()  # every rank has read the stage records before rank 0 changes them
    bg, train_fingerprint = _train_stage(cfg, system, energy, data, train_settings, stages, timings, device, world)
    if not world.is_main:  # sampling and evaluation run on rank 0 (sharded sampling: `trade-md sample`)
        return {}
    sets = _sample_stage(cfg, system, bg, train_fingerprint, stages, timings)
    metrics = _evaluate_stage(cfg, bg, data.temperature, train_fingerprint, sets, references, stages)
    if not (out / "workflow.yaml").exists():  # every stage is up to date with cfg, so cfg describes them
        stages.making()
    if timings:
        previous = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
        atomic_write_text(out / "timings.json", json.dumps({**previous, **timings}, indent=2))
    return metrics
