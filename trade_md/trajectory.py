"""mdtraj-readable HDF5 trajectory files with extra per-frame arrays and metadata.

The files are ordinary mdtraj HDF5 files (``mdtraj.load(path)`` opens them):
coordinates in nm, time in ps, the per-frame potential energy in kJ/mol in
mdtraj's ``potentialEnergy`` field.  trade_md adds a ``/trade_md`` group
holding further per-frame arrays (e.g. model log-density, log importance
weights) and a JSON metadata attribute (temperature in K, run settings).
Files are written atomically (temporary file, then rename).

Other trajectory formats (DCD, XTC, TRR, AMBER NetCDF, PDB, foreign HDF5)
are read and written through mdtraj (:func:`read_frames`,
:func:`write_frames`); per-frame values travel beside them in a CSV side-car
(:func:`write_sidecar`).
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
    "check_same_molecule", "atom_signature", "FRAME_FORMATS", "is_trade_md_file", "read_topology", "read_frames", "write_frames",
    "sidecar_path", "write_sidecar", "read_sidecar", "file_sha256",
]

_GROUP = "trade_md"
_HASH_ROWS = 65536  # rows per read when hashing a dataset (bounds memory)


class TrajectoryFileError(ValueError):
    """A trajectory file is damaged, not HDF5, or not written by trade_md (the message names the file)."""


def atom_signature(topology: mdtraj.Topology) -> list[str]:
    """Per-atom ``RESNAME<position>-ATOMNAME-element`` strings used to compare molecules.

    Residues are numbered by their position (1, 2, ...), not by the file's
    residue numbers, so a renumbered copy of the same molecule matches.
    """
    out = []
    for a in topology.atoms:
        el = a.element.symbol if a.element is not None else "?"
        out.append(f"{a.residue.name}{a.residue.index + 1}-{a.name}-{el}")
    return out


def check_same_molecule(expected: mdtraj.Topology, found: mdtraj.Topology, what: str = "file") -> None:
    """Raise ``ValueError`` naming the first differing atom (name, element, residue) if the atoms differ."""
    a, b = atom_signature(expected), atom_signature(found)
    if a == b:
        return
    if len(a) != len(b):
        raise ValueError(f"{what} has {len(b)} atoms but the system has {len(a)}: a different molecule")
    diffs = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    first = diffs[0]
    raise ValueError(f"{what} holds a different molecule: atom {first} is {b[first]} there but {a[first]} in the "
                     f"system (residue-atom name-element; {len(diffs)} of {len(a)} atoms differ)")


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


# ------------------------------------------------------------------ other formats (through mdtraj)
#: trajectory formats by file suffix: (name, whether the file holds its own topology)
FRAME_FORMATS = {
    ".h5": ("HDF5", True), ".hdf5": ("HDF5", True), ".pdb": ("PDB", True),
    ".dcd": ("DCD", False), ".xtc": ("XTC", False), ".trr": ("TRR", False),
    ".nc": ("NetCDF", False), ".ncdf": ("NetCDF", False), ".netcdf": ("NetCDF", False),
}


def _format(path: Path) -> tuple[str, bool]:
    """(name, holds its own topology) of ``path``'s format; ValueError for an unknown suffix."""
    suffix = path.suffix.lower()
    if suffix not in FRAME_FORMATS:
        raise ValueError(f"{path}: unknown trajectory format {suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(FRAME_FORMATS)}")
    return FRAME_FORMATS[suffix]


