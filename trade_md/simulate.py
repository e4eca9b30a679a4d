"""Reference molecular dynamics: resumable Langevin MD and parallel tempering.

Units: temperature K, time ps (timestep in fs, length of run in ns), friction
1/ps, positions nm, energies kJ/mol.

``simulate`` runs in chunks of ``checkpoint_frames`` frames.  Each finished
chunk is written to ``<out>.partial/`` followed by an atomic checkpoint
(OpenMM State XML + number of finished chunks).  Each chunk starts a fresh
Langevin integrator seeded from (seed, chunk index), so a run killed at any
moment and restarted with the same command continues where its last
checkpoint stopped and produces the same frames as an uninterrupted run on
the same platform.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import openmm
from tqdm.auto import tqdm

from ._io import atomic_path, atomic_write_text, check_writable_folder
from .data import ReferenceData
from .energy import OpenMMEnergy, select_platform
from .system import MolecularSystem
from .units import check_temperature

__all__ = ["simulate", "parallel_tempering", "SimulationSettings"]


@dataclass(frozen=True)
class SimulationSettings:
    """Settings of one Langevin MD run (stored in the output file's metadata)."""

    temperature: float
    nanoseconds: float
    report_interval_ps: float = 1.0
    timestep_fs: float = 2.0
    friction_per_ps: float = 1.0
    seed: int = 0
    equilibration_ps: float = 100.0
    checkpoint_frames: int = 1000
    system: str = ""

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        for name in ("nanoseconds", "report_interval_ps", "timestep_fs", "friction_per_ps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.equilibration_ps < 0:
            raise ValueError(f"equilibration_ps must be >= 0, got {self.equilibration_ps}")
        if self.checkpoint_frames < 1:
            raise ValueError(f"checkpoint_frames must be >= 1, got {self.checkpoint_frames}")
        if self.n_frames < 1:
            raise ValueError(
                f"{self.nanoseconds} ns at one frame per {self.report_interval_ps} ps gives no frame"
            )
        ratio = self.report_interval_ps * 1000.0 / self.timestep_fs
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError("report_interval_ps must be a whole number of timesteps")

    @property
    def n_frames(self) -> int:
        return int(round(self.nanoseconds * 1000.0 / self.report_interval_ps))

    @property
    def steps_per_frame(self) -> int:
        return int(round(self.report_interval_ps * 1000.0 / self.timestep_fs))


def _chunk_seed(seed: int, chunk: int) -> int:
    """A non-zero int32 integrator seed (0 would mean 'random' to OpenMM)."""
    return (int(seed) * 1_000_003 + chunk * 7919 + 17) % (2**31 - 2) + 1


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; refusing to overwrite it (use overwrite=True / --overwrite)")
    check_writable_folder(out.parent)  # before hours of MD, not at the end


class _Checkpoint:
    """The ``<out>.partial`` folder: settings, finished chunks and the MD state."""

    def __init__(self, folder: Path):
        self.folder = folder

    def chunk_path(self, k: int) -> Path:
        return self.folder / f"chunk_{k:06d}.npz"

    def start(self, settings: dict) -> Optional[dict]:
        """Return the saved checkpoint if settings match; create the folder otherwise."""
        settings_file = self.folder / "settings.json"
        if self.folder.exists() and settings_file.exists():
            saved = json.loads(settings_file.read_text())
            if saved != settings:
                diff = {k: (saved.get(k), settings.get(k)) for k in set(saved) | set(settings)
                        if saved.get(k) != settings.get(k)}
                raise ValueError(
                    f"{self.folder} holds an unfinished run with other settings {diff} "
                    "(saved, requested); use overwrite=True / --overwrite to discard it"
                )
            ckpt = self.folder / "checkpoint.json"
            if ckpt.exists():
                state = json.loads(ckpt.read_text())
                for stale in self.folder.glob("chunk_*.npz"):  # written after the last checkpoint
                    if int(stale.stem.split("_")[1]) >= state["n_chunks"]:
                        stale.unlink()
                return state
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(settings_file, json.dumps(settings, sort_keys=True))
        return None

    def save(self, n_chunks: int, state: openmm.State) -> None:
        atomic_write_text(self.folder / "checkpoint.json",
                          json.dumps({"n_chunks": n_chunks, "state": openmm.XmlSerializer.serialize(state)}))

    def write_chunk(self, k: int, xyz: np.ndarray, energies: np.ndarray, times: np.ndarray) -> None:
        with atomic_path(self.chunk_path(k)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, xyz=xyz, energies=energies, time=times)

    def read_chunks(self, n_chunks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xyz, energies, times = [], [], []
        for k in range(n_chunks):
            with np.load(self.chunk_path(k)) as z:
                xyz.append(z["xyz"])
                energies.append(z["energies"])
                times.append(z["time"])
        return np.concatenate(xyz), np.concatenate(energies), np.concatenate(times)


def _context(system: MolecularSystem, settings: SimulationSettings, chunk: int, platform: str,
             properties: dict) -> openmm.Context:
    integrator = openmm.LangevinMiddleIntegrator(
        settings.temperature, settings.friction_per_ps, settings.timestep_fs / 1000.0
    )
    integrator.setRandomNumberSeed(_chunk_seed(settings.seed, chunk))
    integrator.setConstraintTolerance(1e-8)
    return openmm.Context(system.openmm_system, integrator,
                          openmm.Platform.getPlatformByName(platform), properties)


def simulate(
    system: MolecularSystem,
    temperature: float,
    nanoseconds: float,
    report_interval_ps: float = 1.0,
    timestep_fs: float = 2.0,
    friction_per_ps: float = 1.0,
    seed: int = 0,
    platform: Optional[str] = None,
    out: Optional[str | Path] = None,
    equilibration_ps: float = 100.0,
    checkpoint_frames: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> ReferenceData:
    """Langevin MD of ``system`` at ``temperature``; resumable.

    Energy minimization, ``equilibration_ps`` of equilibration, then
    ``nanoseconds`` of production with one frame (float32 positions, nm, and
    the potential energy of those stored positions, kJ/mol) every
    ``report_interval_ps``.

    Parameters
    ----------
    system : MolecularSystem
    temperature : K
    nanoseconds : production length, ns
    report_interval_ps, timestep_fs, friction_per_ps : integrator settings
    seed : random seed (velocities and Langevin noise)
    platform : OpenMM platform name or None (automatic)
    out : HDF5 output path (mdtraj-readable); ``<out>.partial/`` holds
        checkpoints while running.  None: run in a temporary folder.
    checkpoint_frames : frames per checkpoint
    overwrite : replace an existing ``out`` (and discard a stale partial run)
    progress : show a tqdm progress bar with ns/day

    Returns
    -------
    ReferenceData with ``n_frames = nanoseconds * 1000 / report_interval_ps`` frames.
    """
    settings = SimulationSettings(
        temperature=float(temperature), nanoseconds=float(nanoseconds),
        report_interval_ps=float(report_interval_ps), timestep_fs=float(timestep_fs),
        friction_per_ps=float(friction_per_ps), seed=int(seed), equilibration_ps=float(equilibration_ps),
        checkpoint_frames=int(checkpoint_frames), system=system.name,
    )
    with contextlib.ExitStack() as stack:
        if out is None:
            out_path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "run.h5"
        else:
            out_path = Path(out)
            _check_output(out_path, overwrite)
        partial = out_path.with_name(out_path.name + ".partial")
        if overwrite and partial.exists():
            shutil.rmtree(partial)
        data = _run(system, settings, platform, out_path, _Checkpoint(partial), progress)
        if out is not None:
            data.save(out_path, overwrite=overwrite)
            shutil.rmtree(partial)
        return data


def _run(system: MolecularSystem, settings: SimulationSettings, platform: Optional[str], out_path: Path,
         ckpt: _Checkpoint, progress: bool) -> ReferenceData:
    platform = select_platform(platform, system.n_atoms)
    properties = {"Threads": "1"} if platform == "CPU" else {}
    state = ckpt.start(asdict(settings))
    if state is None:
        ctx = _context(system, settings, chunk=-1, platform=platform, properties=properties)
        ctx.setPositions(system.reference_xyz)
        ctx.applyConstraints(1e-8)
        openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 0)
        ctx.setVelocitiesToTemperature(settings.temperature, _chunk_seed(settings.seed, -2))
        ctx.getIntegrator().step(int(round(settings.equilibration_ps * 1000.0 / settings.timestep_fs)))
        md_state = ctx.getState(getPositions=True, getVelocities=True)
        ckpt.save(0, md_state)
        done_chunks = 0
        del ctx
    else:
        done_chunks = state["n_chunks"]
        md_state = openmm.XmlSerializer.deserialize(state["state"])
    energy = OpenMMEnergy(system, platform=platform)
    n_total, per_chunk = settings.n_frames, settings.checkpoint_frames
    n_chunks_total = -(-n_total // per_chunk)
    bar = tqdm(total=n_total, initial=min(done_chunks * per_chunk, n_total), unit="frame",
               desc=f"MD {settings.temperature:g} K", disable=not progress, file=sys.stderr)
    dt_ps = settings.report_interval_ps
    for k in range(done_chunks, n_chunks_total):
        ctx = _context(system, settings, chunk=k, platform=platform, properties=properties)
        ctx.setState(md_state)
        integrator = ctx.getIntegrator()
        n = min(per_chunk, n_total - k * per_chunk)
        xyz = np.empty((n, system.n_atoms, 3), dtype=np.float32)
        t0 = time.perf_counter()
        for i in range(n):
            integrator.step(settings.steps_per_frame)
            xyz[i] = ctx.getState(getPositions=True).getPositions(asNumpy=True)._value
            if i % 50 == 49 or i == n - 1:
                bar.update(50 if i % 50 == 49 else (i % 50) + 1)
                wall = time.perf_counter() - t0
                bar.set_postfix(ns_per_day=f"{(i + 1) * dt_ps * 1e-3 / wall * 86400:.0f}")
        md_state = ctx.getState(getPositions=True, getVelocities=True)
        del ctx
        times = (np.arange(k * per_chunk, k * per_chunk + n) + 1) * dt_ps
        ckpt.write_chunk(k, xyz, energy.energy(xyz.astype(np.float64)), times)
        ckpt.save(k + 1, md_state)
    bar.close()
    xyz, energies, times = ckpt.read_chunks(n_chunks_total)
    meta = {"settings": asdict(settings), "platform": platform, "integrator": "LangevinMiddleIntegrator",
            "openmm_version": openmm.__version__}
    return ReferenceData(xyz, energies, settings.temperature, times, system.topology, meta)


# ---------------------------------------------------------------- parallel tempering
def parallel_tempering(
    system: MolecularSystem,
    temperatures: Sequence[float],
    nanoseconds: float,
    report_interval_ps: float = 1.0,
    timestep_fs: float = 2.0,
    friction_per_ps: float = 1.0,
    seed: int = 0,
    platform: Optional[str] = None,
    out: Optional[str | Path] = None,
    equilibration_ps: float = 100.0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[float, ReferenceData]:
    """Parallel tempering with openmmtools' ``ParallelTemperingSampler``; resumable.

    One replica per temperature; each iteration propagates every replica for
    ``report_interval_ps`` of Langevin dynamics and then attempts replica
    swaps.  Frames are exported sorted by thermodynamic state (temperature).

    Parameters
    ----------
    temperatures : K, at least 2.
    nanoseconds : production length per replica, ns (after ``equilibration_ps``).
    out : NetCDF storage path of openmmtools (``.nc``); rerunning with the same
        path resumes an unfinished run.  None: a temporary file.

    Returns
    -------
    dict temperature (K) -> ReferenceData of the frames at that temperature;
    ``metadata["swap_acceptance"]`` holds neighbour swap acceptance rates.
    """
    temps = sorted(float(t) for t in temperatures)
    if len(temps) < 2:
        raise ValueError("parallel tempering needs at least two temperatures")
    check_temperature(np.asarray(temps))
    settings = SimulationSettings(
        temperature=temps[0], nanoseconds=float(nanoseconds), report_interval_ps=float(report_interval_ps),
        timestep_fs=float(timestep_fs), friction_per_ps=float(friction_per_ps), seed=int(seed),
        equilibration_ps=float(equilibration_ps), system=system.name,
    )
    with contextlib.ExitStack() as stack:
        if out is None:
            storage = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "pt.nc"
        else:
            storage = Path(out)
            if storage.suffix != ".nc":
                raise ValueError(f"parallel tempering storage must be a .nc file, got {storage}")
            done_marker = storage.with_name(storage.name + ".done")
            if done_marker.exists() and not overwrite:
                raise FileExistsError(f"{storage} holds a finished run; use overwrite=True / --overwrite")
            if overwrite:
                for p in (storage, done_marker, storage.with_name(storage.stem + "_checkpoint.nc")):
                    if p.exists():
                        p.unlink()
        result = _run_pt(system, temps, settings, platform, storage, progress)
        if out is not None:
            done_marker.write_text("finished\n")
        return result


def _run_pt(system, temps, settings, platform, storage: Path, progress: bool) -> dict[float, ReferenceData]:
    import openmm.unit as u

    with contextlib.redirect_stdout(io.StringIO()):  # pymbar's import banner
        from openmmtools import cache, mcmc, multistate, states
    import logging

    logging.getLogger("openmmtools").setLevel(logging.WARNING)
    platform = select_platform(platform, system.n_atoms)
    plat = openmm.Platform.getPlatformByName(platform)
    n_equil = int(round(settings.equilibration_ps / settings.report_interval_ps))
    n_iterations = n_equil + settings.n_frames
    checkpoint = storage.with_name(storage.stem + "_checkpoint.nc")
    if storage.exists():
        reporter = multistate.MultiStateReporter(str(storage), open_mode="a", checkpoint_interval=1)
        sampler = multistate.ParallelTemperingSampler.from_storage(reporter)
        stored_t = sorted(s.temperature.value_in_unit(u.kelvin) for s in reporter.read_thermodynamic_states()[0])
        if not np.allclose(stored_t, temps):
            raise ValueError(f"{storage} holds a run at {stored_t} K, not {temps} K; use --overwrite")
    else:
        np.random.seed(settings.seed)  # openmmtools draws swaps and velocities from numpy's global RNG
        move = mcmc.LangevinDynamicsMove(
            timestep=settings.timestep_fs * u.femtosecond,
            collision_rate=settings.friction_per_ps / u.picosecond,
            # velocities are redrawn at the state's temperature before every move: a replica that
            # just swapped in from a hotter state keeps hot velocities otherwise, and with friction
            # 1/ps the lowest temperature then samples measurably hot configurations (+2.3 kJ/mol
            # mean potential energy at 300 K against plain MD, measured here)
            n_steps=settings.steps_per_frame, reassign_velocities=True,
        )
        sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=n_iterations)
        reporter = multistate.MultiStateReporter(str(storage), checkpoint_interval=1,
                                                 checkpoint_storage=checkpoint.name)
        thermo = states.ThermodynamicState(system.openmm_system, temperature=temps[0] * u.kelvin)
        sampler_state = states.SamplerState(system.reference_xyz * u.nanometer)
        sampler.create(thermo, sampler_state, reporter, temperatures=[t * u.kelvin for t in temps],
                       n_temperatures=len(temps))  # openmmtools 0.27 needs both
    sampler.energy_context_cache = cache.ContextCache(platform=plat)
    sampler.sampler_context_cache = cache.ContextCache(platform=plat)
    if sampler.iteration == 0:
        sampler.minimize()
    bar = tqdm(total=n_iterations, initial=sampler.iteration, unit="iter", desc="parallel tempering",
               disable=not progress, file=sys.stderr)
    t0, it0 = time.perf_counter(), sampler.iteration
    while sampler.iteration < n_iterations:
        step = min(50, n_iterations - sampler.iteration)
        sampler.extend(step)
        bar.update(step)
        wall = time.perf_counter() - t0
        bar.set_postfix(ns_per_day=f"{(sampler.iteration - it0) * settings.report_interval_ps * 1e-3 / wall * 86400:.0f}")
    bar.close()
    result = _export_pt(system, reporter, temps, settings, n_equil, platform)
    reporter.close()
    return result


def _export_pt(system, reporter, temps, settings, n_equil, platform) -> dict[float, ReferenceData]:
    replica_states = reporter.read_replica_thermodynamic_states()  # (n_iter + 1, n_replicas)
    n_iter = len(replica_states) - 1
    frames = {k: [] for k in range(len(temps))}
    for it in range(n_equil + 1, n_iter + 1):
        sampler_states = reporter.read_sampler_states(it)
        for replica, state_index in enumerate(replica_states[it]):
            frames[int(state_index)].append(np.asarray(sampler_states[replica].positions._value, dtype=np.float32))
    acceptance = _neighbour_acceptance(replica_states)
    energy = OpenMMEnergy(system, platform=platform)
    out = {}
    thermo_states, _ = reporter.read_thermodynamic_states()
    for k, ts in enumerate(thermo_states):
        t = float(ts.temperature._value)
        xyz = np.asarray(frames[k], dtype=np.float32)
        times = (np.arange(len(xyz)) + 1) * settings.report_interval_ps
        meta = {"settings": dict(asdict(settings), temperature=t), "method": "parallel_tempering",
                "temperatures": temps, "swap_acceptance": acceptance, "platform": platform,
                "openmm_version": openmm.__version__}
        out[t] = ReferenceData(xyz, energy.energy(xyz.astype(np.float64)), t, times, system.topology, meta)
    return out


def _neighbour_acceptance(replica_states: np.ndarray) -> list[float]:
    """Fraction of iterations in which neighbouring states exchanged replicas."""
    n_states = replica_states.shape[1]
    rates = []
    for s in range(n_states - 1):
        swapped = 0
        for it in range(1, len(replica_states)):
            prev, cur = replica_states[it - 1], replica_states[it]
            r = int(np.nonzero(prev == s)[0][0])
            swapped += int(cur[r] == s + 1)
        rates.append(swapped / max(len(replica_states) - 1, 1))
    return rates
