import numpy as np
import openmm
import openmm.app as app
import pytest
import torch

from trade_md import units
from trade_md.energy import OpenMMEnergy, select_platform

pytestmark = pytest.mark.openmm


def _direct(system, xyz):
    """Independent single-Context computation with Quantity positions."""
    import openmm.unit as u

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    e, f = [], []
    for x in xyz:
        ctx.setPositions(u.Quantity([openmm.Vec3(*r) for r in x], u.nanometer))
        e.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
        f.append(ctx.getState(getForces=True).getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))
    return np.array(e), np.array(f)


def harmonic_system(k=(100.0, 250.0, 400.0), center=(0.1, -0.2, 0.3)):
    """Three particles in a CustomExternalForce well U = sum_i k_i/2 |r_i - c|^2."""
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*k*((x-cx)^2+(y-cy)^2+(z-cz)^2)")
    for name in ("k", "cx", "cy", "cz"):
        force.addPerParticleParameter(name)
    top = app.Topology()
    chain = top.addChain()
    res = top.addResidue("UNL", chain)
    for ki in k:
        idx = system.addParticle(12.0)
        force.addParticle(idx, [ki, *center])
        top.addAtom(f"C{idx}", app.element.carbon, res)
    system.addForce(force)
    return system, top, np.asarray(k), np.asarray(center)


@pytest.fixture(scope="module")
def ala2_energy(ala2):
    return OpenMMEnergy(ala2)


def test_matches_direct_openmm(ala2, ala2_energy, ala2_frames):
    x = ala2_frames[:20]
    e_ref, f_ref = _direct(ala2.openmm_system, x)
    e, f = ala2_energy.energy_and_forces(x)
    np.testing.assert_allclose(e, e_ref, rtol=1e-6)
    np.testing.assert_allclose(f, f_ref, rtol=1e-6, atol=1e-6 * np.abs(f_ref).max())
    np.testing.assert_allclose(ala2_energy.energy(x), e_ref, rtol=1e-6)
    np.testing.assert_allclose(ala2_energy.forces(x), f_ref, rtol=1e-6, atol=1e-6 * np.abs(f_ref).max())


def test_torch_in_torch_out(ala2_energy, ala2_frames):
    x = torch.tensor(ala2_frames[:4], dtype=torch.float32)
    e, f = ala2_energy.energy_and_forces(x)
    assert isinstance(e, torch.Tensor) and e.dtype == torch.float32 and e.shape == (4,)
    assert f.shape == (4, 22, 3) and f.dtype == torch.float32
    assert isinstance(ala2_energy.energy(ala2_frames[:4]), np.ndarray)


def test_analytic_harmonic_energy_and_force(rng):
    system, top, k, c = harmonic_system()
    bridge = OpenMMEnergy(system)
    x = rng.normal(size=(5, 3, 3))
    e, f = bridge.energy_and_forces(x)
    e_exact = 0.5 * (k[None, :] * ((x - c) ** 2).sum(-1)).sum(-1)
    f_exact = -k[None, :, None] * (x - c)
    np.testing.assert_allclose(e, e_exact, rtol=1e-10)
    np.testing.assert_allclose(f, f_exact, rtol=1e-10, atol=1e-12)


def test_reduced_energy_gradcheck(rng):
    system, *_ = harmonic_system()
    bridge = OpenMMEnergy(system)
    x = torch.tensor(rng.normal(size=(3, 3, 3)), requires_grad=True)
    T = torch.tensor([250.0, 300.0, 700.0], requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, T: bridge.reduced_energy(x, T), (x, T), eps=1e-6, atol=1e-6)


def test_reduced_energy_gradient_on_alanine_is_minus_force(ala2_energy, ala2_frames):
    x = torch.tensor(ala2_frames[:3], requires_grad=True)
    red = ala2_energy.reduced_energy(x, 300.0)
    red.sum().backward()
    f = ala2_energy.forces(ala2_frames[:3])
    np.testing.assert_allclose(x.grad.numpy(), -f / (units.KB * 300.0), rtol=1e-10)


