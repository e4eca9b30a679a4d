"""Tests of trade_md.coordinates: Z-matrix construction and the Cartesian <-> IC bijection."""
from __future__ import annotations

import math
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

from trade_md.coordinates import InternalCoordinates, ZMatrix
from trade_md.system import ConstrainedBonds, MolecularSystem

pytestmark = pytest.mark.openmm

STYLES = ["proper", "relative"]
# round-trip tolerances on interatomic distances, nm
DIST_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)  # alanine dipeptide backbone torsions
N, CA, C, CB = 6, 8, 14, 10


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def md_frames(ala2: MolecularSystem) -> torch.Tensor:
    """200 frames of 600 K Langevin MD, 0.1 ps apart, float64 nm (B, 22, 3).

    Unlike conftest's ``ala2_frames`` the constraint tolerance is tight
    (1e-10): the transform holds constrained bonds exactly at their nominal
    length, and the round trip is checked to 1e-10 nm.
    """
    integrator = openmm.LangevinMiddleIntegrator(600 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
    integrator.setConstraintTolerance(1e-10)
    integrator.setRandomNumberSeed(2024)
    ctx = openmm.Context(ala2.openmm_system, integrator, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(ala2.reference_xyz)
    ctx.setVelocitiesToTemperature(600 * unit.kelvin, 7)
    integrator.step(500)  # 1 ps equilibration
    frames = []
    for _ in range(200):
        integrator.step(50)
        frames.append(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return torch.tensor(np.array(frames), dtype=torch.float64)


@pytest.fixture(scope="module")
def toluene() -> MolecularSystem:
    """Toluene (GAFF, from openmmtools' test data), H-bond constraints: a ring, no backbone."""
    import openmmtools

    path = Path(openmmtools.__file__).parent / "data" / "benzene-toluene-implicit" / "solvent"
    prmtop = app.AmberPrmtopFile(str(path.with_suffix(".prmtop")))
    inpcrd = app.AmberInpcrdFile(str(path.with_suffix(".inpcrd")))
    system = prmtop.createSystem(constraints=app.HBonds)
    return MolecularSystem.from_openmm(system, prmtop.topology, inpcrd.positions, name="toluene")


def _distances(x: torch.Tensor) -> torch.Tensor:
    """All interatomic distances (B, n, n), computed directly (cdist's matmul path loses precision)."""
    return (x[:, :, None] - x[:, None]).norm(dim=-1)


def _bonded(top: md.Topology) -> set[frozenset]:
    return {frozenset((a.index, b.index)) for a, b in top.bonds}


def _dihedral(x: torch.Tensor, i: int, j: int, k: int, l: int) -> torch.Tensor:
    """Reference dihedral (B,) via mdtraj, radians."""
    traj = md.Trajectory(x.detach().double().numpy(), None)
    return torch.as_tensor(md.compute_dihedrals(traj, [[i, j, k, l]])[:, 0], dtype=torch.float64)


def _circular_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi


def _external(x: torch.Tensor, seeds) -> torch.Tensor:
    """6 rigid-body coordinates (B, 6): position of s0, polar and azimuthal angle of s0->s1
    in the lab frame, and the rotation of s2 about the s0-s1 axis (a dihedral to a lab point)."""
    s0, s1, s2 = (int(s) for s in seeds)
    x0, x1, x2 = x[:, s0], x[:, s1], x[:, s2]
    v = x1 - x0
    polar = torch.atan2(v[:, :2].norm(dim=-1), v[:, 2])
    azimuth = torch.atan2(v[:, 1], v[:, 0])
    p = x0 + torch.tensor([0.3, -0.2, 1.0], dtype=x.dtype)  # a lab-fixed direction off the axis
    b1, b2, b3 = x0 - p, x1 - x0, x2 - x1
    c1, c2 = torch.cross(b2, b3, dim=-1), torch.cross(b1, b2, dim=-1)
    spin = torch.atan2((b1 * c1).sum(-1) * b2.norm(dim=-1), (c1 * c2).sum(-1))
    return torch.cat([x0, polar[:, None], azimuth[:, None], spin[:, None]], dim=1)


def _full_slogdet(ict: InternalCoordinates, x: torch.Tensor, extra_pairs: np.ndarray) -> torch.Tensor:
    """log|det| of the square Jacobian of x -> (ic, lengths of extra_pairs, 6 external) per frame."""
    n = ict.n_atoms
    out = []
    for frame in x:
        def full(flat: torch.Tensor) -> torch.Tensor:
            y = flat.reshape(1, n, 3)
            ic, _ = ict(y)
            lengths = (y[:, extra_pairs[:, 0]] - y[:, extra_pairs[:, 1]]).norm(dim=-1)
            return torch.cat([ic, lengths, _external(y, ict.zmatrix.seeds)], dim=1)[0]

        jac = torch.autograd.functional.jacobian(full, frame.reshape(-1), vectorize=True)
        assert jac.shape == (3 * n, 3 * n)
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        out.append(logabs)
    return torch.stack(out)


def _log_sin_polar(x: torch.Tensor, seeds) -> torch.Tensor:
    v = x[:, int(seeds[1])] - x[:, int(seeds[0])]
    return torch.log(v[:, :2].norm(dim=-1) / v.norm(dim=-1))


def _random_rotations(b: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(b, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    return q * torch.linalg.det(q)[:, None, None]  # proper rotations, det = +1


# ------------------------------------------------------------------ Z-matrix
@pytest.mark.parametrize("style", STYLES)
def test_zmatrix_from_topology_alanine(ala2: MolecularSystem, style: str) -> None:
    """Seeds are N, CA, C; every reference is placed before use and bonded as specified;
    phi and psi are single torsion coordinates."""
    z = ZMatrix.from_topology(ala2.topology, torsion_style=style)
    assert sorted(z.seeds.tolist()) == [N, CA, C] and z.seeds[1] == CA
    bonded = _bonded(ala2.topology)
    assert frozenset(z.seeds[:2].tolist()) in bonded and frozenset(z.seeds[1:].tolist()) in bonded
    for a, b, c, d in z.rows.tolist():
        assert frozenset((a, b)) in bonded and frozenset((b, c)) in bonded
        # proper style: every torsion of alanine dipeptide is a chain dihedral
        proper_torsion, improper_torsion = frozenset((c, d)) in bonded, frozenset((b, d)) in bonded
        assert proper_torsion if style == "proper" else proper_torsion or improper_torsion
    assert sorted(np.concatenate([z.seeds, z.rows[:, 0]]).tolist()) == list(range(22))
    assert z.torsion_row(*PHI) == z.torsion_row(*PHI[::-1])  # either orientation
    assert z.torsion_row(*PSI) == z.torsion_row(*PSI[::-1])
    with pytest.raises(KeyError, match="not a coordinate"):
        z.torsion_row(0, 1, 2, 3)
    # the ic vector reports the same indices
    ict = InternalCoordinates(z, ala2)
    assert ict.coordinate_atoms[ict.torsion_index(*PHI)] in (PHI, PHI[::-1])
    assert ict.coordinate_atoms[ict.torsion_index(*PSI)] in (PSI, PSI[::-1])


def test_relative_style_gives_narrow_branch_torsions(ala2: MolecularSystem, md_frames: torch.Tensor) -> None:
    """With relative torsions the chirality at CA (CB placed against N and C) is one narrow coordinate."""
    ict = InternalCoordinates.for_system(ala2, torsion_style="relative")
    row = ict.zmatrix.rows[ict.zmatrix.rows[:, 0] == CB][0]
    assert set(row[1:].tolist()) == {CA, N, C}
    ic, _ = ict(md_frames)
    cb = ic[:, ict.torsion_index(*row.tolist())]
    assert cb.std() < 0.2  # rad; the proper CB torsion follows phi over its whole range


def test_from_rows_accepts_valid_and_names_errors() -> None:
    rows = [[3, 2, 1, 0], [4, 3, 2, 1]]
    z = ZMatrix.from_rows([0, 1, 2], rows, n_atoms=5)
    assert z.n_atoms == 5 and z.bonds.shape == (4, 2) and z.angles.shape == (3, 3)
    with pytest.raises(ValueError, match=r"row 0 \(atom 3\): torsion partner 4 is not placed before row 0"):
        ZMatrix.from_rows([0, 1, 2], [[3, 2, 1, 4], [4, 3, 2, 1]], n_atoms=5)
    with pytest.raises(ValueError, match=r"row 1 places atom 3, which is already placed as row 0"):
        ZMatrix.from_rows([0, 1, 2], [[3, 2, 1, 0], [3, 2, 1, 0]], n_atoms=5)
    with pytest.raises(ValueError, match=r"row 1 places atom 2, which is already placed as seed 2"):
        ZMatrix.from_rows([0, 1, 2], [[3, 2, 1, 0], [2, 3, 1, 0]], n_atoms=5)
    with pytest.raises(ValueError, match="four distinct atoms"):
        ZMatrix.from_rows([0, 1, 2], [[3, 2, 2, 0], [4, 3, 2, 1]], n_atoms=5)
    with pytest.raises(ValueError, match="needs 2 rows"):
        ZMatrix.from_rows([0, 1, 2], [[3, 2, 1, 0]], n_atoms=5)
    with pytest.raises(ValueError, match="out of range"):
        ZMatrix.from_rows([0, 1, 2], [[3, 2, 1, 0], [7, 3, 2, 1]], n_atoms=5)
    with pytest.raises(ValueError, match="at least 4 atoms"):
        ZMatrix.from_rows([0, 1, 2], np.zeros((0, 4), int), n_atoms=3)
    with pytest.raises(TypeError, match="integer"):
        ZMatrix.from_rows([0, 1, 2], [[3.5, 2, 1, 0], [4, 3, 2, 1]], n_atoms=5)


def _chain_topology(elements: list[str], bonds: list[tuple[int, int]]) -> md.Topology:
    top = md.Topology()
    res = top.add_residue("MOL", top.add_chain())
    atoms = [top.add_atom(f"{el}{i}", md.element.get_by_symbol(el), res) for i, el in enumerate(elements)]
    for i, j in bonds:
        top.add_bond(atoms[i], atoms[j])
    return top


def test_from_topology_rejects_small_and_disconnected() -> None:
    water = _chain_topology(["H", "O", "H"], [(0, 1), (1, 2)])
    with pytest.raises(ValueError, match="at least 4 atoms"):
        ZMatrix.from_topology(water)
    two_waters = _chain_topology(["H", "O", "H", "H", "O", "H"], [(0, 1), (1, 2), (3, 4), (4, 5)])
    with pytest.raises(ValueError, match="disconnected: 3 of 6 atoms"):
        ZMatrix.from_topology(two_waters)
    with pytest.raises(ValueError, match="torsion_style"):
        ZMatrix.from_topology(_chain_topology(["H", "O", "O", "H"], [(0, 1), (1, 2), (2, 3)]), "bogus")


def test_from_topology_four_atoms_and_branched() -> None:
    """Smallest molecule (H2O2) and a branched, non-peptide one (neopentane-like C(CH3)4 skeleton)."""
    z = ZMatrix.from_topology(_chain_topology(["H", "O", "O", "H"], [(0, 1), (1, 2), (2, 3)]))
    assert z.seeds[1] in (1, 2) and len(z.rows) == 1
    skeleton = _chain_topology(["C"] * 5 + ["H"] * 3, [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (1, 6), (1, 7)])
    z = ZMatrix.from_topology(skeleton)
    assert z.seeds[1] in (0, 1)
    x = torch.randn(3, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.15
    ict = InternalCoordinates(z, None, x[0])
    x2, _ = ict.inverse(ict(x)[0])
    torch.testing.assert_close(_distances(x2), _distances(x), atol=1e-10, rtol=0)


# --------------------------------------------------------- transform basics
def test_dimensions_and_kinds(ala2: MolecularSystem) -> None:
    ict = InternalCoordinates.for_system(ala2)
    assert ict.dim == 48 and ict.n_constrained == 12
    assert ict.kinds == ["bond"] * 9 + ["angle"] * 20 + ["torsion"] * 19
    assert len(ict.coordinate_atoms) == 48
    free = InternalCoordinates(ict.zmatrix, None, ala2.reference_xyz)
    assert free.dim == 60 and free.kinds.count("bond") == 21
    ic, ladj = ict(torch.as_tensor(ala2.reference_xyz)[None])
    assert ic.shape == (1, 48) and ladj.shape == (1,)
    # the reference maps to the middle of every bond and (unclipped) angle range
    torch.testing.assert_close(ic[0, :9], torch.full((9,), 0.5, dtype=torch.float64))
    unclipped = (ict.angle_lo > 0) & (ict.angle_hi < math.pi)
    torch.testing.assert_close(ic[0, 9:29][unclipped], torch.full((int(unclipped.sum()),), 0.5, dtype=torch.float64))


def test_md_frames_stay_in_domain(ala2: MolecularSystem, md_frames: torch.Tensor) -> None:
    """600 K MD stays well inside [0, 1] for bonds and angles; torsions lie in [-pi, pi)."""
    ict = InternalCoordinates.for_system(ala2)
    ic, _ = ict(md_frames)
    scaled = ic[:, : ict.n_free_bonds + 20]
    assert scaled.min() > 0.1 and scaled.max() < 0.9
    torsions = ic[:, ict.n_free_bonds + 20:]
    assert torsions.min() >= -math.pi and torsions.max() < math.pi


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("constrained", [True, False])
def test_round_trip_distances(ala2, md_frames, dtype, style, constrained) -> None:
    """x -> ic -> x reproduces every interatomic distance on MD frames."""
    z = ZMatrix.from_topology(ala2.topology, style)
    ict = InternalCoordinates(z, ala2 if constrained else None, ala2.reference_xyz)
    x = md_frames.to(dtype)
    ic, ladj = ict(x)
    x2, ladj_inv = ict.inverse(ic)
    assert ic.dtype == x2.dtype == ladj.dtype == dtype
    err = (_distances(x2.double()) - _distances(md_frames)).abs().max()
    assert err < DIST_TOL[dtype]
    # canonical frame: s0 at the origin, s1 on +x, s2 in the xy-plane
    s0, s1, s2 = z.seeds
    assert x2[:, s0].abs().max() == 0 and x2[:, s1, 1:].abs().max() == 0 and x2[:, s2, 2].abs().max() == 0
    # forward and inverse log-determinants cancel
    atol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(ladj + ladj_inv, torch.zeros_like(ladj), atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("style", STYLES)
def test_ic_round_trip(ala2, dtype, style) -> None:
    """ic -> x -> ic is the identity for random coordinates in the domain."""
    ict = InternalCoordinates.for_system(ala2, torsion_style=style)
    g = torch.Generator().manual_seed(11)
    nb = ict.n_free_bonds + 20
    ic = torch.cat([0.2 + 0.6 * torch.rand(64, nb, generator=g, dtype=torch.float64),
                    (2 * torch.rand(64, 19, generator=g, dtype=torch.float64) - 1) * math.pi], 1).to(dtype)
    x, _ = ict.inverse(ic)
    ic2, _ = ict(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(ic2[:, :nb], ic[:, :nb], atol=tol, rtol=0)
    assert _circular_diff(ic2[:, nb:].double(), ic[:, nb:].double()).abs().max() < tol * 10
    assert ict.n_degenerate == 0


def test_constrained_bonds_are_held(ala2: MolecularSystem) -> None:
    ict = InternalCoordinates.for_system(ala2)
    ic = torch.rand(8, ict.dim, dtype=torch.float64)
    x, _ = ict.inverse(ic)
    pairs = torch.as_tensor(ala2.constraints.pairs)
    r = (x[:, pairs[:, 0]] - x[:, pairs[:, 1]]).norm(dim=-1)
    torch.testing.assert_close(r, torch.as_tensor(ala2.constraints.lengths).expand_as(r), atol=1e-12, rtol=0)


# ------------------------------------------------------------ log-determinant
def test_ladj_equals_autograd_slogdet_without_constraints(ala2, md_frames) -> None:
    """Full map (60 internal + 6 external coordinates) against the autograd Jacobian.

    With the external coordinates (position of s0, polar/azimuthal angle of
    s0->s1, spin about it) the Jacobian is square; its log|det| is our ladj
    plus the external part -log sin(polar).
    """
    ict = InternalCoordinates(ZMatrix.from_topology(ala2.topology), None, ala2.reference_xyz)
    g = torch.Generator().manual_seed(5)
    x = md_frames[::50] + 0.003 * torch.randn(4, 22, 3, generator=g, dtype=torch.float64)
    x = torch.einsum("bij,bnj->bni", _random_rotations(4, g), x)
    _, ladj = ict(x)
    expected = _full_slogdet(ict, x, np.zeros((0, 2), np.int64))
    torch.testing.assert_close(ladj - _log_sin_polar(x, ict.zmatrix.seeds), expected, atol=1e-8, rtol=0)


def test_ladj_with_constraints_differs_by_fixed_bond_terms(ala2, md_frames) -> None:
    """With constraints the full map adds the 12 constrained lengths as coordinates.

    ladj counts the fixed bonds at their constrained length r0, so the full
    log|det| differs from ladj - log sin(polar) by -2 sum log(r / r0): the same
    (zero) on every constraint-satisfying MD frame, and exactly that on
    frames that violate the constraints.
    """
    ict = InternalCoordinates.for_system(ala2)
    pairs = ala2.constraints.pairs
    r0 = torch.as_tensor(ala2.constraints.lengths)

    def fixed_term(x: torch.Tensor) -> torch.Tensor:
        r = (x[:, pairs[:, 0]] - x[:, pairs[:, 1]]).norm(dim=-1)
        return -2 * torch.log(r / r0).sum(1)

    x_md = md_frames[::40]
    diff = _full_slogdet(ict, x_md, pairs) - (ict(x_md)[1] - _log_sin_polar(x_md, ict.zmatrix.seeds))
    assert diff.max() - diff.min() < 1e-8 and diff.abs().max() < 1e-8
    g = torch.Generator().manual_seed(9)
    x_off = md_frames[:3] + 0.002 * torch.randn(3, 22, 3, generator=g, dtype=torch.float64)
    diff = _full_slogdet(ict, x_off, pairs) - (ict(x_off)[1] - _log_sin_polar(x_off, ict.zmatrix.seeds))
    torch.testing.assert_close(diff, fixed_term(x_off), atol=1e-8, rtol=0)


def test_gradients_are_exact(ala2) -> None:
    """gradcheck of forward and inverse (the in-place generation placement included)."""
    ict = InternalCoordinates.for_system(ala2, torsion_style="relative")
    g = torch.Generator().manual_seed(1)
    x = (torch.as_tensor(ala2.reference_xyz) + 0.005 * torch.randn(2, 22, 3, generator=g, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda y: ict(y), (x.requires_grad_(True),))
    ic = ict(x.detach())[0].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: ict.inverse(y), (ic,))


# ------------------------------------------------------------- geometry facts
def test_invariance_under_rigid_motion(ala2, md_frames) -> None:
    ict = InternalCoordinates.for_system(ala2)
    g = torch.Generator().manual_seed(4)
    x = md_frames[:16]
    rot = _random_rotations(16, g)
    moved = torch.einsum("bij,bnj->bni", rot, x) + 3 * torch.randn(16, 1, 3, generator=g, dtype=torch.float64)
    ic, ladj = ict(x)
    ic_m, ladj_m = ict(moved)
    torch.testing.assert_close(ic_m, ic, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_m, ladj, atol=1e-10, rtol=0)
    # a mirror image flips every torsion and keeps bonds and angles
    ic_mirror, _ = ict(x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    nb = ict.n_free_bonds + 20
    torch.testing.assert_close(ic_mirror[:, :nb], ic[:, :nb], atol=1e-10, rtol=0)
    assert _circular_diff(ic_mirror[:, nb:], -ic[:, nb:]).abs().max() < 1e-10


def test_phi_psi_equal_mdtraj(ala2, md_frames) -> None:
    ict = InternalCoordinates.for_system(ala2)
    ic, _ = ict(md_frames)
    traj = md.Trajectory(md_frames.numpy(), ala2.topology)
    (phi_atoms,), phi = md.compute_phi(traj)
    (psi_atoms,), psi = md.compute_psi(traj)
    assert tuple(phi_atoms) == PHI and tuple(psi_atoms) == PSI
    for atoms, ref in ((PHI, phi[:, 0]), (PSI, psi[:, 0])):
        mine = ic[:, ict.torsion_index(*atoms)]
        assert _circular_diff(mine, torch.as_tensor(ref, dtype=torch.float64)).abs().max() < 1e-5  # mdtraj: float32
    assert (ic[:, ict.torsion_index(*PHI)].std() > 0.2)  # phi moves at 600 K: a real test


def test_torsion_wrap_at_pi(ala2) -> None:
    """A torsion of pi and of -pi give the same structure; forward returns -pi (domain [-pi, pi))."""
    ict = InternalCoordinates.for_system(ala2)
    ic0, _ = ict(torch.as_tensor(ala2.reference_xyz)[None])
    k = ict.torsion_index(*PHI)
    ic = ic0.repeat(4, 1)
    ic[:, k] = torch.tensor([math.pi, -math.pi, math.pi - 1e-9, -math.pi + 1e-9], dtype=torch.float64)
    x, _ = ict.inverse(ic)
    torch.testing.assert_close(x[0], x[1], atol=1e-12, rtol=0)
    back, _ = ict(x)
    assert back[0, k] == back[1, k] and -math.pi <= back[0, k] < -math.pi + 1e-9
    assert abs(back[2, k] - (math.pi - 1e-9)) < 1e-8 and abs(back[3, k] - (-math.pi + 1e-9)) < 1e-8
    assert _circular_diff(_dihedral(x, *PHI), ic[:, k]).abs().max() < 1e-6  # the structure has that phi


def _ca_signed_volume(x: torch.Tensor) -> torch.Tensor:
    """((N - CA) x (C - CA)) . (CB - CA), nm^3; its sign is the handedness at CA."""
    return (torch.cross(x[:, N] - x[:, CA], x[:, C] - x[:, CA], dim=-1) * (x[:, CB] - x[:, CA])).sum(-1)


@pytest.mark.parametrize("style", STYLES)
def test_chirality_is_kept(ala2, md_frames, style) -> None:
    """L-alanine stays L through x -> ic -> x, and a mirror image (D) stays D."""
    ict = InternalCoordinates.for_system(ala2, torsion_style=style)
    vol = _ca_signed_volume(md_frames)
    assert (torch.sign(vol) == torch.sign(vol[0])).all()  # one handedness along the MD run
    for x in (md_frames, md_frames * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)):
        x2, _ = ict.inverse(ict(x)[0])
        torch.testing.assert_close(_ca_signed_volume(x2), _ca_signed_volume(x), atol=1e-10, rtol=0)


def test_degenerate_angle_is_finite_and_counted(ala2) -> None:
    """An atom collinear with its bond and angle partners: finite ic, ladj and gradients."""
    z = ZMatrix.from_topology(ala2.topology)
    ict = InternalCoordinates(z, None, ala2.reference_xyz)
    x = torch.as_tensor(ala2.reference_xyz).repeat(3, 1, 1)
    a, b, c, _ = z.rows[3].tolist()
    direction = (x[1, b] - x[1, c]) / (x[1, b] - x[1, c]).norm()
    x[1, a] = x[1, b] + 0.12 * direction  # angle a-b-c exactly pi
    x = x.requires_grad_(True)
    ic, ladj = ict(x)
    assert ict.n_degenerate == 1
    assert torch.isfinite(ic).all() and torch.isfinite(ladj).all()
    (grad,) = torch.autograd.grad(ladj.sum() + ic.sum(), x)
    assert torch.isfinite(grad).all()
    x2, ladj2 = ict.inverse(ic.detach())
    assert torch.isfinite(x2).all() and torch.isfinite(ladj2).all() and ict.n_degenerate == 1
    # out-of-domain angles (sin < 0) are clamped and counted, never NaN
    ic_bad = ic.detach().clone()
    ic_bad[:, ict.n_free_bonds + 5] = 5.0
    x3, ladj3 = ict.inverse(ic_bad)
    assert torch.isfinite(x3).all() and torch.isfinite(ladj3).all() and ict.n_degenerate >= 3


# ---------------------------------------------------------------- bad input
def test_bad_input_is_rejected(ala2) -> None:
    ict = InternalCoordinates.for_system(ala2)
    x = torch.as_tensor(ala2.reference_xyz)[None]
    with pytest.raises(ValueError, match=r"shape \(batch, n_atoms, 3\)"):
        ict(x[0])
    with pytest.raises(ValueError, match="21 atoms but this transform has 22"):
        ict(x[:, :21])
    with pytest.raises(ValueError, match="NaN"):
        ict(x * float("nan"))
    with pytest.raises(TypeError, match="floating-point"):
        ict(x.long())
    with pytest.raises(ValueError, match="47 coordinates but this transform has 48"):
        ict.inverse(torch.zeros(2, 47, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        ict.inverse(torch.full((2, 48), float("nan")))
    z = ict.zmatrix
    with pytest.raises(ValueError, match="reference structure"):
        InternalCoordinates(z, ala2.constraints)
    with pytest.raises(ValueError, match=r"reference must have shape \(22, 3\)"):
        InternalCoordinates(z, None, ala2.reference_xyz[:5])
    with pytest.raises(ValueError, match="constraint between atoms 0 and 5"):
        InternalCoordinates(z, ConstrainedBonds(np.array([[0, 5]]), np.array([0.3])), ala2.reference_xyz)
    with pytest.raises(TypeError, match="constraints must be"):
        InternalCoordinates(z, "HBonds", ala2.reference_xyz)
    with pytest.raises(ValueError, match="bond_halfwidth must be below"):
        InternalCoordinates(z, None, ala2.reference_xyz, bond_halfwidth=0.2)
    with pytest.raises(ValueError, match=r"angle_halfwidth must be a scalar or have shape \(20,\)"):
        InternalCoordinates(z, None, ala2.reference_xyz, angle_halfwidth=np.ones(3))


def test_custom_halfwidths_and_state_dict(ala2) -> None:
    z = ZMatrix.from_topology(ala2.topology)
    ict = InternalCoordinates(z, ala2, bond_halfwidth=0.02, angle_halfwidth=np.full(20, 0.5))
    torch.testing.assert_close(ict.bond_hi - ict.bond_lo, torch.full((9,), 0.04, dtype=torch.float64))
    # scaling buffers are saved: a transform built around another reference can load them
    other = InternalCoordinates(z, ala2, reference=ala2.reference_xyz + 0.01, bond_halfwidth=0.02, angle_halfwidth=0.5)
    other.load_state_dict(ict.state_dict())
    x = torch.as_tensor(ala2.reference_xyz)[None]
    torch.testing.assert_close(other(x)[0], ict(x)[0])


def test_narrow_torsions_are_an_exact_affine_map(ala2, md_frames) -> None:
    """Narrow torsions: ic = (wrap(t - c) + w) / (2 w), ladj shifted by -log(2 w), exact round trip."""
    z = ZMatrix.from_topology(ala2.topology, "relative")
    circular = InternalCoordinates(z, ala2)
    width = np.full(19, math.pi)
    width[[1, 4, 9]] = [0.5, 1.0, 2.5]
    center = np.array([0.3, -3.0, 0.0, 1.0, 2.9] + [0.0] * 14)
    narrow = InternalCoordinates(z, ala2, torsion_halfwidth=width, torsion_center=center)
    t0 = circular.dim - 19
    assert [k for k in narrow.kinds[t0:]].count("narrow_torsion") == 3
    assert [narrow.kinds[t0 + i] for i in (1, 4, 9)] == ["narrow_torsion"] * 3
    ic_c, ladj_c = circular(md_frames)
    ic_n, ladj_n = narrow(md_frames)
    torch.testing.assert_close(ic_n[:, :t0 + 1], ic_c[:, :t0 + 1], atol=0, rtol=0)
    for i in (1, 4, 9):
        expected = (_circular_diff(ic_c[:, t0 + i], torch.tensor(center[i])) + width[i]) / (2 * width[i])
        torch.testing.assert_close(ic_n[:, t0 + i], expected.double(), atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj_n, ladj_c - np.log(2 * width[[1, 4, 9]]).sum(), atol=1e-10, rtol=0)
    x2, ladj_inv = narrow.inverse(ic_n)
    assert (_distances(x2) - _distances(md_frames)).abs().max() < DIST_TOL[torch.float64]
    torch.testing.assert_close(ladj_inv, -ladj_n, atol=1e-10, rtol=0)
    # the cut opposite the centre: a torsion just past it lands outside [0, 1], not wrapped back
    ic_out = ic_n[:2].clone()
    ic_out[:, t0 + 1] = torch.tensor([-0.1, 1.1], dtype=torch.float64)
    back, _ = narrow(narrow.inverse(ic_out)[0])
    torch.testing.assert_close(back[:, t0 + 1], ic_out[:, t0 + 1], atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="torsion_center"):
        InternalCoordinates(z, ala2, torsion_halfwidth=width, torsion_center=center[:5])
    with pytest.raises(ValueError, match="torsion_halfwidth"):
        InternalCoordinates(z, ala2, torsion_halfwidth=-width)


# ----------------------------------------------------- other molecules, devices
def test_general_molecule_toluene(toluene: MolecularSystem) -> None:
    """A ring with a methyl group and no backbone: ring closure, constraints, exact ladj."""
    z = ZMatrix.from_topology(toluene.topology)
    bonded = _bonded(toluene.topology)
    assert all(frozenset(r[:2]) in bonded and frozenset(r[1:3]) in bonded for r in z.rows.tolist())
    assert toluene.topology.atom(int(z.seeds[1])).element.symbol == "C"
    ict = InternalCoordinates(z, toluene)
    assert ict.dim == 3 * 15 - 6 - 8
    g = torch.Generator().manual_seed(8)
    x = torch.as_tensor(toluene.reference_xyz) + 0.003 * torch.randn(5, 15, 3, generator=g, dtype=torch.float64)
    free = InternalCoordinates(z, None, toluene.reference_xyz)
    x2, _ = free.inverse(free(x)[0])
    assert (_distances(x2) - _distances(x)).abs().max() < 1e-10
    _, ladj = free(x[:2])
    torch.testing.assert_close(ladj - _log_sin_polar(x[:2], z.seeds),
                               _full_slogdet(free, x[:2], np.zeros((0, 2), np.int64)), atol=1e-8, rtol=0)


def _protein_pdb() -> Path:
    pdbfixer = pytest.importorskip("pdbfixer")
    path = Path(pdbfixer.__file__).parent / "tests" / "data" / "test.pdb"
    if not path.is_file():
        pytest.skip("pdbfixer's test protein is not installed")
    return path


@pytest.mark.filterwarnings("ignore:Unlikely unit cell vectors")
@pytest.mark.parametrize("style", STYLES)
def test_protein_phi_psi_are_single_torsions(style: str) -> None:
    """A 36-residue protein with hydrogens, prolines and aromatic rings (596 atoms)."""
    traj = md.load(str(_protein_pdb()))
    z = ZMatrix.from_topology(traj.topology, torsion_style=style)
    (phi_atoms, phi), (psi_atoms, psi) = md.compute_phi(traj), md.compute_psi(traj)
    ict = InternalCoordinates(z, None, traj.xyz[0])
    x = torch.as_tensor(traj.xyz, dtype=torch.float64)
    ic, _ = ict(x)
    for atoms, ref in ((phi_atoms, phi), (psi_atoms, psi)):
        idx = [ict.torsion_index(*quad) for quad in atoms.tolist()]  # KeyError if one is missing
        assert _circular_diff(ic[0, idx], torch.as_tensor(ref[0], dtype=torch.float64)).abs().max() < 1e-5
    x2, _ = ict.inverse(ic)
    assert (_distances(x2) - _distances(x)).abs().max() < 1e-9


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(ala2, md_frames, dtype) -> None:
    ict = InternalCoordinates.for_system(ala2)
    x = md_frames.to(dtype)
    ic, ladj = ict(x)
    ict_gpu = InternalCoordinates.for_system(ala2).cuda()
    ic_g, ladj_g = ict_gpu(x.cuda())
    x_g, ladj_inv_g = ict_gpu.inverse(ic_g)
    assert x_g.device.type == "cuda" and x_g.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(ic_g.cpu(), ic, atol=tol, rtol=0)
    torch.testing.assert_close(ladj_g.cpu(), ladj, atol=tol * 100, rtol=0)
    assert (_distances(x_g.cpu().double()) - _distances(md_frames)).abs().max() < DIST_TOL[dtype]
