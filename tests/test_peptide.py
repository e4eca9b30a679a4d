"""Capped peptides from a sequence (``MolecularSystem.from_sequence``)."""
import numpy as np
import openmm.app as app
import pytest

from trade_md.energy import OpenMMEnergy
from trade_md.peptide import check_sequence
from trade_md.system import MolecularSystem


def _atoms(system):
    return sorted((a.residue.index, a.residue.name, a.name, a.element.symbol) for a in system.openmm_topology.atoms())


def _bonds(system):
    return sorted(tuple(sorted(((b[0].residue.index, b[0].name), (b[1].residue.index, b[1].name))))
                  for b in system.openmm_topology.bonds())


@pytest.fixture(scope="module")
def ala_from_sequence():
    return MolecularSystem.from_sequence("A")


def test_single_alanine_is_the_shipped_alanine_dipeptide(ala_from_sequence, ala2):
    built = ala_from_sequence
    assert built.n_atoms == ala2.n_atoms == 22
    assert _atoms(built) == _atoms(ala2)
    assert _bonds(built) == _bonds(ala2)
    assert [r.name for r in built.openmm_topology.residues()] == ["ACE", "ALA", "NME"]
    assert len(built.constraints) == len(ala2.constraints) == 12
    # the shipped structure mapped onto the built system by (residue, atom name): same energy
    index = {(a.residue.index, a.name): a.index for a in built.openmm_topology.atoms()}
    perm = [index[(a.residue.index, a.name)] for a in ala2.openmm_topology.atoms()]
    xyz = np.empty_like(ala2.reference_xyz)
    xyz[perm] = ala2.reference_xyz
    e_built = OpenMMEnergy(built, platform="Reference").energy(xyz[None])
    e_ship = OpenMMEnergy(ala2, platform="Reference").energy(ala2.reference_xyz[None])
    np.testing.assert_allclose(e_built, e_ship, atol=1e-3)


@pytest.mark.parametrize("sequence", ["AAA", "GPWKDE"])
def test_peptides_match_the_force_field_templates(sequence):
    system = MolecularSystem.from_sequence(sequence)
    residues = [r.name for r in system.openmm_topology.residues()]
    assert residues[0] == "ACE" and residues[-1] == "NME" and len(residues) == len(sequence) + 2
    # every residue has exactly the atoms of its Amber template (names and count)
    ff = app.ForceField("amber99sbildn.xml")
    templates = ff.getMatchingTemplates(system.openmm_topology)
    for residue, template in zip(system.openmm_topology.residues(), templates):
        assert template.name.endswith(residue.name)  # ALA, NALA, CALA: no terminal variants inside caps
        # templates match by bond graph and element; atom counts and heavy-atom names must agree too
        # (the caps keep PDB names, as in the shipped alanine dipeptide: NME's methyl carbon is C, not CH3)
        assert len(template.atoms) == len(list(residue.atoms()))
        if residue.name not in ("ACE", "NME"):
            heavy = sorted(a.name for a in residue.atoms() if a.element.symbol != "H")
            assert heavy == sorted(a.name for a in template.atoms if a.element.symbol != "H")
    energy = OpenMMEnergy(system, platform="Reference").energy(system.reference_xyz[None])
    assert np.isfinite(energy).all() and energy[0] < 0.0  # minimized, no clashes


def test_alanine_tripeptide_has_42_atoms_and_three_phi_psi_pairs():
    system = MolecularSystem.from_sequence("aaa")  # lower case accepted
    assert system.n_atoms == 42 and system.name == "ace-AAA-nme"
    import mdtraj

    traj = mdtraj.Trajectory(system.reference_xyz[None], system.topology)
    assert mdtraj.compute_phi(traj)[1].shape == (1, 3) and mdtraj.compute_psi(traj)[1].shape == (1, 3)


@pytest.mark.parametrize("bad, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("AXA", "'X' at position 2"),
    ("AA1", "'1' at position 3"),
])
def test_bad_sequences_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        check_sequence(bad)
    with pytest.raises(ValueError, match=message):
        MolecularSystem.from_sequence(bad)


def test_sequence_and_pdb_together_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="either a sequence or a PDB"):
        MolecularSystem.from_spec(sequence="AA", pdb=tmp_path / "x.pdb")


def test_builds_of_a_sequence_are_identical_and_leave_the_callers_random_stream():
    """Modeller places hydrogens from Python's global random stream: the build seeds it (and restores it),
    so two builds agree on every position, including which methyl hydrogen is H1, H2 or H3."""
    import random

    random.seed(11)
    expected = random.random()
    random.seed(11)
    a, b = MolecularSystem.from_sequence("AA"), MolecularSystem.from_sequence("AA")
    assert random.random() == expected
    assert np.array_equal(a.initial_xyz, b.initial_xyz) and np.array_equal(a.reference_xyz, b.reference_xyz)
