"""Capped peptides from a one-letter sequence: ACE-(residues)-NME with hydrogens.

The backbone heavy atoms (N, CA, C, O of every residue, the acetyl and
N-methyl caps) are placed from standard internal coordinates (bond lengths in
nm, angles and torsions in radians) with the natural extension reference
frame method; pdbfixer adds the side-chain heavy atoms from its residue
templates and OpenMM's ``Modeller`` the hydrogens of the force field.  The
result is an unminimized ``openmm.app.Topology`` and positions in nm;
``MolecularSystem.from_sequence`` parametrizes and minimizes it.
"""
from __future__ import annotations

import io
import random
from typing import Sequence

import numpy as np

__all__ = ["ONE_LETTER", "build_capped_peptide", "check_sequence"]

ONE_LETTER = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
    "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
    "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}

# standard backbone geometry (Engh & Huber): nm and degrees
_BOND = {"N-CA": 0.1458, "CA-C": 0.1525, "C-N": 0.1329, "C-O": 0.1231, "CH3-C": 0.1520, "N-CH3": 0.1449}
_ANGLE = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7}
# polyproline-II backbone: a low-strain extended start for the minimizer and MD
_PHI, _PSI, _OMEGA = -75.0, 145.0, 180.0


def check_sequence(sequence: str) -> list[str]:
    """Residue names (three-letter, upper case) of a one-letter ``sequence``.

    Raises ``ValueError`` naming the position of an unknown letter, or for an
    empty sequence.
    """
    if not isinstance(sequence, str):
        raise TypeError(f"sequence must be a string of one-letter amino-acid codes, got {type(sequence).__name__}")
    seq = sequence.strip().upper()
    if not seq:
        raise ValueError("sequence is empty; give one-letter amino-acid codes, e.g. 'AAA'")
    for i, letter in enumerate(seq):
        if letter not in ONE_LETTER:
            raise ValueError(
                f"unknown one-letter amino-acid code {letter!r} at position {i + 1} of {sequence!r}; "
                f"known: {''.join(sorted(ONE_LETTER))}"
            )
    return [ONE_LETTER[letter] for letter in seq]


def _place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle_deg: float,
           torsion_deg: float) -> np.ndarray:
    """Position of d with |cd| = bond, angle(b, c, d) and torsion(a, b, c, d) (NeRF)."""
    theta, phi = np.radians(angle_deg), np.radians(torsion_deg)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d_local = bond * np.array([-np.cos(theta), np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi)])
    return c + d_local[0] * bc + d_local[1] * m + d_local[2] * n


def _carbonyl_oxygen(prev: np.ndarray, carbon: np.ndarray, nitrogen: np.ndarray) -> np.ndarray:
    """O of a peptide carbonyl: in the plane of its neighbours, bisecting the outer angle."""
    u = (carbon - prev) / np.linalg.norm(carbon - prev) + (carbon - nitrogen) / np.linalg.norm(carbon - nitrogen)
    return carbon + _BOND["C-O"] * u / np.linalg.norm(u)


def _backbone_pdb(residues: Sequence[str]) -> str:
    """PDB text with the heavy backbone atoms of ACE-(residues)-NME."""
    # main chain: CH3(ACE) C(ACE) [N CA C]*n N(NME) C(NME)
    chain = [np.zeros(3), np.array([_BOND["CH3-C"], 0.0, 0.0])]
    chain.append(chain[1] + _BOND["C-N"] * np.array([np.cos(np.radians(180 - _ANGLE["CA-C-N"])),
                                                     np.sin(np.radians(180 - _ANGLE["CA-C-N"])), 0.0]))
    # bond, angle, torsion of each next main-chain atom (torsions: omega, phi, psi)
    for _ in residues:
        for bond, angle, torsion in ((_BOND["N-CA"], _ANGLE["C-N-CA"], _OMEGA),
                                     (_BOND["CA-C"], _ANGLE["N-CA-C"], _PHI),
                                     (_BOND["C-N"], _ANGLE["CA-C-N"], _PSI)):
            chain.append(_place(chain[-3], chain[-2], chain[-1], bond, angle, torsion))
    chain.append(_place(chain[-3], chain[-2], chain[-1], _BOND["N-CH3"], _ANGLE["C-N-CA"], _OMEGA))

    atoms: list[tuple[str, str, int, np.ndarray]] = [("CH3", "ACE", 1, chain[0]), ("C", "ACE", 1, chain[1]),
                                                     ("O", "ACE", 1, _carbonyl_oxygen(chain[0], chain[1], chain[2]))]
    for k, name in enumerate(residues):
        n, ca, c = chain[2 + 3 * k: 5 + 3 * k]
        o = _carbonyl_oxygen(ca, c, chain[5 + 3 * k])
        atoms += [("N", name, k + 2, n), ("CA", name, k + 2, ca), ("C", name, k + 2, c), ("O", name, k + 2, o)]
    atoms += [("N", "NME", len(residues) + 2, chain[-2]), ("C", "NME", len(residues) + 2, chain[-1])]
    lines = []
    for i, (atom, res, num, xyz) in enumerate(atoms, start=1):
        x, y, z = 10.0 * xyz  # angstrom
        element = atom[0]
        lines.append(f"ATOM  {i:5d} {atom:<4s} {res:3s} A{num:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00"
                     f"          {element:>2s}")
    return "\n".join(lines + ["TER", "END"]) + "\n"


def build_capped_peptide(sequence: str, forcefield) -> tuple:
    """Topology and positions (nm, unminimized) of ACE-``sequence``-NME with hydrogens.

    Parameters
    ----------
    sequence : one-letter amino-acid codes, e.g. ``"AAA"``.
    forcefield : ``openmm.app.ForceField`` whose hydrogen definitions are used.

    Returns
    -------
    (openmm.app.Topology, (n_atoms, 3) float64 array in nm)
    """
    import openmm
    import openmm.app as app
    import openmm.unit as unit
    from pdbfixer import PDBFixer

    residues = check_sequence(sequence)
    fixer = PDBFixer(pdbfile=io.StringIO(_backbone_pdb(residues)))
    fixer.missingResidues = {}
    fixer.findMissingAtoms()
    fixer.missingTerminals = {}  # the caps end the chain: no OXT
    fixer.addMissingAtoms(seed=0)
    modeller = app.Modeller(fixer.topology, fixer.positions)
    # Modeller places new hydrogens at positions from Python's global `random`
    # before minimizing them: seed it (and keep the caller's stream) so that
    # every build of a sequence is the same structure, hydrogen labels included
    # (the cyclic order of a methyl's H1-H3 is kept by MD, and models and
    # references built separately must agree on it).
    state = random.getstate()
    try:
        random.seed(0)
        modeller.addHydrogens(forcefield, platform=openmm.Platform.getPlatformByName("Reference"))
    finally:
        random.setstate(state)
    xyz = np.asarray(modeller.getPositions().value_in_unit(unit.nanometer), dtype=np.float64)
    return modeller.getTopology(), xyz
