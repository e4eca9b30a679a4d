"""``MolecularSystem``: an OpenMM system, its topology and a reference structure.

Units: positions in nm, masses in dalton, constraint lengths in nm.
"""
from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from . import validators

__all__ = ["MolecularSystem", "ForceFieldError", "DEFAULT_FORCEFIELD", "DEFAULT_CONSTRAINTS", "ALANINE_DIPEPTIDE"]

#: The protein force field and the implicit solvent of the TRADE paper's alanine dipeptide.
PROTEIN_FORCEFIELD, IMPLICIT_SOLVENT = "amber99sbildn.xml", "amber96_obc.xml"
#: The force-field files every builder, the CLI and workflows use unless told otherwise.
DEFAULT_FORCEFIELD: tuple[str, ...] = (PROTEIN_FORCEFIELD, IMPLICIT_SOLVENT)
DEFAULT_CONSTRAINTS = "HBonds"
#: The built-in molecule (:meth:`MolecularSystem.alanine_dipeptide`), the default of the CLI and workflows.
ALANINE_DIPEPTIDE = "alanine-dipeptide"

_CONSTRAINTS = {
    "none": None,
    "hbonds": app.HBonds,
    "allbonds": app.AllBonds,
    "hangles": app.HAngles,
}
_NONBONDED = {
    "nocutoff": app.NoCutoff,
    "cutoffnonperiodic": app.CutoffNonPeriodic,
    "cutoffperiodic": app.CutoffPeriodic,
    "pme": app.PME,
}


class ForceFieldError(ValueError):
    """The force field cannot parametrize the molecule (e.g. an unknown residue)."""


def _lookup(table: dict, value, what: str):
    if value is None:
        return None
    if not isinstance(value, str):
        return value
    return table[validators.choice(what, value.replace("_", "").replace("-", "").lower(), table)]


def _as_nm(positions) -> np.ndarray:
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    xyz = np.asarray(positions, dtype=np.float64)
    return xyz


def _load_forcefield(forcefield: Sequence[str] | str) -> app.ForceField:
    files = [forcefield] if isinstance(forcefield, str) else list(forcefield)
    try:
        return app.ForceField(*files)
    except (ValueError, OSError) as err:
        raise ForceFieldError(f"cannot load force field {files}: {err}") from err


def _create_system(ff: app.ForceField, files, topology: app.Topology, source: str,
                   constraints: str | None = DEFAULT_CONSTRAINTS, nonbonded: str = "NoCutoff",
                   remove_cm_motion: bool = True, **system_kwargs) -> openmm.System:
    """``ff.createSystem`` with the project's option names and a clear error for unknown residues.

    The options of :meth:`MolecularSystem.from_pdb` and
    :meth:`MolecularSystem.from_sequence`, with their defaults:
    ``constraints`` ``"HBonds"``, ``"AllBonds"``, ``"HAngles"`` or None;
    ``nonbonded`` ``"NoCutoff"``, ``"CutoffNonPeriodic"``, ``"CutoffPeriodic"``
    or ``"PME"``; ``remove_cm_motion`` adds a CMMotionRemover; any other
    keyword goes to ``ForceField.createSystem``.
    """
    try:
        return ff.createSystem(
            topology,
            nonbondedMethod=_lookup(_NONBONDED, nonbonded, "nonbonded method"),
            constraints=_lookup(_CONSTRAINTS, constraints, "constraint type"),
            removeCMMotion=remove_cm_motion,
            **system_kwargs,
        )
    except ValueError as err:
        msg = str(err)
        if "template" in msg.lower() or "residue" in msg.lower():
            raise ForceFieldError(
                f"force field {list(files) if not isinstance(files, str) else [files]} cannot match a residue "
                f"of {source}: {msg.splitlines()[0]}"
            ) from err
        raise


def _minimize(system: openmm.System, xyz: np.ndarray, tolerance: float = 1.0) -> np.ndarray:
    """Local energy minimization on the Reference platform (deterministic).

    ``tolerance`` is the RMS force in kJ/mol/nm at which to stop.
    """
    integrator = openmm.VerletIntegrator(0.001)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(xyz)
    ctx.applyConstraints(1e-8)
    openmm.LocalEnergyMinimizer.minimize(ctx, tolerance, 0)
    out = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    del ctx
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class ConstrainedBonds:
    """Distance constraints of a system: atom pairs ``(K, 2)`` and lengths ``(K,)`` in nm."""

    pairs: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)