def test_per_sample_temperatures(ala2_energy, ala2_frames):
    x = ala2_frames[:3]
    T = np.array([250.0, 400.0, 700.0])
    np.testing.assert_allclose(ala2_energy.reduced_energy(x, T), ala2_energy.energy(x) / (units.KB * T), rtol=1e-12)


def test_overlapping_atoms_give_inf_energy_and_zero_force(ala2, ala2_frames):
    bridge = OpenMMEnergy(ala2)
    x = ala2_frames[:4].copy()
    x[1, 5] = x[1, 4]  # carbonyl O on top of C: non-finite Coulomb/LJ
    e, f = bridge.energy_and_forces(x)
    assert np.isinf(e[1]) and e[1] > 0
    assert np.all(f[1] == 0)
    assert np.isfinite(e[[0, 2, 3]]).all()
    assert bridge.stats.n_nonfinite == 1 and bridge.stats.n_evaluations == 4


def test_two_workers_agree_with_one(ala2, ala2_energy, ala2_frames):
    bridge = OpenMMEnergy(ala2, n_workers=2)
    try:
        e2, f2 = bridge.energy_and_forces(ala2_frames[:16])
    finally:
        bridge.close()
    e1, f1 = ala2_energy.energy_and_forces(ala2_frames[:16])
    np.testing.assert_allclose(e2, e1, rtol=1e-12)
    np.testing.assert_allclose(f2, f1, rtol=1e-12, atol=1e-9)


def test_cpu_platform_by_name(ala2, ala2_frames):
    bridge = OpenMMEnergy(ala2, platform="cpu")
    assert bridge.platform == "CPU" and bridge.properties["Threads"] == "1"
    e_ref, _ = _direct(ala2.openmm_system, ala2_frames[:3])
    np.testing.assert_allclose(bridge.energy(ala2_frames[:3]), e_ref, rtol=1e-5)


def test_automatic_platform_choice():
    assert select_platform(None, n_atoms=22) in {"CUDA", "OpenCL", "Reference"}


@pytest.mark.gpu
def test_cuda_matches_reference(ala2, ala2_frames):
    bridge = OpenMMEnergy(ala2, platform="CUDA")
    e_ref, _ = _direct(ala2.openmm_system, ala2_frames[:8])
    np.testing.assert_allclose(bridge.energy(ala2_frames[:8]), e_ref, rtol=1e-4, atol=1e-3)
    x = torch.tensor(ala2_frames[:8], device="cuda")
    assert bridge.energy(x).device.type == "cuda"


