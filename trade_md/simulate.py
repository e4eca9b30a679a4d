"""Reference molecular dynamics: resumable Langevin MD (parallel tempering: ``tempering.py``).

Units: temperature K, time ps (timestep in fs, length of run in ns), friction
1/ps, positions nm, energies kJ/mol.

``simulate`` runs in chunks of ``checkpoint_frames`` frames.  Each finished
chunk is written to ``<out>.partial/`` followed by an atomic checkpoint
(OpenMM State XML + number of finished chunks).  Each chunk starts a fresh
Langevin integrator seeded from (seed, chunk index), so a run killed at any
moment and restarted with the same command continues where its last
checkpoint stopped and produces the same frames as an uninterrupted run on
the same platform.  The checkpoint before the last one is kept too: a damaged
checkpoint file or a damaged last chunk is recomputed from it (with a
warning naming the file); damage that cannot be recomputed is an error naming
the file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import openmm
from tqdm.auto import tqdm

from . import validators
from ._io import atomic_path, atomic_write_text, check_writable_folder, keep_previous
from .data import ReferenceData
from .energy import OpenMMEnergy, select_platform
from .system import MolecularSystem

__all__ = ["simulate", "SimulationSettings"]


def _setting(text: str, check: Optional[Callable[[str, Any], Any]] = None, **default: Any) -> Any:
    """A settings field with its help ``text`` (CLI ``--help``) and validator in the metadata."""
    return field(metadata={"help": text, "check": check}, **default)


def _kelvin(name: str, value: Any) -> float:
    return float(validators.temperature(name, value))


@dataclass(frozen=True)
class SimulationSettings:
    """Settings of one Langevin MD or parallel-tempering run (stored in the output file's metadata).

    The one place that lists them: :func:`simulate` and
    :func:`~trade_md.tempering.parallel_tempering` take them as a ``settings``
    object or as keyword options, and ``trade-md simulate`` makes one
    command-line option per field (name, type, default and help text from
    here).  Each field is checked by the validator in its metadata.
    """

    temperature: float = _setting("temperature in K", _kelvin)
    nanoseconds: float = _setting("production length (per temperature), ns", validators.positive_number)
    report_interval_ps: float = _setting("time between saved frames (and replica-exchange attempts), ps",
                                         validators.positive_number, default=1.0)
    timestep_fs: float = _setting("integration time step, fs", validators.positive_number, default=2.0)
    friction_per_ps: float = _setting("Langevin friction coefficient, 1/ps", validators.positive_number,
                                      default=1.0)
    seed: int = _setting("random seed of the initial velocities, the Langevin noise and the exchanges",
                         validators.non_negative_int, default=0)
    equilibration_ps: float = _setting("equilibration before production, ps", validators.non_negative_number,
                                       default=100.0)
    checkpoint_frames: int = _setting("frames per checkpoint; a killed run loses at most this many",
                                      validators.positive_int, default=1000)
    system: str = _setting("name of the molecule (set from the system by simulate)", default="")

    def __post_init__(self) -> None:
        for f in fields(self):
            check = f.metadata["check"]
            if check is not None:
                object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))
        if self.n_frames < 1:
            raise ValueError(
                f"{self.nanoseconds} ns at one frame per {self.report_interval_ps} ps gives no frame"
            )
        ratio = self.report_interval_ps * 1000.0 / self.timestep_fs
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError("report_interval_ps must be a whole number of timesteps")

    @classmethod
    def resolve(cls, settings: Optional["SimulationSettings"], system: MolecularSystem,
                **options: Any) -> "SimulationSettings":
        """``settings`` (None: the defaults) with the given ``options`` replaced, for ``system``.

        Options that are None are not given; an unknown option is a TypeError
        listing the valid ones.
        """
        names = [f.name for f in fields(cls) if f.name != "system"]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"unknown simulation setting(s) {unknown}; valid: {names}")
        given = {k: v for k, v in options.items() if v is not None}
        if settings is None:
            return cls(system=system.name, **given)
        return replace(settings, system=system.name, **given)

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
    """The ``<out>.partial`` folder: settings, finished chunks and the MD state.

    ``checkpoint.json`` holds the number of finished chunks and the OpenMM
    state (XML) after them; ``checkpoint.prev.json`` the checkpoint before it,
    one chunk earlier.  A damaged checkpoint or a damaged last chunk therefore
    costs one chunk, recomputed from the earlier state (the same frames, since
    chunk ``k`` always starts from the state after chunk ``k - 1`` with the
    integrator seed of ``k``), not the whole run.

    Parameters
    ----------
    folder : the ``<out>.partial`` folder.
    chunk_frames : number of frames of each chunk, in order.
    n_atoms : atoms per frame.
    """

    def __init__(self, folder: Path, chunk_frames: Sequence[int], n_atoms: int):
        self.folder = folder
        self.chunk_frames = [int(n) for n in chunk_frames]
        self.n_atoms = n_atoms
        self.current = folder / "checkpoint.json"
        self.previous = folder / "checkpoint.prev.json"

    def chunk_path(self, k: int) -> Path:
        return self.folder / f"chunk_{k:06d}.npz"

    def _resume_hint(self) -> str:
        return f"use overwrite=True / --overwrite to discard the unfinished run in {self.folder}"

    def start(self, settings: dict) -> Optional[dict]:
        """Return the newest usable checkpoint if settings match; create the folder otherwise.

        Returns None when the run starts from the beginning.  Chunk files
        after the returned checkpoint are deleted (they are recomputed).
        Raises ValueError naming the damaged files if nothing can be resumed.
        """
        settings_file = self.folder / "settings.json"
        if not (self.folder.exists() and settings_file.exists()):
            self.folder.mkdir(parents=True, exist_ok=True)
            for leftover in [self.current, self.previous, *self.folder.glob("chunk_*.npz")]:
                leftover.unlink(missing_ok=True)  # of a run whose settings are unknown
            atomic_write_text(settings_file, json.dumps(settings, sort_keys=True))
            return None
        try:
            saved = json.loads(settings_file.read_bytes().decode("utf-8"))
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
        except Exception as err:  # noqa: BLE001 - bad UTF-8, bad JSON
            raise ValueError(f"{settings_file} is damaged ({type(err).__name__}: {err}); "
                             f"{self._resume_hint()}") from None
        if saved != settings:
            diff = {k: (saved.get(k), settings.get(k)) for k in set(saved) | set(settings)
                    if saved.get(k) != settings.get(k)}
            raise ValueError(
                f"{self.folder} holds an unfinished run with other settings {diff} "
                "(saved, requested); use overwrite=True / --overwrite to discard it"
            )
        return self._choose()

    def _choose(self) -> Optional[dict]:
        problems, candidates = [], []
        for path in (self.current, self.previous):
            if path.exists():
                try:
                    candidates.append((path, self._read_state(path)))
                except ValueError as err:
                    problems.append(str(err))
        first_bad = max([c["n_chunks"] for _, c in candidates], default=0)
        for k in range(first_bad):
            try:
                self.read_chunk(k)
            except (ValueError, FileNotFoundError) as err:
                problems.append(str(err))
                first_bad = k
                break
        usable = [(path, c) for path, c in candidates if c["n_chunks"] <= first_bad]
        if not usable:
            if problems and (candidates or any(self.folder.glob("chunk_*.npz"))):
                lost = "; no checkpoint holds the MD state from before it, so it cannot be recomputed" \
                    if candidates else ""
                raise ValueError("cannot resume: " + "; ".join(problems) + lost + f"; {self._resume_hint()}")
            if problems:  # only the checkpoint after equilibration was written, and it is damaged
                warnings.warn("; ".join(problems) + "; no chunk was finished, so the run starts again",
                              stacklevel=3)
            for path in [self.current, self.previous, *self.folder.glob("chunk_*.npz")]:
                path.unlink(missing_ok=True)
            return None
        path, state = max(usable, key=lambda pc: pc[1]["n_chunks"])
        if path != self.current:
            warnings.warn("; ".join(problems or [f"{self.current} is missing"])
                          + f"; resuming from the previous checkpoint {path} ({state['n_chunks']} chunks "
                          "done) and recomputing the rest", stacklevel=3)
            os.replace(path, self.current)  # so that the next save keeps a good previous checkpoint
        for stale in self.folder.glob("chunk_*.npz"):  # written after the checkpoint
            if int(stale.stem.split("_")[1]) >= state["n_chunks"]:
                stale.unlink()
        return state

    def _read_state(self, path: Path) -> dict:
        """A checkpoint file's contents, checked; ValueError naming the file if damaged."""
        try:
            state = json.loads(path.read_bytes().decode("utf-8"))
            n, xml = state["n_chunks"], state["state"]
            if not isinstance(n, int) or not 0 <= n <= len(self.chunk_frames) or not isinstance(xml, str):
                raise ValueError(f"n_chunks {n!r} out of range or no state")
            if "sha256" in state and hashlib.sha256(xml.encode()).hexdigest() != state["sha256"]:
                raise ValueError("the OpenMM state does not match its checksum")
            if not isinstance(openmm.XmlSerializer.deserialize(xml), openmm.State):
                raise ValueError("the state is not an OpenMM State")
        except Exception as err:  # noqa: BLE001 - bad UTF-8, JSON, keys or XML (OpenMMException)
            raise ValueError(f"{path} is damaged ({type(err).__name__}: {_first_line(err)})") from None
        return {"n_chunks": n, "state": xml}

    def save(self, n_chunks: int, state: openmm.State) -> None:
        """Write ``checkpoint.json`` atomically; the one it replaces becomes ``checkpoint.prev.json``."""
        xml = openmm.XmlSerializer.serialize(state)
        text = json.dumps({"n_chunks": n_chunks, "state": xml, "sha256": hashlib.sha256(xml.encode()).hexdigest()})
        with atomic_path(self.current) as tmp:
            tmp.write_text(text, encoding="utf-8")
            keep_previous(self.current, self.previous)

    def write_chunk(self, k: int, xyz: np.ndarray, energies: np.ndarray, times: np.ndarray) -> None:
        with atomic_path(self.chunk_path(k)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, xyz=xyz, energies=energies, time=times)

    def read_chunk(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames of chunk ``k``: xyz (n, n_atoms, 3) nm, energies (n,) kJ/mol, time (n,) ps.

        Raises FileNotFoundError or ValueError naming the file if it is
        missing, truncated, damaged (zip CRC) or of the wrong shape.
        """
        path = self.chunk_path(k)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                xyz, energies, times = z["xyz"], z["energies"], z["time"]
        except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, KeyError, header errors
            raise ValueError(f"{path} is damaged ({type(err).__name__}: {_first_line(err)})") from None
        n, n_atoms = self.chunk_frames[k], self.n_atoms
        if xyz.shape != (n, n_atoms, 3) or energies.shape != (n,) or times.shape != (n,):
            raise ValueError(f"{path} is damaged: shapes {xyz.shape}, {energies.shape}, {times.shape}, "
                             f"expected ({n}, {n_atoms}, 3), ({n},), ({n},)")
        return xyz, energies, times

    def read_chunks(self, n_chunks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [self.read_chunk(k) for k in range(n_chunks)]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else ""


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
    temperature: Optional[float] = None,
    nanoseconds: Optional[float] = None,
    *,
    settings: Optional[SimulationSettings] = None,
    platform: Optional[str] = None,
    out: Optional[str | Path] = None,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
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
    settings : SimulationSettings or None
        All the run settings; ``temperature``, ``nanoseconds`` and keyword
        ``options`` (any other field, e.g. ``seed=3, timestep_fs=1.0``)
        replace single fields of it (of the defaults if None).
    platform : OpenMM platform name or None (automatic)
    out : HDF5 output path (mdtraj-readable); ``<out>.partial/`` holds
        checkpoints while running.  None: run in a temporary folder.
    overwrite : replace an existing ``out`` (and discard a stale partial run)
    progress : show a tqdm progress bar with ns/day

    Returns
    -------
    ReferenceData with ``n_frames = nanoseconds * 1000 / report_interval_ps`` frames.

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is False.
    ValueError
        If ``<out>.partial/`` holds a run with other settings, or damaged
        files that cannot be recomputed (the message names them).
    """
    settings = SimulationSettings.resolve(settings, system, temperature=temperature, nanoseconds=nanoseconds,
                                          **options)
    with contextlib.ExitStack() as stack:
        if out is None:
            out_path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "run.h5"
        else:
            out_path = Path(out)
            _check_output(out_path, overwrite)
        partial = out_path.with_name(out_path.name + ".partial")
        if overwrite and partial.exists():
            shutil.rmtree(partial)
        frames = [min(settings.checkpoint_frames, settings.n_frames - start)
                  for start in range(0, settings.n_frames, settings.checkpoint_frames)]
        data = _run(system, settings, platform, out_path, _Checkpoint(partial, frames, system.n_atoms), progress)
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