class MolecularSystem:
    """A molecule for trade_md: OpenMM system + topology + reference structure.

    Parameters
    ----------
    system : openmm.System
    topology : openmm.app.Topology
    positions : (n_atoms, 3) array or Quantity
        Initial positions, nm if a plain array.
    name : str
        Human-readable name (used in file metadata).
    minimize : bool
        If True, the reference structure is the energy-minimized ``positions``
        (constraints applied); otherwise ``positions`` as given.

    Attributes
    ----------
    openmm_system, openmm_topology, topology (mdtraj.Topology), n_atoms,
    masses ((n_atoms,) dalton), constraints (:class:`ConstrainedBonds`),
    reference_xyz ((n_atoms, 3) nm, float64).
    """

    def __init__(
        self,
        system: openmm.System,
        topology: app.Topology,
        positions,
        name: str = "molecule",
        minimize: bool = True,
    ) -> None:
        if not isinstance(system, openmm.System):
            raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
        if not isinstance(topology, app.Topology):
            raise TypeError(f"topology must be an openmm.app.Topology, got {type(topology).__name__}")
        xyz = _as_nm(positions)
        n = system.getNumParticles()
        if topology.getNumAtoms() != n:
            raise ValueError(
                f"topology has {topology.getNumAtoms()} atoms but the system has {n} particles"
            )
        if xyz.shape != (n, 3):
            raise ValueError(f"positions must have shape ({n}, 3), got {xyz.shape}")
        if not np.all(np.isfinite(xyz)):
            raise ValueError("positions contain NaN or infinite values")
        self.openmm_system = system
        self.openmm_topology = topology
        self.name = name
        self.topology = mdtraj.Topology.from_openmm(topology)
        self.n_atoms = n
        self.masses = np.array(
            [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)]
        )
        pairs, lengths = [], []
        for k in range(system.getNumConstraints()):
            i, j, d = system.getConstraintParameters(k)
            pairs.append((i, j))
            lengths.append(d.value_in_unit(unit.nanometer))
        self.constraints = ConstrainedBonds(
            np.asarray(pairs, dtype=np.int64).reshape(-1, 2), np.asarray(lengths, dtype=np.float64)
        )
        self.initial_xyz = xyz
        self.reference_xyz = _minimize(system, xyz) if minimize else xyz.copy()
        self._equivalent_hydrogens: Optional[list[tuple[int, ...]]] = None

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_pdb(
        cls,
        path: str | os.PathLike,
        forcefield: Sequence[str] = DEFAULT_FORCEFIELD,
        name: str | None = None,
        minimize: bool = True,
        **options,
    ) -> "MolecularSystem":
        """Build from a PDB file and OpenMM force-field XML files.

        Parameters
        ----------
        path : PDB file.
        forcefield : force-field XML files, as accepted by ``openmm.app.ForceField``.
        name : defaults to the file stem.
        minimize : energy-minimize the reference structure.
        options : ``constraints`` (``"HBonds"`` default, ``"AllBonds"``,
            ``"HAngles"`` or None), ``nonbonded`` (``"NoCutoff"`` default,
            ``"CutoffNonPeriodic"``, ``"CutoffPeriodic"``, ``"PME"``),
            ``remove_cm_motion`` (default True: add a CMMotionRemover); any
            other keyword is passed to ``ForceField.createSystem``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"PDB file not found: {path}")
        ff = _load_forcefield(forcefield)
        try:
            pdb = app.PDBFile(str(path))
        except Exception as err:  # noqa: BLE001 - OpenMM's PDB reader raises anything
            raise ValueError(f"{path} is not a readable PDB file: {err}") from err
        if pdb.topology.getNumAtoms() == 0:
            raise ValueError(f"{path} holds no atoms (empty or not a PDB file)")
        system = _create_system(ff, forcefield, pdb.topology, str(path), **options)
        return cls(system, pdb.topology, pdb.positions, name=name or path.stem, minimize=minimize)

    @classmethod
    def from_sequence(
        cls,
        sequence: str,
        caps: bool = True,
        forcefield: Sequence[str] = (PROTEIN_FORCEFIELD,),
        implicit_solvent: str | None = IMPLICIT_SOLVENT,
        name: str | None = None,
        minimize: bool = True,
        **options,
    ) -> "MolecularSystem":
        """A capped peptide ACE-``sequence``-NME built from one-letter codes.

        Backbone from standard geometry (polyproline-II), side chains from
        pdbfixer's templates, hydrogens from the force field; then minimized
        like :meth:`from_pdb`.

        Parameters
        ----------
        sequence : one-letter amino-acid codes, e.g. ``"AAA"`` for Ace-Ala3-Nme.
        caps : must be True (acetyl and N-methyl-amide caps; uncapped
            zwitterions are not built).
        forcefield : protein force-field XML files.
        implicit_solvent : implicit-solvent XML added to ``forcefield`` (None: vacuum).
        name : defaults to ``"ace-<sequence>-nme"``.
        minimize, options : as in :meth:`from_pdb`.
        """
        from .peptide import build_capped_peptide, check_sequence

        check_sequence(sequence)
        if not caps:
            raise ValueError("only capped peptides (caps=True: ACE-...-NME) are built")
        files = [forcefield] if isinstance(forcefield, str) else list(forcefield)
        if implicit_solvent:
            files.append(implicit_solvent)
        ff = _load_forcefield(files)
        topology, xyz = build_capped_peptide(sequence, ff)
        system = _create_system(ff, files, topology, f"sequence {sequence!r}", **options)
        return cls(system, topology, xyz, name=name or f"ace-{sequence.strip().upper()}-nme", minimize=minimize)

    @classmethod
    def from_openmm(
        cls, system: openmm.System, topology: app.Topology, positions, name: str = "molecule",
        minimize: bool = True,
    ) -> "MolecularSystem":
        """Wrap an existing OpenMM system, topology and positions (nm or Quantity)."""
        return cls(system, topology, positions, name=name, minimize=minimize)

    @classmethod
    def alanine_dipeptide(cls, minimize: bool = True) -> "MolecularSystem":
        """Alanine dipeptide (ACE-ALA-NME, 22 atoms) as in the TRADE paper.

        The PDB shipped with openmmtools (``data/alanine-dipeptide-gbsa``),
        Amber99SB-ILDN with OBC implicit solvent (amber96_obc.xml), no cutoff,
        H-bond constraints, center-of-mass motion removed.
        """
        spec = importlib.util.find_spec("openmmtools")  # not imported: it prints pymbar banners
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("alanine_dipeptide() needs the openmmtools package (pip install openmmtools)")
        pdb = Path(list(spec.submodule_search_locations)[0]) / "data" / "alanine-dipeptide-gbsa" / "alanine-dipeptide.pdb"
        return cls.from_pdb(pdb, DEFAULT_FORCEFIELD, name=ALANINE_DIPEPTIDE, minimize=minimize)

    @classmethod
    def from_spec(
        cls,
        name: str | None = ALANINE_DIPEPTIDE,
        pdb: str | os.PathLike | None = None,
        forcefield: Sequence[str] = DEFAULT_FORCEFIELD,
        constraints: str | None = DEFAULT_CONSTRAINTS,
        sequence: str | None = None,
    ) -> "MolecularSystem":
        """The molecule as the CLI and workflows name it.

        ``sequence`` (a capped peptide, see :meth:`from_sequence`; ``forcefield``
        then lists all XML files, implicit solvent included), else ``pdb`` with
        ``forcefield``, else the built-in system ``name``.
        """
        if sequence and pdb:
            raise ValueError("give either a sequence or a PDB file, not both")
        if sequence:
            return cls.from_sequence(sequence, forcefield=list(forcefield), implicit_solvent=None,
                                     constraints=constraints)
        if pdb:
            return cls.from_pdb(pdb, forcefield=list(forcefield), constraints=constraints)
        if name == ALANINE_DIPEPTIDE:
            return cls.alanine_dipeptide()
        raise ValueError(f"unknown system {name!r}; use {ALANINE_DIPEPTIDE!r}, a sequence, "
                         "or a PDB file and force field")

    # ------------------------------------------------------- hydrogen labels
    @property
    def equivalent_hydrogens(self) -> list[tuple[int, ...]]:
        """Groups of hydrogens whose labels MD cannot tell apart: ``(h1, h2, c, z)`` atom indices.

        ``h1``, ``h2`` are two of the hydrogens bonded to the heavy atom ``c``
        (methyl, ammonium, methylene, amide NH2) whose exchange leaves the
        energy unchanged (checked on the reference structure); ``z`` is a
        third hydrogen of the group, or else a heavy neighbour of ``c``. The
        handedness ``sign det[h1 - c, h2 - c, z - c]`` is a label, not a
        conformation: dynamics keep it, but two builds of one molecule (or
        another program's files) may differ in it. See :meth:`match_hydrogen_labels`.
        """
        if self._equivalent_hydrogens is None:
            self._equivalent_hydrogens = _equivalent_hydrogens(self)
        return self._equivalent_hydrogens

    def match_hydrogen_labels(self, xyz: np.ndarray) -> np.ndarray:
        """A copy of ``xyz`` (n_frames, n_atoms, 3) nm with equivalent hydrogens relabelled,
        frame by frame, to the handedness of this system's reference structure.

        The energy of every frame is unchanged (the relabelled hydrogens are
        exchangeable); coordinates that depend on the labels (a methyl
        hydrogen's torsion) then agree with models built on this system.
        """
        xyz = np.array(xyz, dtype=np.float64, copy=True)
        if xyz.ndim != 3 or xyz.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"xyz must have shape (n_frames, {self.n_atoms}, 3) in nm, got {xyz.shape}")
        for h1, h2, c, z in self.equivalent_hydrogens:
            want = _handedness(self.reference_xyz[None], h1, h2, c, z)[0]
            flip = _handedness(xyz, h1, h2, c, z) != want
            xyz[flip, h1], xyz[flip, h2] = xyz[flip, h2], xyz[flip, h1].copy()
        return xyz

    # ------------------------------------------------------------ serialization
    def to_state(self) -> dict:
        """Plain-string representation (OpenMM system XML + PDB) for model files."""
        buf = io.StringIO()
        app.PDBFile.writeFile(self.openmm_topology, self.reference_xyz * 10.0 * unit.angstrom, buf, keepIds=True)
        return {
            "name": self.name,
            "system_xml": openmm.XmlSerializer.serialize(self.openmm_system),
            "pdb": buf.getvalue(),
            "reference_xyz": self.reference_xyz.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> "MolecularSystem":
        """Inverse of :meth:`to_state`; the stored reference structure is kept as is."""
        try:
            system = openmm.XmlSerializer.deserialize(state["system_xml"])
            pdb = app.PDBFile(io.StringIO(state["pdb"]))
        except Exception as err:  # noqa: BLE001 - OpenMM raises plain Exception
            raise ValueError(f"stored molecular system is unreadable: {err}") from err
        xyz = np.asarray(state.get("reference_xyz", _as_nm(pdb.positions)), dtype=np.float64)
        return cls(system, pdb.topology, xyz, name=state.get("name", "molecule"), minimize=False)

    def __repr__(self) -> str:
        return (
            f"MolecularSystem(name={self.name!r}, n_atoms={self.n_atoms}, "
            f"n_constraints={len(self.constraints)})"
        )


def _handedness(xyz: np.ndarray, h1: int, h2: int, c: int, z: int) -> np.ndarray:
    """``sign det[h1 - c, h2 - c, z - c]`` per frame, (n_frames,)."""
    center = xyz[:, c]
    return np.sign(np.linalg.det(np.stack([xyz[:, h1] - center, xyz[:, h2] - center, xyz[:, z] - center], 1)))


def _equivalent_hydrogens(system: "MolecularSystem") -> list[tuple[int, ...]]:
    """The ``(h1, h2, c, z)`` groups of :attr:`MolecularSystem.equivalent_hydrogens`."""
    neighbours: dict[int, list[int]] = {i: [] for i in range(system.n_atoms)}
    for a, b in system.topology.bonds:
        neighbours[a.index].append(b.index)
        neighbours[b.index].append(a.index)
    atoms = list(system.topology.atoms)
    is_h = [a.element is not None and a.element.symbol == "H" for a in atoms]
    candidates = []
    for c in range(system.n_atoms):
        hs = sorted(i for i in neighbours[c] if is_h[i])
        heavy = sorted(i for i in neighbours[c] if not is_h[i])
        if is_h[c] or len(hs) < 2 or (len(hs) == 2 and not heavy):
            continue
        candidates.append((hs[0], hs[1], c, hs[2] if len(hs) > 2 else heavy[0]))
    if not candidates:
        return []
    context = openmm.Context(system.openmm_system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))

    def energy(xyz):
        context.setPositions(xyz)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    e0, groups = energy(system.reference_xyz), []
    for h1, h2, c, z in candidates:
        swapped = system.reference_xyz.copy()
        swapped[[h1, h2]] = swapped[[h2, h1]]
        if abs(energy(swapped) - e0) <= 1e-6 * max(1.0, abs(e0)):
            groups.append((h1, h2, c, z))
    return groups