@pytest.mark.gpu
def test_concurrent_cuda_contexts_equal_one_context_and_reference(ala2, ala2_frames):
    """The GPU design (docs/architecture.md): k contexts used concurrently, each exact; 1e-3 relative per frame."""
    frames = ala2_frames[:64]
    four = OpenMMEnergy(ala2, platform="CUDA", n_workers=4)
    try:
        e4, f4 = four.energy_and_forces(frames)
    finally:
        four.close()
    e1, f1 = OpenMMEnergy(ala2, platform="CUDA").energy_and_forces(frames)
    e_ref, f_ref = OpenMMEnergy(ala2, platform="Reference").energy_and_forces(frames)
    for e, f, e_base, f_base in ((e4, f4, e1, f1), (e1, f1, e_ref, f_ref)):
        assert np.all(np.abs(e - e_base) <= 1e-3 * np.maximum(np.abs(e_base), 1.0))
        df = np.linalg.norm((f - f_base).reshape(len(f), -1), axis=1)
        assert np.all(df <= 1e-3 * np.linalg.norm(f_base.reshape(len(f), -1), axis=1))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: np.zeros((2, 21, 3)), "atoms"),
        (lambda: np.zeros((22, 3)), "shape"),
        (lambda: np.full((1, 22, 3), np.nan), "NaN"),
    ],
)
def test_bad_coordinates(ala2_energy, make, match):
    with pytest.raises(ValueError, match=match):
        ala2_energy.energy(make())


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.tolist(),
        lambda x: [list(map(list, frame)) for frame in x.astype(np.float32)],
        lambda x: x.astype(np.float32),
        lambda x: x.astype(np.longdouble),
        lambda x: x.astype(">f8"),  # big-endian
        lambda x: np.asfortranarray(x),
        lambda x: x[:, ::-1][:, ::-1],  # a non-contiguous view
    ],
)
def test_array_likes_give_the_energies_of_float64_numpy(ala2_energy, ala2_frames, convert):
    x = ala2_frames[:3]
    e, f = ala2_energy.energy_and_forces(x)
    y = convert(x)
    tol = dict(rtol=1e-4, atol=1e-3) if np.asarray(y).dtype == np.float32 else dict(rtol=1e-12, atol=1e-9)
    e2 = ala2_energy.energy(y)
    assert isinstance(e2, np.ndarray) and e2.dtype == np.float64 and e2.shape == (3,)
    np.testing.assert_allclose(e2, e, **tol)
    np.testing.assert_allclose(ala2_energy.forces(y), f, **{k: 100 * v for k, v in tol.items()})


def test_half_precision_and_integer_tensors(ala2_energy, ala2_frames):
    x = torch.tensor(ala2_frames[:2])
    for dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
        e = ala2_energy.energy(x.to(dtype))
        assert e.dtype == dtype and e.shape == (2,)
        torch.testing.assert_close(e.double(), ala2_energy.energy(x.to(dtype).double()).to(dtype).double())
    grid = torch.arange(66).reshape(1, 22, 3)  # integer nm: atoms far apart, a finite energy
    e_int = ala2_energy.energy(grid)
    assert e_int.dtype == torch.float64  # energies are not truncated to integers
    np.testing.assert_allclose(e_int.numpy(), ala2_energy.energy(grid.numpy()), rtol=1e-12)
    assert np.isfinite(e_int.numpy()).all() and e_int.numpy()[0] != np.round(e_int.numpy()[0])


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ([[[0.0, 0.0, 0.0]] * 22, [[0.0, 0.0]] * 22], ValueError, r"\(batch, 22, 3\); got a ragged sequence"),
        ("coordinates", TypeError, r"\(batch, 22, 3\).*dtype"),
        (np.zeros((1, 22, 3), dtype=complex), TypeError, r"\(batch, 22, 3\).*complex"),
        (np.zeros((22, 3)), ValueError, r"\(batch, 22, 3\); got shape \(22, 3\).*x\[None\]"),
        ([[0.1, 0.2, 0.3]] * 22, ValueError, r"x\[None\]"),
        (np.zeros((2, 22)), ValueError, r"in nm of shape \(batch, 22, 3\); got shape \(2, 22\)"),
        (torch.zeros(2, 22, 3, dtype=torch.bool), TypeError, "dtype torch.bool"),
    ],
)
def test_what_the_energy_needs_is_said_precisely(ala2_energy, bad, error, match):
    with pytest.raises(error, match=match):
        ala2_energy.energy(bad)
    with pytest.raises(error, match=match):
        ala2_energy.forces(bad)


def test_bad_temperature(ala2_energy, ala2_frames):
    with pytest.raises(ValueError, match="temperature"):
        ala2_energy.reduced_energy(ala2_frames[:2], -1.0)


def test_unknown_platform_and_property(ala2):
    with pytest.raises(ValueError, match="platform"):
        OpenMMEnergy(ala2, platform="Quantum")
    with pytest.raises(ValueError, match="property"):
        OpenMMEnergy(ala2, platform="CPU", properties={"Treads": 2})
