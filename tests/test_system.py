import numpy as np
import openmm
import openmm.app as app
import pytest

from trade_md.system import ForceFieldError, MolecularSystem
from trade_md.trajectory import atom_signature


def test_alanine_dipeptide_matches_the_paper_setup(ala2):
    assert ala2.n_atoms == 22
    assert len(ala2.constraints) == 12  # every bond to hydrogen
    h = {a.index for a in ala2.topology.atoms if a.element.symbol == "H"}
    for i, j in ala2.constraints.pairs:
        assert (i in h) != (j in h)
    assert np.all((ala2.constraints.lengths > 0.09) & (ala2.constraints.lengths < 0.115))  # C-H, N-H in nm
    forces = {f.__class__.__name__ for f in ala2.openmm_system.getForces()}
    assert {"GBSAOBCForce", "CMMotionRemover", "NonbondedForce"} <= forces
    nb = [f for f in ala2.openmm_system.getForces() if isinstance(f, openmm.NonbondedForce)][0]
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    assert ala2.masses.shape == (22,) and ala2.masses.sum() == pytest.approx(144.17, abs=0.05)


def test_reference_structure_is_minimized(ala2):
    ctx = openmm.Context(ala2.openmm_system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(ala2.initial_xyz)
    e_init = ctx.getState(getEnergy=True).getPotentialEnergy()._value
    ctx.setPositions(ala2.reference_xyz)
    e_min = ctx.getState(getEnergy=True).getPotentialEnergy()._value
    assert e_min < e_init - 1.0
    # constraints are satisfied by the reference structure
    i, j = ala2.constraints.pairs.T
    d = np.linalg.norm(ala2.reference_xyz[i] - ala2.reference_xyz[j], axis=1)
    np.testing.assert_allclose(d, ala2.constraints.lengths, atol=1e-6)


def test_state_round_trip(ala2):
    again = MolecularSystem.from_state(ala2.to_state())
    np.testing.assert_array_equal(again.reference_xyz, ala2.reference_xyz)
    assert atom_signature(again.topology) == atom_signature(ala2.topology)
    assert again.openmm_system.getNumConstraints() == 12


def test_from_openmm_wraps_an_existing_system(ala2):
    s = MolecularSystem.from_openmm(ala2.openmm_system, ala2.openmm_topology, ala2.reference_xyz, minimize=False)
    np.testing.assert_array_equal(s.reference_xyz, ala2.reference_xyz)


def test_missing_pdb_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pdb"):
        MolecularSystem.from_pdb(tmp_path / "nope.pdb")


def _write_pdb(path, topology, xyz):
    import openmm.unit as u

    with open(path, "w") as fh:
        app.PDBFile.writeFile(topology, xyz * u.nanometer, fh)


def test_unknown_residue_is_a_clear_error(ala2, tmp_path):
    text = ala2.to_state()["pdb"].replace("ALA", "XYZ")
    pdb = tmp_path / "weird.pdb"
    pdb.write_text(text)
    with pytest.raises(ForceFieldError, match="residue"):
        MolecularSystem.from_pdb(pdb)


def test_missing_forcefield_file_is_a_clear_error(ala2, tmp_path):
    pdb = tmp_path / "a.pdb"
    pdb.write_text(ala2.to_state()["pdb"])
    with pytest.raises(ForceFieldError, match="no_such_ff.xml"):
        MolecularSystem.from_pdb(pdb, forcefield=["no_such_ff.xml"])


def test_bad_constraint_name(ala2, tmp_path):
    pdb = tmp_path / "a.pdb"
    pdb.write_text(ala2.to_state()["pdb"])
    with pytest.raises(ValueError, match="constraint"):
        MolecularSystem.from_pdb(pdb, constraints="Hbondz")


def test_equivalent_hydrogens_are_relabelled_to_the_reference_handedness(ala2):
    """The three methyls of alanine dipeptide; a frame with two methyl hydrogens exchanged (another
    program's or another build's labels) is relabelled back, with the same energy, and nothing else moves."""
    groups = ala2.equivalent_hydrogens
    assert len(groups) == 3  # ACE, ALA and NME methyls: carbon centres, three hydrogens each
    for h1, h2, c, z in groups:
        assert ala2.topology.atom(c).element.symbol == "C"
        assert {ala2.topology.atom(i).element.symbol for i in (h1, h2, z)} == {"H"}
    frames = np.repeat(ala2.reference_xyz[None], 3, axis=0)
    h1, h2 = groups[1][:2]
    frames[1, [h1, h2]] = frames[1, [h2, h1]]  # exchanged labels in frame 1
    for g in groups:  # every group of frame 2
        frames[2, [g[0], g[1]]] = frames[2, [g[1], g[0]]]
    fixed = ala2.match_hydrogen_labels(frames)
    np.testing.assert_array_equal(fixed, np.repeat(ala2.reference_xyz[None], 3, axis=0))
    np.testing.assert_array_equal(ala2.match_hydrogen_labels(fixed), fixed)  # idempotent
    ctx = openmm.Context(ala2.openmm_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies = []
    for x in frames:
        ctx.setPositions(x)
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy()._value)
    assert max(energies) - min(energies) < 1e-6 * abs(energies[0])  # the exchange is a symmetry of the energy
    with pytest.raises(ValueError, match="shape"):
        ala2.match_hydrogen_labels(frames[:, :5])