def is_trade_md_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is for :func:`read_trajectory`: an HDF5 file with a ``/trade_md`` group.

    An HDF5-named file that cannot be opened counts as one too, so that
    :func:`read_trajectory` names the damage; other formats and HDF5 files
    written by other programs do not.
    """
    path = Path(path)
    if path.suffix.lower() not in (".h5", ".hdf5"):
        return False
    if not path.is_file():
        return True  # read_trajectory names the missing file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tables.open_file(str(path), mode="r") as h5:
                return f"/{_GROUP}" in h5 or "/coordinates" not in h5
    except Exception:  # noqa: BLE001 - damaged or not HDF5: read_trajectory says which
        return True


def read_topology(top: str | os.PathLike | mdtraj.Topology) -> mdtraj.Topology:
    """``top`` itself, or the topology in the file ``top`` (PDB or another format mdtraj reads)."""
    if isinstance(top, mdtraj.Topology):
        return top
    path = Path(top)
    if not path.is_file():
        raise FileNotFoundError(f"topology file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mdtraj.load_topology(str(path))
    except Exception as err:  # noqa: BLE001 - mdtraj's readers raise many kinds
        raise TrajectoryFileError(f"{path} is not a readable topology: {_reason(err)}") from None


def read_frames(path: str | os.PathLike, top: Optional[str | os.PathLike | mdtraj.Topology] = None
                ) -> mdtraj.Trajectory:
    """Read any trajectory format of :data:`FRAME_FORMATS` with mdtraj (positions in nm, time in ps).

    Parameters
    ----------
    path : the trajectory.
    top : topology (a PDB or other file mdtraj reads, or an ``mdtraj.Topology``)
        for formats without one (DCD, XTC, TRR, NetCDF); PDB and HDF5 files use their own.

    Raises
    ------
    FileNotFoundError
        If ``path`` or ``top`` does not exist.
    ValueError
        One line naming the file: unknown format, no topology for a format
        that needs one, an unreadable file (:class:`TrajectoryFileError`).
    """
    path = Path(path)
    name, has_topology = _format(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    if has_topology:
        top = None
    elif top is None:
        raise ValueError(f"{path} is a {name} file, which holds no topology: give top= (--top) a PDB of the molecule")
    else:
        top = read_topology(top)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mdtraj warns about unit cells and PDB details
            traj = mdtraj.load(str(path), top=top) if top is not None else mdtraj.load(str(path))
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - mdtraj's readers raise many kinds
        what = "damaged or not an HDF5 trajectory" if name == "HDF5" else f"not a readable {name} trajectory"
        raise TrajectoryFileError(f"{path} is {what}: {_reason(err)}") from None
    if traj.n_frames == 0:
        raise TrajectoryFileError(f"{path} holds no frames")
    return traj


def write_frames(path: str | os.PathLike, xyz: np.ndarray, topology: mdtraj.Topology,
                 time: Optional[np.ndarray] = None) -> None:
    """Write positions ``(n, n_atoms, 3)`` nm (and time, ps) atomically in the format of ``path``'s suffix."""
    path = Path(path)
    _format(path)
    traj = mdtraj.Trajectory(np.asarray(xyz, dtype=np.float32), topology, time=time)
    with atomic_path(path) as tmp:  # the temporary name keeps the suffix, which mdtraj reads the format from
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traj.save(str(tmp))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SIDECAR_TAG = "# trade_md per-frame values: "


def sidecar_path(path: str | os.PathLike) -> Path:
    """The per-frame side-car ``<stem>.weights.csv`` of frames saved as ``<stem>.dcd`` (or .xtc, .pdb ...)."""
    path = Path(path)
    return path.with_name(path.stem + ".weights.csv")


def write_sidecar(path: str | os.PathLike, columns: dict[str, np.ndarray], metadata: dict) -> None:
    """Write per-frame ``columns`` (each ``(n,)``) as CSV with a first comment line of JSON ``metadata``.

    Values are written with 17 significant digits (float64 round-trips
    exactly; ``inf``, ``-inf`` and ``nan`` as such); atomically.
    """
    names = list(columns)
    table = np.column_stack([np.asarray(columns[k], dtype=np.float64) for k in names])
    lines = [_SIDECAR_TAG + json.dumps(metadata), ",".join(names)]
    lines += [",".join(f"{v:.17g}" for v in row) for row in table]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_sidecar(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by :func:`write_sidecar`: ``({column: (n,) float64}, metadata)``.

    Raises FileNotFoundError if it is missing, ValueError naming it if it is not such a file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"side-car file not found: {path}")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < 2 or not lines[0].startswith(_SIDECAR_TAG):
        raise ValueError(f"{path} is not a trade_md side-car file (its first line must start with {_SIDECAR_TAG!r})")
    names = lines[1].split(",")
    try:
        metadata = json.loads(lines[0][len(_SIDECAR_TAG):])
        rows = [[float(v) for v in line.split(",")] for line in lines[2:]]
    except ValueError as err:
        raise ValueError(f"{path} is damaged: {str(err).splitlines()[0]}") from None
    bad = next((i for i, row in enumerate(rows) if len(row) != len(names)), None)
    if bad is not None:
        raise ValueError(f"{path} is damaged: row {bad + 1} has {len(rows[bad])} values for {len(names)} columns")
    table = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
    return {k: table[:, i].copy() for i, k in enumerate(names)}, metadata
