"""``ReferenceData``: MD frames with energies at one temperature.

trade_md's own mdtraj HDF5 files carry energies and the temperature; any
other trajectory mdtraj reads (DCD, XTC, TRR, NetCDF, PDB, HDF5 from other
programs) is read with a topology and a temperature, its energies computed
with OpenMM for the molecular system.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import mdtraj
import numpy as np

from .energy import OpenMMEnergy
from .system import MolecularSystem
from . import validators
from .trajectory import (TrajectoryFile, check_same_molecule, is_trade_md_file, read_frames, read_kind,
                         read_topology, write_trajectory)
from .units import check_temperature

__all__ = ["ReferenceData"]


@dataclass
class ReferenceData:
    """Equilibrium frames of one molecule at one temperature.

    Attributes
    ----------
    xyz : (n_frames, n_atoms, 3) float32, nm
    energies : (n_frames,) float64, kJ/mol potential energies of ``xyz``
    temperature : float, K
    time : (n_frames,) float64, ps
    topology : mdtraj.Topology
    metadata : dict of run settings (command, seed, integrator ...)
    """

    xyz: np.ndarray
    energies: np.ndarray
    temperature: float
    time: np.ndarray
    topology: mdtraj.Topology
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float32)
        self.energies = np.asarray(self.energies, dtype=np.float64)
        self.time = np.asarray(self.time, dtype=np.float64)
        check_temperature(self.temperature)
        self.temperature = float(self.temperature)
        n = len(self.xyz)
        if self.xyz.ndim != 3 or self.xyz.shape[1:] != (self.topology.n_atoms, 3):
            raise ValueError(f"xyz must have shape (n_frames, {self.topology.n_atoms}, 3), got {self.xyz.shape}")
        if self.energies.shape != (n,) or self.time.shape != (n,):
            raise ValueError(
                f"energies and time must have shape ({n},), got {self.energies.shape} and {self.time.shape}"
            )

    def __len__(self) -> int:
        return len(self.xyz)

    def __repr__(self) -> str:
        return f"ReferenceData(n_frames={len(self)}, temperature={self.temperature} K, n_atoms={self.topology.n_atoms})"

    # ---------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write an mdtraj-readable HDF5 file atomically (refuses to overwrite by default)."""
        meta = dict(self.metadata, temperature=self.temperature, kind="reference")
        write_trajectory(path, TrajectoryFile(self.xyz, self.topology, self.time, self.energies, {}, meta),
                         overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, system: Optional[MolecularSystem] = None,
             top: Optional[str | os.PathLike | mdtraj.Topology] = None,
             temperature: Optional[float] = None) -> "ReferenceData":
        """Read MD frames: a trade_md HDF5 file, or any trajectory mdtraj reads.

        Parameters
        ----------
        path : a file written by :meth:`save` or ``trade-md simulate`` (energies
            and temperature inside), or a DCD, XTC, TRR, NetCDF, PDB or HDF5
            trajectory written by other programs (positions in nm once read).
        system : the molecule; the file's atoms (names, elements, residues)
            must match it.  It computes the energies (kJ/mol, OpenMM) of files
            that hold none, stands in for ``top`` when that is not given, and
            sets the labels of exchangeable hydrogens (see
            :meth:`MolecularSystem.match_hydrogen_labels`).
        top : topology for formats without one (DCD, XTC, TRR, NetCDF): a PDB
            file or an ``mdtraj.Topology``.
        temperature : K; required for files that do not record it, checked
            against the files that do.

        Raises
        ------
        FileNotFoundError
            If ``path`` (or ``top``) does not exist.
        ValueError
            One line naming ``path``: a damaged or foreign file, generated
            samples instead of MD, another molecule (the first differing
            atom), no temperature, a temperature other than the file's, no
            energies and no system to compute them.
        """
        if temperature is not None:
            check_temperature(temperature)
            temperature = float(temperature)
        if not is_trade_md_file(path):
            traj = read_frames(path, top if top is not None else (None if system is None else system.topology))
            if temperature is None:
                raise ValueError(f"{path} records no temperature: give temperature= in K (--temperature)")
            return cls.from_mdtraj(traj, temperature, system=system, source=str(path))
        f = read_kind(path, "reference", None if system is None else system.topology,
                      unmarked="reference")  # files written before kinds existed
        if "temperature" not in f.metadata:
            raise ValueError(f"{path} has no temperature in its metadata")
        if temperature is not None and abs(temperature - f.metadata["temperature"]) > 1e-6:
            raise ValueError(f"{path} holds MD at {f.metadata['temperature']:g} K, not at the {temperature:g} K given")
        if f.potential_energy is None:
            raise ValueError(f"{path} has no potential energies")
        if top is not None:
            check_same_molecule(read_topology(top), f.topology, what=str(path))
        meta = {k: v for k, v in f.metadata.items() if k not in ("temperature", "kind")}
        xyz = f.xyz if system is None else system.match_hydrogen_labels(f.xyz)
        return cls(xyz, f.potential_energy, f.metadata["temperature"], f.time, f.topology, meta)

    @classmethod
    def from_mdtraj(cls, traj: mdtraj.Trajectory, temperature: float, system: Optional[MolecularSystem] = None,
                    energies: Optional[np.ndarray] = None, source: str = "the trajectory") -> "ReferenceData":
        """Reference data from an ``mdtraj.Trajectory`` (positions nm, time ps) at ``temperature`` (K).

        ``energies`` ``(n_frames,)`` kJ/mol, or None to compute them with
        OpenMM for ``system``; the trajectory's atoms must match ``system``
        (names, elements, residues).  ``source`` names the data in messages
        and in :attr:`metadata`.  Every frame must have a finite energy (a
        clash means the atoms are not this molecule's, or not in its order).
        """
        check_temperature(temperature)
        if system is not None:
            check_same_molecule(system.topology, traj.topology, what=source)
        meta = {"source": source}
        if energies is None:
            if system is None:
                raise ValueError(f"{source} has no potential energies: give the system (--model) to compute them")
            energies = OpenMMEnergy(system).energy(np.asarray(traj.xyz, dtype=np.float64))
            meta["energies"] = f"computed with OpenMM for {system.name}"
        energies = np.asarray(energies, dtype=np.float64)
        bad = np.nonzero(~np.isfinite(energies))[0]
        if len(bad):
            raise ValueError(f"{source}: {len(bad)} of {len(energies)} frames have no finite energy (first: frame "
                             f"{bad[0]}); are the atoms this molecule's, in its order, in nm?")
        xyz = traj.xyz if system is None else system.match_hydrogen_labels(traj.xyz)
        return cls(xyz, energies, temperature, np.asarray(traj.time, dtype=np.float64), traj.topology, meta)

    def to_mdtraj(self) -> mdtraj.Trajectory:
        """An ``mdtraj.Trajectory`` of the frames (time in ps)."""
        return mdtraj.Trajectory(self.xyz, self.topology, time=self.time)

    @classmethod
    def concatenate(cls, parts: Sequence["ReferenceData"], sources: Optional[Sequence[str]] = None) -> "ReferenceData":
        """Frames of several runs of one molecule at one temperature, in order (e.g. independent MD seeds).

        Each part keeps its own ``time`` (ps); :meth:`split` assigns blocks of
        ``block_frames`` frames, so a block straddles two parts only when a
        part's length is not a multiple of it.  ``sources`` names the parts in
        messages and in :attr:`metadata` (``"sources"``).

        Raises
        ------
        ValueError
            No parts, another molecule (the first differing atom) or another
            temperature than the first part's.
        """
        parts = list(parts)
        names = list(sources) if sources is not None else [f"part {i}" for i in range(len(parts))]
        if not parts:
            raise ValueError("concatenate needs at least one ReferenceData")
        if len(names) != len(parts):
            raise ValueError(f"{len(names)} sources named for {len(parts)} parts")
        first = parts[0]
        for part, name in zip(parts[1:], names[1:]):
            check_same_molecule(first.topology, part.topology, what=name)
            if abs(part.temperature - first.temperature) > 1e-6:
                raise ValueError(f"{name} holds data at {part.temperature:g} K, {names[0]} at {first.temperature:g} K; "
                                 "frames of one temperature only can be joined")
        meta = dict(first.metadata, sources=names)
        return cls(np.concatenate([p.xyz for p in parts]), np.concatenate([p.energies for p in parts]),
                   first.temperature, np.concatenate([p.time for p in parts]), first.topology, meta)

    # ----------------------------------------------------------- selection
    def select(self, index) -> "ReferenceData":
        """Frames at ``index`` (integer array, slice or boolean mask)."""
        return replace(self, xyz=self.xyz[index], energies=self.energies[index], time=self.time[index])

    def subsample(self, stride: int) -> "ReferenceData":
        """Every ``stride``-th frame."""
        return self.select(slice(None, None, validators.positive_int("stride", stride)))

    def split(self, fractions: Sequence[float], seed: int = 0, block_frames: int = 100) -> list["ReferenceData"]:
        """Split into disjoint parts, deterministically.

        MD frames are correlated, so contiguous blocks of ``block_frames``
        frames are assigned to the parts at random (seeded), keeping time
        order within each part.

        Parameters
        ----------
        fractions : fractions of the blocks per part, positive, summing to 1.
        seed : random seed of the block assignment.
        block_frames : frames per block.
        """
        block_frames = validators.positive_int("block_frames", block_frames)
        fr = np.asarray(fractions, dtype=float)
        if fr.ndim != 1 or len(fr) < 1 or np.any(fr <= 0) or abs(fr.sum() - 1.0) > 1e-6:
            raise ValueError(f"fractions must be positive and sum to 1, got {list(fractions)}")
        n_blocks = int(np.ceil(len(self) / block_frames))
        if n_blocks < len(fr):
            raise ValueError(f"{len(self)} frames in {n_blocks} blocks cannot be split into {len(fr)} parts")
        order = np.random.default_rng(seed).permutation(n_blocks)
        bounds = np.round(np.cumsum(fr) * n_blocks).astype(int)
        bounds[-1] = n_blocks
        parts, start = [], 0
        block_of_frame = np.arange(len(self)) // block_frames
        for stop in bounds:
            chosen = np.zeros(n_blocks, dtype=bool)
            chosen[order[start:stop]] = True
            parts.append(self.select(np.nonzero(chosen[block_of_frame])[0]))
            start = stop
        return parts
