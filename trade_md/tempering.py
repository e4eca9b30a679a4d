"""Parallel tempering (replica exchange over temperatures) on OpenMM; resumable; distributed under MPI.

Units: temperatures K, times ps (timestep fs, run length ns), friction 1/ps,
positions nm, energies kJ/mol.

One OpenMM ``Context`` with a ``LangevinMiddleIntegrator`` per temperature;
the integrators never change temperature.  Every ``report_interval_ps`` each
state is propagated, then neighbouring states (k, k+1) try to exchange their
configurations, even pairs and odd pairs in alternate iterations, with the
Metropolis probability min(1, exp[(beta_k - beta_k+1)(U_k - U_k+1)]).  An
accepted exchange swaps positions and velocities, the velocities rescaled by
sqrt(T_new / T_old) so they stay Maxwell-Boltzmann at their new temperature.

The run is chunked like :func:`trade_md.simulate.simulate`: after each chunk
of ``checkpoint_frames`` iterations the frames and an atomic checkpoint (the
states of all contexts, the replica permutation) are written to the
checkpoint folder; every chunk reseeds the integrators and the exchange RNG
from (seed, chunk), so a killed run restarted with the same command gives the
same frames as an uninterrupted one on the same platform.

Under MPI (``mpiexec -n N trade-md simulate --temperatures ...``, with
mpi4py: ``pip install trade_md[mpi]``) the states are distributed over the N
ranks in contiguous blocks of the sorted temperatures
(:func:`temperature_blocks`; at most one rank per temperature).  Each rank
holds the contexts of its block and steps them; the potential energies are
all-gathered after every step, and every rank then draws the same exchange
decisions from the same RNG as the serial driver, so the replica permutation
and the statistics are replicated, not communicated.  An accepted exchange
across a block boundary sends positions and velocities between the two
ranks (``sendrecv``).  After each chunk the frames, their energies (each rank
evaluates its own) and the OpenMM states are gathered on rank 0, which alone
reads and writes the checkpoint folder and returns the results (the other
ranks return an empty dict); it also makes the initial states and, on a
resume, reads the checkpoint and sends each rank its states.  The arithmetic
is the serial driver's: on the CPU platform the frames are the serial run's
bit for bit, whatever the number of ranks (``tests/test_tempering_mpi.py``),
and a checkpoint written by N ranks resumes on any number of them.  The
Reference platform draws the Langevin noise of all contexts of a process
from one process-wide random stream (seeded by the last context made), so
there the noise, and the frames, depend on which contexts share a process:
reproducible for a given number of ranks, valid, but not the serial
frames.  An error or Ctrl-C on one rank during the run ends all of them
(``MPI_Abort``: the others would wait for it forever); the checkpoints are
atomic, so the same command resumes.  Without an MPI launcher, or with one
rank, the driver runs serially and never imports mpi4py.  mpi4py is used
directly, not through openmmtools' ``mpiplus``: the driver needs ranks that
keep their contexts and exchange with their neighbours, not the task
farming that ``mpiplus.distribute`` offers, and ``mpiplus.get_mpicomm``
replaces ``sys.excepthook`` and the SIGINT/SIGTERM handlers of the whole
process.

Why not openmmtools' ``ParallelTemperingSampler``: driven with one cached
Context per temperature and velocity reassignment before every move, its
300 K and 600 K mean potential energies of alanine dipeptide were 0.6 and
1.5 kJ/mol above plain Langevin MD (many standard errors), while this
driver agrees with MD (``tests/test_tempering.py``, slow test).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import openmm
from tqdm.auto import tqdm

from . import validators
from ._io import atomic_path, atomic_write_text, keep_previous
from .data import ReferenceData
from .energy import OpenMMEnergy, select_platform
from .simulate import SimulationSettings, _chunk_seed as chunk_seed
from .system import MolecularSystem
from .units import beta

__all__ = ["parallel_tempering", "temperature_blocks"]

#: Variables by which MPI launchers tell a process how many processes they
#: started (MPICH/Hydra, Intel MPI and Slurm's PMI-2: PMI_SIZE; Open MPI;
#: MVAPICH2), and those that only say that one did (PMIx).
_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_LAUNCHER_RANK = ("PMI_RANK", "PMIX_RANK")


def temperature_blocks(n_temperatures: int, n_ranks: int) -> list[range]:
    """The states each MPI rank holds: contiguous blocks of the sorted temperatures, in rank order.

    Block sizes differ by at most one, the first ``n_temperatures % n_ranks``
    ranks holding the larger ones: 5 temperatures on 2 ranks are
    ``[range(0, 3), range(3, 5)]``.  Raises ValueError if there are more
    ranks than temperatures.
    """
    n_temperatures = validators.positive_int("n_temperatures", n_temperatures)
    n_ranks = validators.positive_int("n_ranks", n_ranks)
    if n_ranks > n_temperatures:
        raise ValueError(f"{n_ranks} MPI ranks for {n_temperatures} temperatures: parallel tempering needs at "
                         f"least one temperature per rank; start at most {n_temperatures} "
                         f"(mpiexec -n {n_temperatures}) or give more temperatures")
    base, extra = divmod(n_temperatures, n_ranks)
    blocks, start = [], 0
    for r in range(n_ranks):
        blocks.append(range(start, start + base + (r < extra)))
        start = blocks[-1].stop
    return blocks


def _mpi_world() -> Any:
    """``MPI.COMM_WORLD`` when this process is one of several MPI ranks, else None (a serial run).

    mpi4py is imported only when an MPI launcher started more than one
    process; ValueError if it is missing, or if its MPI library is not the
    launcher's (each process would then see itself alone and run every
    replica, all writing the same files).
    """
    sizes = [os.environ[v] for v in _LAUNCHER_SIZE if v in os.environ]
    if not sizes and not any(v in os.environ for v in _LAUNCHER_RANK):
        return None
    try:
        launched = int(sizes[0]) if sizes else None
    except ValueError:
        launched = None
    if launched == 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ValueError(f"started by an MPI launcher ({launched or 'several'} processes) but mpi4py is not "
                         "installed: pip install 'trade_md[mpi]', or run without mpiexec") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        if launched is not None:
            library = " ".join(MPI.Get_library_version().split()[:3])
            raise ValueError(f"an MPI launcher started {launched} processes, but mpi4py's MPI library "
                             f"({library}) sees this one alone: use the mpiexec of that library (with "
                             "'pip install trade_md[mpi]', the one installed next to python)")
        return None
    return comm


class _OneRank:
    """The communicator of a serial run: one rank; collectives hand back what they are given."""

    rank, size = 0, 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def scatter(self, objs: Sequence, root: int = 0) -> Any:
        return objs[0]

    def gather(self, obj: Any, root: int = 0) -> list:
        return [obj]

    def allgather(self, obj: Any) -> list:
        return [obj]


def parallel_tempering(
    system: MolecularSystem,
    temperatures: Sequence[float],
    nanoseconds: Optional[float] = None,
    *,
    settings: Optional[SimulationSettings] = None,
    platform: Optional[str] = None,
    out: Optional[str | Path] = None,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> dict[float, ReferenceData]:
    """Parallel tempering of ``system`` over ``temperatures``; resumable.

    Parameters
    ----------
    temperatures : K, at least 2 distinct values (sorted internally).
    nanoseconds : production length per temperature, ns (one frame per
        ``report_interval_ps``, which is also the time between exchange attempts).
    settings, options : the run settings as in :func:`~trade_md.simulate.simulate`
        (``equilibration_ps`` is per state, with exchanges, before production;
        ``checkpoint_frames`` counts iterations); their ``temperature`` is
        the lowest of ``temperatures``.
    platform, progress : as in :func:`~trade_md.simulate.simulate`.
        Under MPI every rank takes the same arguments; only rank 0 shows progress.
    out : checkpoint folder; rerunning with the same folder and settings
        resumes an unfinished run, other settings are refused.  None: no
        checkpoints (the run lives in memory).
    overwrite : discard an unfinished run in ``out``.

    Returns
    -------
    dict temperature (K) -> ReferenceData with the frames at that temperature
    (float32 nm) and their potential energies (kJ/mol);
    ``metadata["swap_acceptance"]`` holds the neighbour exchange acceptance
    rates (production only) and ``metadata["round_trips"]`` the number of
    replica round trips between the lowest and the highest temperature.
    Under MPI with several ranks (see the module docstring) rank 0 returns
    it and reads and writes ``out``; the other ranks return an empty dict.
    """
    validators.temperature("temperatures", temperatures)
    temps = sorted(float(t) for t in np.atleast_1d(np.asarray(temperatures, dtype=float)))
    if len(temps) < 2 or len(set(temps)) != len(temps):
        raise ValueError(f"parallel tempering needs at least two distinct temperatures, got {temps}")
    settings = SimulationSettings.resolve(settings, system, temperature=temps[0], nanoseconds=nanoseconds,
                                          **options)
    folder = Path(out) if out is not None else None
    return _Tempering(system, temps, settings, platform, folder, progress, overwrite=overwrite,
                      comm=_mpi_world()).run()


class _Tempering:
    """The driver; ``comm``: an mpi4py communicator of several ranks, or None (serial)."""

    def __init__(self, system, temps, settings, platform, folder, progress, overwrite=False, comm=None):
        self.system, self.temps, self.settings, self.folder, self.progress = system, temps, settings, folder, progress
        self.overwrite = overwrite
        self.comm = comm if comm is not None else _OneRank()
        self.is_root = self.comm.rank == 0
        self.blocks = temperature_blocks(len(temps), self.comm.size)
        self.mine = self.blocks[self.comm.rank]  # the states this rank steps
        self.owner = np.repeat(np.arange(self.comm.size), [len(b) for b in self.blocks])
        self.platform = select_platform(platform, system.n_atoms)
        self.properties = {"Threads": "1"} if self.platform == "CPU" else {}
        self.betas = beta(np.asarray(temps))
        self.n_equil = int(round(settings.equilibration_ps / settings.report_interval_ps))
        self.n_iter = self.n_equil + settings.n_frames
        self.record = {"settings": asdict(settings), "temperatures": temps}

    # ------------------------------------------------------------ checkpoint
    def _chunk_path(self, k: int) -> Path:
        return self.folder / f"chunk_{k:06d}.npz"

    def _load(self) -> Optional[dict]:
        """The saved checkpoint if the folder holds a run with these settings."""
        if self.folder is None:
            return None
        settings_file = self.folder / "settings.json"
        if not settings_file.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(settings_file, json.dumps(self.record, sort_keys=True))
            return None
        try:
            saved = json.loads(settings_file.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{settings_file} is damaged ({err}); rerun with --overwrite") from err
        if saved != json.loads(json.dumps(self.record, sort_keys=True)):
            raise ValueError(f"{self.folder} holds an unfinished parallel-tempering run with other settings "
                             f"({saved}); use overwrite=True / --overwrite to discard it")
        ckpt = self.folder / "checkpoint.json"
        problems = []
        for path in (ckpt, ckpt.with_name("checkpoint.prev.json")):
            if not path.exists():
                continue
            try:
                state = json.loads(path.read_text())
                state["states"] = [openmm.XmlSerializer.deserialize(s) for s in state["states"]]
            except Exception as err:  # noqa: BLE001 - json or OpenMM's deserializer
                problems.append(f"{path} is damaged ({err})")
                continue
            if problems:
                warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {path} "
                              f"({state['n_chunks']} chunks)")
            return state
        if problems:
            raise ValueError("; ".join(problems) + "; rerun with --overwrite")
        return None

    def _save(self, n_chunks: int, states: list, replica_at: np.ndarray, stats: dict) -> None:
        if self.folder is None:
            return
        ckpt = self.folder / "checkpoint.json"
        with atomic_path(ckpt) as tmp:
            tmp.write_text(json.dumps({
                "n_chunks": n_chunks, "replica_at": replica_at.tolist(), "stats": stats,
                "states": [openmm.XmlSerializer.serialize(s) for s in states]}))
            keep_previous(ckpt, ckpt.with_name("checkpoint.prev.json"))

    def _start(self) -> tuple[Optional[Exception], tuple]:
        """(error, start): what every rank raises if rank 0 could not start, else None and
        (finished chunks, this rank's states, replica permutation, statistics).

        Rank 0 discards the run in the folder if asked to, reads its
        checkpoint or makes the initial states, and sends every rank its
        block of states.
        """
        failure, start = None, None
        if self.is_root:
            try:
                start = self._start_root()
            except Exception as err:  # noqa: BLE001 - raised by the caller, on every rank
                failure = err
        if self.comm.size > 1:
            message = self.comm.bcast(None if failure is None else f"{type(failure).__name__}: {failure}")
            if message is not None and failure is None:
                failure = ValueError(f"rank 0 could not start parallel tempering: {message}")
        if failure is not None:
            return failure, ()
        done, replica_at, stats = self.comm.bcast(start[:3] if self.is_root else None)
        states = self.comm.scatter([start[3][b.start:b.stop] for b in self.blocks] if self.is_root else None)
        return None, (done, states, np.asarray(replica_at), stats)

    def _start_root(self) -> tuple[int, np.ndarray, dict, list]:
        if self.folder is not None:
            if self.overwrite and self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.parent.mkdir(parents=True, exist_ok=True)
        n_states = len(self.temps)
        saved = self._load()
        if saved is not None:
            return saved["n_chunks"], np.asarray(saved["replica_at"]), saved["stats"], saved["states"]
        states, replica_at = self._initial_states(), np.arange(n_states)
        stats = {"attempts": [0] * (n_states - 1), "accepts": [0] * (n_states - 1),
                 "direction": [0] * n_states, "round_trips": 0}
        self._save(0, states, replica_at, stats)
        return 0, replica_at, stats, states

    # --------------------------------------------------------------- dynamics
    def _contexts(self, chunk: int, states: Sequence[int]) -> list[openmm.Context]:
        """Contexts of the ``states`` (indices of temperatures), integrators seeded for ``chunk``."""
        plat = openmm.Platform.getPlatformByName(self.platform)
        contexts = []
        for k in states:
            t = self.temps[k]
            integ = openmm.LangevinMiddleIntegrator(t, self.settings.friction_per_ps,
                                                    self.settings.timestep_fs / 1000.0)
            integ.setRandomNumberSeed(chunk_seed(self.settings.seed * 101 + k, chunk))
            integ.setConstraintTolerance(1e-8)
            contexts.append(openmm.Context(self.system.openmm_system, integ, plat, self.properties))
        return contexts

    def _initial_states(self) -> list:
        """Minimized reference structure, velocities drawn at each state's temperature."""
        contexts = self._contexts(-1, range(len(self.temps)))
        states = []
        for k, ctx in enumerate(contexts):
            ctx.setPositions(self.system.reference_xyz)
            ctx.applyConstraints(1e-8)
            if k == 0:
                openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 0)
                minimized = ctx.getState(getPositions=True).getPositions(asNumpy=True)
            else:
                ctx.setPositions(minimized)
            ctx.setVelocitiesToTemperature(self.temps[k], chunk_seed(self.settings.seed * 101 + k, -2))
            states.append(ctx.getState(getPositions=True, getVelocities=True))
        return states

    def _exchange(self, contexts, energies: np.ndarray, replica_at: np.ndarray, rng, parity: int,
                  attempts: np.ndarray, accepts: np.ndarray) -> None:
        """Metropolis exchanges between states (k, k+1) with k % 2 == parity."""
        for k in range(parity, len(self.temps) - 1, 2):
            log_acc = (self.betas[k] - self.betas[k + 1]) * (energies[k] - energies[k + 1])
            attempts[k] += 1
            if log_acc >= 0.0 or rng.random() < np.exp(log_acc):
                accepts[k] += 1
                self._swap(contexts, k)
                energies[k], energies[k + 1] = energies[k + 1], energies[k]
                replica_at[k], replica_at[k + 1] = replica_at[k + 1], replica_at[k]

    def _swap(self, contexts: list, k: int) -> None:
        """Swap positions and velocities of states k and k + 1 (``contexts``: this rank's block).

        States on two ranks send each other theirs; a rank holding neither does nothing.
        """
        scale = np.sqrt(self.temps[k + 1] / self.temps[k])
        rank, first = self.comm.rank, self.mine.start
        low, high = int(self.owner[k]), int(self.owner[k + 1])
        if low == high == rank:
            a = contexts[k - first].getState(getPositions=True, getVelocities=True)
            b = contexts[k + 1 - first].getState(getPositions=True, getVelocities=True)
            contexts[k - first].setPositions(b.getPositions(asNumpy=True))
            contexts[k - first].setVelocities(b.getVelocities(asNumpy=True) / scale)
            contexts[k + 1 - first].setPositions(a.getPositions(asNumpy=True))
            contexts[k + 1 - first].setVelocities(a.getVelocities(asNumpy=True) * scale)
        elif rank in (low, high):
            ctx = contexts[(k if rank == low else k + 1) - first]
            other = high if rank == low else low
            mine = ctx.getState(getPositions=True, getVelocities=True)
            positions, velocities = self.comm.sendrecv(
                (mine.getPositions(asNumpy=True), mine.getVelocities(asNumpy=True)), dest=other, source=other)
            ctx.setPositions(positions)
            ctx.setVelocities(velocities / scale if rank == low else velocities * scale)

    def run(self) -> dict[float, ReferenceData]:
        with self._all_ranks_end_together():
            failure, start = self._start()
        if failure is not None:  # raised by every rank: no abort needed
            raise failure
        done, states, replica_at, stats = start
        with self._all_ranks_end_together():
            chunks, n_chunks = self._iterate(done, states, replica_at, stats)
        if not self.is_root:
            return {}
        return self._export(chunks, n_chunks, stats)

    @contextlib.contextmanager
    def _all_ranks_end_together(self) -> Iterator[None]:
        """Under MPI, an error or Ctrl-C on this rank ends every rank (``MPI_Abort``).

        The others would otherwise wait forever for this one in a collective
        call, where they do not even see their own Ctrl-C.  Checkpoints are
        atomic: the same command resumes.
        """
        try:
            yield
        except (Exception, KeyboardInterrupt) as err:
            if self.comm.size > 1:
                if isinstance(err, KeyboardInterrupt):
                    print(f"interrupted (MPI rank {self.comm.rank}): ending all ranks; rerun the same command "
                          "to resume", file=sys.stderr)
                else:
                    traceback.print_exc()
                sys.stderr.flush()
                self.comm.Abort(130 if isinstance(err, KeyboardInterrupt) else 1)
            raise

    def _iterate(self, done: int, states: list, replica_at: np.ndarray, stats: dict) -> tuple[Optional[dict], int]:
        """Run the chunks after the first ``done``; rank 0 writes them (None) or returns them (no folder)."""
        s, n_states, mine, n_atoms = self.settings, len(self.temps), self.mine, self.system.n_atoms
        per_chunk = s.checkpoint_frames
        n_chunks = -(-self.n_iter // per_chunk)
        energy = OpenMMEnergy(self.system, platform=self.platform)
        chunks = {} if self.folder is None else None
        ranks = f", {self.comm.size} ranks" if self.comm.size > 1 else ""
        bar = tqdm(total=self.n_iter, initial=min(done * per_chunk, self.n_iter), unit="iter",
                   desc=f"parallel tempering {n_states} states{ranks}", disable=not (self.progress and self.is_root),
                   file=sys.stderr)
        for c in range(done, n_chunks):
            contexts = self._contexts(c, mine)
            for ctx, st in zip(contexts, states):
                ctx.setState(st)
            rng = np.random.default_rng([s.seed, c])
            first, n = c * per_chunk, min(per_chunk, self.n_iter - c * per_chunk)
            xyz = np.empty((n, len(mine), n_atoms, 3), dtype=np.float32)
            replicas = np.empty((n, n_states), dtype=np.int32)
            t0 = time.perf_counter()
            for i in range(n):
                it = first + i
                local = np.empty(len(mine))
                for j, ctx in enumerate(contexts):
                    ctx.getIntegrator().step(s.steps_per_frame)
                    st = ctx.getState(getEnergy=True)
                    local[j] = st.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
                energies = np.concatenate(self.comm.allgather(local))
                production = it >= self.n_equil
                attempts = np.zeros(n_states - 1, dtype=int)
                accepts = np.zeros(n_states - 1, dtype=int)
                self._exchange(contexts, energies, replica_at, rng, it % 2, attempts, accepts)
                if production:
                    stats["attempts"] = (np.asarray(stats["attempts"]) + attempts).tolist()
                    stats["accepts"] = (np.asarray(stats["accepts"]) + accepts).tolist()
                    _count_round_trips(stats, replica_at)
                for j, ctx in enumerate(contexts):
                    xyz[i, j] = ctx.getState(getPositions=True).getPositions(asNumpy=True)._value
                replicas[i] = replica_at
                if i % 10 == 9 or i == n - 1:
                    bar.update(10 if i % 10 == 9 else (i % 10) + 1)
                    wall = time.perf_counter() - t0
                    bar.set_postfix(ns_per_day=f"{(i + 1) * n_states * s.report_interval_ps * 1e-3 / wall * 86400:.0f}")
            states = [ctx.getState(getPositions=True, getVelocities=True) for ctx in contexts]
            del contexts
            u = energy.energy(xyz.reshape(-1, n_atoms, 3).astype(np.float64)).reshape(n, len(mine))
            blocks = self.comm.gather((xyz, u, states))  # rank 0: every rank's, in rank (= temperature) order
            if not self.is_root:
                continue
            chunk = {"xyz": np.concatenate([b[0] for b in blocks], axis=1),
                     "energies": np.concatenate([b[1] for b in blocks], axis=1),
                     "replicas": replicas, "iteration": np.arange(first, first + n)}
            if chunks is not None:
                chunks[c] = chunk
            else:
                with atomic_path(self._chunk_path(c)) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, **chunk)
                self._save(c + 1, [st for b in blocks for st in b[2]], replica_at, stats)
        bar.close()
        return chunks, n_chunks

    def _export(self, chunks: Optional[dict], n_chunks: int, stats: dict) -> dict[float, ReferenceData]:
        parts = []
        for c in range(n_chunks):
            if chunks is not None:
                parts.append(chunks[c])
                continue
            try:
                with np.load(self._chunk_path(c)) as z:
                    parts.append({key: z[key] for key in z.files})
            except Exception as err:  # noqa: BLE001 - zip/npz errors of a damaged file
                raise ValueError(f"{self._chunk_path(c)} is damaged ({err}); rerun with --overwrite") from err
        keep = np.concatenate([p["iteration"] for p in parts]) >= self.n_equil
        xyz = np.concatenate([p["xyz"] for p in parts])[keep]
        energies = np.concatenate([p["energies"] for p in parts])[keep]
        replicas = np.concatenate([p["replicas"] for p in parts])[keep]
        attempts = np.maximum(np.asarray(stats["attempts"]), 1)
        acceptance = (np.asarray(stats["accepts"]) / attempts).tolist()
        times = (np.arange(len(xyz)) + 1) * self.settings.report_interval_ps
        out = {}
        for k, t in enumerate(self.temps):
            meta = {"settings": dict(asdict(self.settings), temperature=t), "method": "parallel_tempering",
                    "temperatures": self.temps, "swap_acceptance": acceptance,
                    "round_trips": int(stats["round_trips"]), "replica": replicas[:, k].tolist(),
                    "integrator": "LangevinMiddleIntegrator", "platform": self.platform,
                    "openmm_version": openmm.__version__}
            out[t] = ReferenceData(xyz[:, k], energies[:, k], t, times, self.system.topology, meta)
        return out


def _count_round_trips(stats: dict, replica_at: np.ndarray) -> None:
    """A round trip: a replica travels from the lowest to the highest state and back.

    ``stats["direction"][r]`` is +1 after replica r last visited the lowest
    state, -1 after it last visited the highest (0 before either).
    """
    direction = stats["direction"]
    low, high = int(replica_at[0]), int(replica_at[-1])
    if direction[low] == -1:
        stats["round_trips"] += 1
    direction[low] = 1
    if direction[high] == 1:
        direction[high] = -1
