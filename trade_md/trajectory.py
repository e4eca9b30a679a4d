"""mdtraj-readable HDF5 trajectory files with extra per-frame arrays and metadata.

The files are ordinary mdtraj HDF5 files (``mdtraj.load(path)`` opens them):
coordinates in nm, time in ps, the per-frame potential energy in kJ/mol in
mdtraj's ``potentialEnergy`` field.  trade_md adds a ``/trade_md`` group
holding further per-frame arrays (e.g. model log-density, log importance
weights) and a JSON metadata attribute (temperature in K, run settings).
Files are written atomically (temporary file, then rename).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import mdtraj
import numpy as np
import tables

from ._io import atomic_path

__all__ = ["TrajectoryFile", "write_trajectory", "read_trajectory", "check_same_molecule", "atom_signature"]

_GROUP = "trade_md"


def atom_signature(topology: mdtraj.Topology) -> list[str]:
    """Per-atom ``RESNAMEresSeq-ATOMNAME-element`` strings used to compare molecules."""
    out = []
    for a in topology.atoms:
        el = a.element.symbol if a.element is not None else "?"
        out.append(f"{a.residue.name}{a.residue.resSeq}-{a.name}-{el}")
    return out


def check_same_molecule(expected: mdtraj.Topology, found: mdtraj.Topology, what: str = "file") -> None:
    """Raise ``ValueError`` describing the first differences if the atoms differ."""
    a, b = atom_signature(expected), atom_signature(found)
    if a == b:
        return
    if len(a) != len(b):
        raise ValueError(f"{what} has {len(b)} atoms but the system has {len(a)}: a different molecule")
    diffs = [f"atom {i}: expected {x}, found {y}" for i, (x, y) in enumerate(zip(a, b)) if x != y]
    raise ValueError(f"{what} holds a different molecule ({len(diffs)} atoms differ; " + "; ".join(diffs[:5]) + ")")


@dataclass
class TrajectoryFile:
    """Contents of a trade_md HDF5 trajectory.

    Attributes
    ----------
    xyz : (n_frames, n_atoms, 3) float32, nm
    topology : mdtraj.Topology
    time : (n_frames,) float64, ps (or a frame index for generated samples)
    potential_energy : (n_frames,) float64 kJ/mol, or None
    arrays : dict of extra (n_frames,) float64 arrays
    metadata : dict (JSON-serializable)
    """

    xyz: np.ndarray
    topology: mdtraj.Topology
    time: np.ndarray
    potential_energy: Optional[np.ndarray] = None
    arrays: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def write_trajectory(path: str | os.PathLike, data: TrajectoryFile, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically as an mdtraj HDF5 file."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it (pass overwrite=True / --overwrite)")
    xyz = np.asarray(data.xyz, dtype=np.float32)
    n = len(xyz)
    if xyz.ndim != 3 or xyz.shape[1:] != (data.topology.n_atoms, 3):
        raise ValueError(f"xyz must have shape (n_frames, {data.topology.n_atoms}, 3), got {xyz.shape}")
    for name, arr in [("time", data.time), ("potential_energy", data.potential_energy), *data.arrays.items()]:
        if arr is not None and np.shape(arr) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {np.shape(arr)}")
    with atomic_path(path) as tmp:
        with mdtraj.formats.HDF5TrajectoryFile(str(tmp), mode="w") as fh:
            fh.topology = data.topology
            fh.title = "trade_md"
            fh.application = "trade_md"
            if n:
                fh.write(
                    coordinates=xyz,
                    time=np.asarray(data.time, dtype=np.float32),
                    potentialEnergy=None if data.potential_energy is None
                    else np.asarray(data.potential_energy, dtype=np.float32),
                )
        with tables.open_file(str(tmp), mode="a") as h5:
            group = h5.create_group("/", _GROUP)
            group._v_attrs.metadata = json.dumps(data.metadata)
            group._v_attrs.n_frames = n
            # float64 copies: mdtraj's own fields are float32
            h5.create_array(group, "time", np.asarray(data.time, dtype=np.float64))
            if data.potential_energy is not None:
                h5.create_array(group, "potential_energy", np.asarray(data.potential_energy, dtype=np.float64))
            for name, arr in data.arrays.items():
                h5.create_array(group, f"array_{name}", np.asarray(arr, dtype=np.float64))


def read_trajectory(path: str | os.PathLike) -> TrajectoryFile:
    """Read a file written by :func:`write_trajectory` (clear errors otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    try:
        h5 = tables.open_file(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - HDF5 raises many types
        raise ValueError(f"{path} is not a readable HDF5 file: {err}") from err
    try:
        if f"/{_GROUP}" not in h5:
            raise ValueError(f"{path} is not a trade_md trajectory (no /{_GROUP} group)")
        group = h5.get_node(f"/{_GROUP}")
        metadata = json.loads(group._v_attrs.metadata)
        n = int(group._v_attrs.n_frames)
        time = group.time.read()
        energy = group.potential_energy.read() if "potential_energy" in group else None
        arrays = {
            node.name[len("array_"):]: node.read()
            for node in h5.list_nodes(group) if node.name.startswith("array_")
        }
    except (tables.NoSuchNodeError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is a damaged trade_md trajectory: {err}") from err
    finally:
        h5.close()
    with mdtraj.formats.HDF5TrajectoryFile(str(path), mode="r") as fh:
        topology = fh.topology
        if n:
            frames = fh.read()
            xyz = np.asarray(frames.coordinates, dtype=np.float32)
        else:
            xyz = np.zeros((0, topology.n_atoms, 3), dtype=np.float32)
    if len(xyz) != n:
        raise ValueError(f"{path} is damaged: {len(xyz)} frames of coordinates but {n} recorded")
    return TrajectoryFile(xyz=xyz, topology=topology, time=time, potential_energy=energy,
                          arrays=arrays, metadata=metadata)
