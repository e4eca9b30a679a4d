"""mdtraj-readable HDF5 trajectory files with extra per-frame arrays and metadata.

The files are ordinary mdtraj HDF5 files (``mdtraj.load(path)`` opens them):
coordinates in nm, time in ps, the per-frame potential energy in kJ/mol in
mdtraj's ``potentialEnergy`` field.  trade_md adds a ``/trade_md`` group
holding further per-frame arrays (e.g. model log-density, log importance
weights) and a JSON metadata attribute (temperature in K, run settings).
Files are written atomically (temporary file, then rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import mdtraj
import numpy as np
import tables

from ._io import atomic_path

__all__ = [
    "TrajectoryFile", "TrajectoryFileError", "write_trajectory", "read_trajectory", "read_kind",
    "check_same_molecule", "atom_signature",
]

_GROUP = "trade_md"
_HASH_ROWS = 65536  # rows per read when hashing a dataset (bounds memory)


class TrajectoryFileError(ValueError):
    """A trajectory file is damaged, not HDF5, or not written by trade_md (the message names the file)."""


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
            # bytes changed later inside the data (not only in HDF5's own structures) are found on reading
            group._v_attrs.checksums = json.dumps(_checksums(h5))


def _checksums(h5: tables.File) -> dict[str, str]:
    """SHA-256 of the contents of every dataset of an open file, keyed by node path."""
    out = {}
    for leaf in h5.walk_nodes("/", classname="Leaf"):
        digest = hashlib.sha256()
        if leaf.ndim == 0 or leaf.nrows <= _HASH_ROWS:
            digest.update(np.ascontiguousarray(leaf.read()).tobytes())
        else:
            for start in range(0, leaf.nrows, _HASH_ROWS):
                digest.update(np.ascontiguousarray(leaf.read(start, start + _HASH_ROWS)).tobytes())
        out[leaf._v_pathname] = digest.hexdigest()
    return out


def _reason(err: BaseException) -> str:
    """One line saying why a read failed: HDF5's innermost message, not its C back trace."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if "End of HDF5 error back trace" in lines:
        end = lines.index("End of HDF5 error back trace")
        inner = lines[end - 1] if end >= 1 and not lines[end - 1].startswith("File ") else ""
        lines = [inner or " ".join(lines[end + 1:])]  # the innermost cause, else HDF5's summary
    text = lines[0] if lines else ""
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def read_trajectory(path: str | os.PathLike) -> TrajectoryFile:
    """Read a file written by :func:`write_trajectory`.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    TrajectoryFileError (a ValueError)
        With one line naming ``path`` if the file is not HDF5, is truncated
        or otherwise damaged (HDF5 structures, or data bytes that do not
        match the checksums written with the file), or is not a trade_md
        trajectory.  HDF5's C back trace is not passed on.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTables warns about unreadable nodes before it fails
            return _read(path)
    except TrajectoryFileError:
        raise
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - HDF5, mdtraj, json and numpy fail in many ways on damage
        # ``from None``: the HDF5 exception's text is a multi-line C back trace
        raise TrajectoryFileError(f"{path} is damaged or not an HDF5 trajectory: {_reason(err)}") from None


#: the kinds of trajectory file (``metadata["kind"]``): what each holds, in words, and what writes it
_KINDS = {"reference": ("an MD reference", "'trade-md simulate'"),
          "samples": ("generated samples", "'trade-md sample'")}


def read_kind(path: str | os.PathLike, kind: str, topology: Optional[mdtraj.Topology] = None,
              unmarked: Optional[str] = None) -> TrajectoryFile:
    """Read a file of one ``kind`` (``"reference"`` or ``"samples"``) with :func:`read_trajectory`.

    Parameters
    ----------
    path : the file.
    kind : the kind the caller needs.
    topology : if given, the file's atoms must match it.
    unmarked : the kind of files written before the kind was recorded (None: refused).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming ``path``: a damaged or foreign file (:class:`TrajectoryFileError`),
        a file of another kind (generated samples instead of an MD reference,
        or the reverse), another molecule.
    """
    f = read_trajectory(path)
    found = f.metadata.get("kind", unmarked)
    if found != kind:
        wanted, source = _KINDS[kind]
        holds = _KINDS[found][0] if found in _KINDS else f"data of kind {found!r}"
        raise ValueError(f"{path} holds {holds}, not {wanted} (written by {source})")
    if topology is not None:
        check_same_molecule(topology, f.topology, what=str(path))
    return f


def _read(path: Path) -> TrajectoryFile:
    damaged = f"{path} is damaged or not an HDF5 trajectory"
    with tables.open_file(str(path), mode="r") as h5:
        if f"/{_GROUP}" not in h5:
            raise TrajectoryFileError(f"{path} is not a trade_md trajectory (no /{_GROUP} group)")
        group = h5.get_node(f"/{_GROUP}")
        attrs = group._v_attrs
        metadata = json.loads(attrs.metadata)
        if not isinstance(metadata, dict):
            raise TrajectoryFileError(f"{damaged}: its metadata is not a JSON object")
        n = int(attrs.n_frames)
        if "checksums" in attrs._v_attrnames:  # files written before checksums were added have none
            expected = json.loads(attrs.checksums)
            found = _checksums(h5)
            bad = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
            if bad:
                raise TrajectoryFileError(f"{damaged}: the contents of {', '.join(bad)} do not match "
                                          "the checksums written with the file")
        time = group.time.read()
        energy = group.potential_energy.read() if "potential_energy" in group else None
        arrays = {
            node.name[len("array_"):]: node.read()
            for node in h5.list_nodes(group) if node.name.startswith("array_")
        }
    with mdtraj.formats.HDF5TrajectoryFile(str(path), mode="r") as fh:
        topology = fh.topology
        if n:
            frames = fh.read()
            xyz = np.asarray(frames.coordinates, dtype=np.float32)
        else:
            xyz = np.zeros((0, topology.n_atoms, 3), dtype=np.float32)
    if len(xyz) != n:
        raise TrajectoryFileError(f"{damaged}: {len(xyz)} frames of coordinates but {n} recorded")
    for name, arr in [("time", time), ("potential_energy", energy), *arrays.items()]:
        if arr is not None and np.shape(arr) != (n,):
            raise TrajectoryFileError(f"{damaged}: {name} has shape {np.shape(arr)}, expected ({n},)")
    return TrajectoryFile(xyz=xyz, topology=topology, time=time, potential_energy=energy,
                          arrays=arrays, metadata=metadata)
