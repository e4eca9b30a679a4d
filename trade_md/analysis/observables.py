"""Observables of molecular configurations: backbone torsions and basins.

The only module of :mod:`trade_md.analysis` that imports mdtraj.  Angles are
in radians on ``[-pi, pi)``; positions in nm.  :func:`residue_torsions` maps
every phi/psi column to its residue, named like ``"ALA2"`` (residue name and
sequence number): alanine dipeptide (ACE1-ALA2-NME3) has one such residue,
Ace-Ala3-Nme three (ALA2, ALA3, ALA4).

Basins of alanine dipeptide (and of every residue of a peptide)
---------------------------------------------------------------
:func:`assign_basins` labels every (phi, psi) pair with one of three regions
(codes index :data:`BASINS`):

==== ================ =====================================================
code name             region (radians)
==== ================ =====================================================
0    ``C7eq/beta``    the rest of the left half: phi outside
                      :data:`PHI_POSITIVE_RANGE` and psi outside
                      :data:`ALPHA_R_PSI_RANGE` (C7eq near (-1.4, 1.2), C5/beta
                      near (-2.6, 2.7), wrapping through psi = +-pi and phi = -pi)
1    ``alpha_R``      phi outside :data:`PHI_POSITIVE_RANGE` and
                      -2.2 <= psi < 1.0 (right-handed helix near (-1.4, -0.7))
2    ``alpha_L/C7ax`` 0 <= phi < 2.1 (about 0 to 120 degrees), any psi
                      (C7ax near (1.3, -1.2), alpha_L near (1.0, 0.7))
==== ================ =====================================================

The phi boundaries lie in the two low-density regions of the phi profile,
the barrier at phi = 0 and the slope between C7ax and beta at phi = 2.1
(120 degrees): samples with phi in [2.1, pi) are counted with the beta basin,
which extends across phi = -pi, so phi > 0 alone would misplace them at high
temperature.  The psi boundaries (-2.2 and 1.0, about -126 and 57 degrees) lie
in the low-density bands between alpha_R and C7eq/beta.  ``F(alpha_L/C7ax) - F(C7eq/beta)`` is the usual
free-energy difference reported for alanine dipeptide.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import mdtraj
import numpy as np
from numpy.typing import ArrayLike

from .metrics import ANGLE_TOLERANCE, wrap_angles

__all__ = [
    "BASINS",
    "BASIN_C7EQ_BETA",
    "BASIN_ALPHA_R",
    "BASIN_ALPHA_L_C7AX",
    "PHI_POSITIVE_RANGE",
    "ALPHA_R_PSI_RANGE",
    "backbone_torsions",
    "ramachandran",
    "ResidueTorsions",
    "residue_torsions",
    "residue_label",
    "assign_basins",
    "PeptideBonds",
    "peptide_bonds",
    "CIS_LIMIT",
]

#: Basin names; ``BASINS[code]`` names an :func:`assign_basins` code.
BASINS: Tuple[str, ...] = ("C7eq/beta", "alpha_R", "alpha_L/C7ax")
BASIN_C7EQ_BETA: int = 0
BASIN_ALPHA_R: int = 1
BASIN_ALPHA_L_C7AX: int = 2

#: ``[low, high)`` of phi (radians) of the alpha_L/C7ax basin.
PHI_POSITIVE_RANGE: Tuple[float, float] = (0.0, 2.1)
#: ``[low, high)`` of psi (radians) of the alpha_R basin (for phi outside PHI_POSITIVE_RANGE).
ALPHA_R_PSI_RANGE: Tuple[float, float] = (-2.2, 1.0)


def residue_label(residue: mdtraj.core.topology.Residue) -> str:
    """Name of a residue in reports: residue name and sequence number, e.g. ``"ALA2"``."""
    return f"{residue.name}{residue.resSeq}"


def _torsions_by_residue(traj: mdtraj.Trajectory) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """phi, psi (N, R) radians and the R topology indices of the residues that have both."""
    if not isinstance(traj, mdtraj.Trajectory):
        raise TypeError(f"traj must be an mdtraj.Trajectory, got {type(traj).__name__}")
    if traj.n_frames == 0:
        raise ValueError("the trajectory has no frames")
    phi_atoms, phi = mdtraj.compute_phi(traj)
    psi_atoms, psi = mdtraj.compute_psi(traj)
    # phi's N (column 1) and psi's N (column 0) belong to the residue the angle is assigned to.
    phi_residues = [traj.topology.atom(int(i)).residue.index for i in phi_atoms[:, 1]]
    psi_residues = [traj.topology.atom(int(i)).residue.index for i in psi_atoms[:, 0]]
    both = sorted(set(phi_residues) & set(psi_residues))
    if not both:
        raise ValueError(
            "the topology has no residue with both backbone phi and psi "
            f"({len(phi_residues)} phi, {len(psi_residues)} psi found); is it a peptide "
            "with standard backbone atom names (C, N, CA)?"
        )
    phi_column = {r: k for k, r in enumerate(phi_residues)}
    psi_column = {r: k for k, r in enumerate(psi_residues)}
    phi = phi[:, [phi_column[r] for r in both]]
    psi = psi[:, [psi_column[r] for r in both]]
    return wrap_angles(phi), wrap_angles(psi), both


def backbone_torsions(traj: mdtraj.Trajectory) -> Tuple[np.ndarray, np.ndarray]:
    """Backbone phi and psi of every residue that has both.

    phi of residue i is the dihedral C(i-1)-N(i)-CA(i)-C(i), psi is
    N(i)-CA(i)-C(i)-N(i+1) (mdtraj's definitions, IUPAC sign).  For alanine
    dipeptide (ACE-ALA-NME) only ALA has both, so the arrays have one column.
    :func:`residue_torsions` also names the residues.

    Parameters
    ----------
    traj : mdtraj.Trajectory
        Frames of a peptide; positions in nm.

    Returns
    -------
    phi, psi : np.ndarray, each shape (n_frames, n_residues_with_both), float64
        Radians in ``[-pi, pi)``; columns in residue order.

    Raises
    ------
    ValueError
        If the trajectory has no frames or no residue has both phi and psi.
    """
    phi, psi, _ = _torsions_by_residue(traj)
    return phi, psi


@dataclass(frozen=True)
class ResidueTorsions:
    """Backbone torsions of the residues that have both phi and psi, with their names.

    Attributes
    ----------
    names : tuple of str, length R
        :func:`residue_label` of each residue (``"ALA2"``), in residue order;
        unique (a chain index is appended when two chains repeat a label).
    phi, psi : np.ndarray, shape (n_frames, R), float64
        Radians in ``[-pi, pi)``; column ``i`` belongs to ``names[i]``.
    """

    names: Tuple[str, ...]
    phi: np.ndarray
    psi: np.ndarray

    def __len__(self) -> int:
        """Number of residues R."""
        return len(self.names)


def residue_torsions(xyz: ArrayLike, topology: mdtraj.Topology) -> ResidueTorsions:
    """phi and psi of every residue that has both, mapped to named residues.

    Parameters
    ----------
    xyz : array_like, shape (B, n_atoms, 3), nm
    topology : mdtraj.Topology
        Topology with ``n_atoms`` atoms, in the order of ``xyz``.

    Returns
    -------
    ResidueTorsions with R columns (one for alanine dipeptide, named ``"ALA2"``).
    """
    phi, psi, residues = _torsions_by_residue(_trajectory(xyz, topology))
    names = [residue_label(topology.residue(r)) for r in residues]
    if len(set(names)) < len(names):  # several chains: make the labels unique
        names = [f"{residue_label(topology.residue(r))}:{topology.residue(r).chain.index}" for r in residues]
    return ResidueTorsions(tuple(names), phi, psi)


def _trajectory(xyz: ArrayLike, topology: mdtraj.Topology) -> mdtraj.Trajectory:
    """Validated frames as an mdtraj trajectory."""
    if not isinstance(topology, mdtraj.Topology):
        raise TypeError(f"topology must be an mdtraj.Topology, got {type(topology).__name__}")
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[1:] != (topology.n_atoms, 3):
        raise ValueError(f"xyz must have shape (B, {topology.n_atoms}, 3) in nm, got {xyz.shape}")
    if xyz.shape[0] == 0:
        raise ValueError("xyz has no frames")
    if not np.all(np.isfinite(xyz)):
        raise ValueError("xyz contains NaN or inf")
    return mdtraj.Trajectory(xyz, topology)


#: A peptide bond is *cis* when ``|omega| <`` this (radians, 90 degrees); trans is near ``pi``.
CIS_LIMIT: float = np.pi / 2


@dataclass(frozen=True)
class PeptideBonds:
    """The omega torsion of every peptide bond, ``X(i)-C(i)-N(i+1)-Y(i+1)``.

    Attributes
    ----------
    names : tuple of str, length B
        ``"ACE1-ALA2"``: the :func:`residue_label` of the two residues.
    omega : np.ndarray, shape (n_frames, B), float64
        Radians in ``[-pi, pi)``; cis when ``|omega| <`` :data:`CIS_LIMIT`.
    """

    names: Tuple[str, ...]
    omega: np.ndarray

    def cis(self) -> np.ndarray:
        """``(n_frames, B)`` bool: which bonds are cis in which frame."""
        return np.abs(self.omega) < CIS_LIMIT


def _carbon_partner(atom: mdtraj.core.topology.Atom, neighbours: dict, exclude: mdtraj.core.topology.Atom):
    """The carbon bonded to ``atom`` other than ``exclude``, ``CA`` first (proline's N also has ``CD``)."""
    carbons = [a for a in neighbours[atom.index] if a is not exclude and a.element is not None
               and a.element.symbol == "C"]
    carbons.sort(key=lambda a: (a.name != "CA", a.index))
    return carbons[0] if carbons else None


def peptide_bonds(xyz: ArrayLike, topology: mdtraj.Topology) -> PeptideBonds:
    """omega of every bond from an atom ``C`` to an atom ``N`` of the next residue (caps included).

    ``X`` is the carbon bonded to ``C`` (``CA``, or a cap's ``CH3``) and ``Y`` the carbon bonded to ``N``
    (``CA``, or N-methylamide's ``C``), so alanine dipeptide has two peptide bonds (ACE1-ALA2, ALA2-NME3).
    A molecule without any gives ``B = 0`` columns.
    """
    neighbours: dict = {a.index: [] for a in topology.atoms}
    for a, b in topology.bonds:
        neighbours[a.index].append(b)
        neighbours[b.index].append(a)
    bonds = []  # (C index, name, X-C-N-Y atom indices)
    for a, b in topology.bonds:
        c, n = (a, b) if a.name == "C" else (b, a)
        if c.name != "C" or n.name != "N" or n.residue.index != c.residue.index + 1:
            continue
        x, y = _carbon_partner(c, neighbours, n), _carbon_partner(n, neighbours, c)
        if x is not None and y is not None:
            bonds.append((c.index, f"{residue_label(c.residue)}-{residue_label(n.residue)}",
                          (x.index, c.index, n.index, y.index)))
    bonds.sort()  # in chain order
    traj = _trajectory(xyz, topology)
    if not bonds:
        return PeptideBonds((), np.zeros((traj.n_frames, 0)))
    omega = mdtraj.compute_dihedrals(traj, np.array([quad for _, _, quad in bonds]))
    return PeptideBonds(tuple(name for _, name, _ in bonds), wrap_angles(omega.astype(np.float64)))


def ramachandran(xyz: ArrayLike, topology: mdtraj.Topology) -> Tuple[np.ndarray, np.ndarray]:
    """Backbone phi and psi of Cartesian frames; see :func:`backbone_torsions`.

    Parameters
    ----------
    xyz : array_like, shape (B, n_atoms, 3), nm
        Frames (e.g. flow samples); a single frame of shape (n_atoms, 3) is not accepted.
    topology : mdtraj.Topology
        Topology with ``n_atoms`` atoms, in the order of ``xyz``.

    Returns
    -------
    phi, psi : np.ndarray, each shape (B, n_residues_with_both), radians in ``[-pi, pi)``.
    """
    return backbone_torsions(_trajectory(xyz, topology))


def assign_basins(phi: ArrayLike, psi: ArrayLike) -> np.ndarray:
    """Alanine-dipeptide basin code of every (phi, psi) pair (see the module docstring).

    Parameters
    ----------
    phi, psi : array_like, same shape (any), radians in [-pi, pi]

    Returns
    -------
    np.ndarray of int64, same shape
        :data:`BASIN_C7EQ_BETA` (0), :data:`BASIN_ALPHA_R` (1) or
        :data:`BASIN_ALPHA_L_C7AX` (2); names in :data:`BASINS`.
    """
    phi = np.asarray(phi, dtype=np.float64)
    psi = np.asarray(psi, dtype=np.float64)
    if phi.shape != psi.shape:
        raise ValueError(f"phi has shape {phi.shape} but psi has shape {psi.shape}; they must match")
    if phi.size == 0:
        raise ValueError("phi and psi are empty")
    for name, angles in (("phi", phi), ("psi", psi)):
        if not np.all(np.isfinite(angles)):
            raise ValueError(f"{name} contains NaN or inf")
        if np.max(np.abs(angles)) > np.pi + ANGLE_TOLERANCE:
            raise ValueError(f"{name} must be in radians within [-pi, pi] (degrees passed by mistake?)")
    phi, psi = wrap_angles(phi), wrap_angles(psi)
    codes = np.full(phi.shape, BASIN_C7EQ_BETA, dtype=np.int64)
    alpha_r = (psi >= ALPHA_R_PSI_RANGE[0]) & (psi < ALPHA_R_PSI_RANGE[1])
    codes[alpha_r] = BASIN_ALPHA_R
    codes[(phi >= PHI_POSITIVE_RANGE[0]) & (phi < PHI_POSITIVE_RANGE[1])] = BASIN_ALPHA_L_C7AX
    return codes
