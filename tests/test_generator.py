import mdtraj
import numpy as np
import pytest
import torch

from trade_md import units
from trade_md.flows import FlowConfig
from trade_md.generator import BoltzmannGenerator, ModelFileError, Samples
from trade_md.targets import BoltzmannTarget

SMALL = {"hidden": [32], "bins": 4}


@pytest.fixture(scope="module")
def bg(ala2):
    torch.manual_seed(0)
    model = BoltzmannGenerator.for_system(ala2, reference_temperature=600.0, flow=SMALL)
    with torch.no_grad():  # move away from the identity so the tests see a non-trivial flow
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("factor", [0.5, 1.0, 1.7])
def test_sampler_and_density_agree(bg, factor):
    T = 600.0 * factor
    x, lp = bg.density.sample(64, T)
    assert x.shape == (64, 22, 3)
    torch.testing.assert_close(bg.density.log_prob(x, T), lp, rtol=0, atol=1e-8)


def test_per_sample_temperatures(bg):
    T = torch.tensor([300.0, 600.0, 900.0])
    x, lp = bg.density.sample(3, T)
    single = torch.stack([bg.density.log_prob(x[i:i + 1], float(T[i]))[0] for i in range(3)])
    torch.testing.assert_close(lp, single, rtol=0, atol=1e-8)


def test_density_depends_on_temperature(bg, ala2_frames):
    x = torch.tensor(ala2_frames[:8])
    assert not torch.allclose(bg.log_prob(x, 300.0), bg.log_prob(x, 600.0))


def test_samples_carry_energies_and_weights(bg, ala2):
    s = bg.sample(50, 450.0)
    assert len(s) == 50 and s.xyz.dtype == np.float32
    from trade_md.energy import OpenMMEnergy

    np.testing.assert_allclose(s.energies, OpenMMEnergy(ala2).energy(s.xyz.astype(np.float64)), rtol=1e-9)
    finite = np.isfinite(s.energies)
    np.testing.assert_allclose(s.log_weights[finite],
                               -s.energies[finite] / (units.KB * 450.0) - s.log_prob[finite], rtol=1e-12)
    assert 1.0 <= s.ess() <= 50.0
    w = s.weights()
    assert w.sum() == pytest.approx(1.0) and np.all(w >= 0)
    r = s.resample(20, seed=1)
    assert len(r) == 20 and np.all(r.log_weights == 0)


def test_a_generator_is_a_density_and_a_target(bg, ala2):
    """Built like bgflow's BoltzmannGenerator(prior, flow, target): energies and weights come from the target."""
    seen = []

    def energy(x):
        seen.append(tuple(x.shape))
        return torch.full((x.shape[0],), 10.0, dtype=x.dtype)

    s = BoltzmannGenerator(bg.density, BoltzmannTarget(energy), ala2).sample(6, 300.0)
    assert seen == [(6, 22, 3)] and np.all(s.energies == 10.0)
    np.testing.assert_allclose(s.log_weights, -10.0 / (units.KB * 300.0) - s.log_prob, rtol=1e-12)
    bare = BoltzmannGenerator(bg.density)  # no target, no system: samples without energies only
    assert bare.sample(3, 300.0, energies=False).topology.n_atoms == 22
    with pytest.raises(ValueError, match="a target or a MolecularSystem"):
        bare.sample(3, 300.0)


def test_samples_save_load_round_trip(bg, ala2, tmp_path):
    s = bg.sample(20, np.linspace(300.0, 700.0, 20))
    path = tmp_path / "s.h5"
    s.save(path)
    t = Samples.load(path, system=ala2)
    np.testing.assert_array_equal(t.xyz, s.xyz)
    for name in ("log_prob", "temperature", "energies", "log_weights"):
        np.testing.assert_array_equal(getattr(t, name), getattr(s, name))
    assert mdtraj.load(str(path)).n_frames == 20


def test_samples_save_refuses_to_overwrite_by_default(bg, tmp_path):
    path = tmp_path / "s.h5"
    path.write_bytes(b"precious")
    s = bg.sample(5, 450.0, energies=False)
    with pytest.raises(FileExistsError, match=f"{path} exists.*overwrite"):
        s.save(path)
    assert path.read_bytes() == b"precious"
    s.save(path, overwrite=True)
    assert len(Samples.load(path)) == 5


def test_model_save_load_identical_log_prob(bg, ala2_frames, tmp_path):
    path = tmp_path / "m.pt"
    bg.save(path)
    again = BoltzmannGenerator.load(path)
    x = torch.tensor(ala2_frames[:10])
    torch.testing.assert_close(again.log_prob(x, 450.0), bg.log_prob(x, 450.0), rtol=0, atol=0)
    assert again.reference_temperature == 600.0
    # positions of another floating dtype (MD frames are float32) are converted to the model's
    single = again.float()
    torch.testing.assert_close(single.log_prob(x, 450.0), single.log_prob(x.float(), 450.0), rtol=0, atol=0)
    torch.testing.assert_close(single.log_prob(x, 450.0), bg.log_prob(x, 450.0).float(), rtol=1e-4, atol=1e-3)


def test_truncated_and_foreign_model_files(bg, tmp_path):
    path = tmp_path / "m.pt"
    bg.save(path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        BoltzmannGenerator.load(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a trade_md"):
        BoltzmannGenerator.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        BoltzmannGenerator.load(tmp_path / "missing.pt")


def test_reference_frames_set_scaling_that_covers_md(ala2, ala2_frames):
    model = BoltzmannGenerator.for_system(ala2, 600.0, reference_frames=ala2_frames, flow=SMALL)
    ic, _ = model.ic(torch.tensor(ala2_frames))
    bounded = [i for i, k in enumerate(model.ic.kinds) if k != "torsion"]
    assert ic[:, bounded].min() > 0.1 and ic[:, bounded].max() < 0.9
    assert torch.isfinite(model.log_prob(torch.tensor(ala2_frames), 600.0)).all()
    # torsions about a bond (phi, psi, methyl rotors, omega) stay circular even
    # when 20 ps of MD barely moves them; placements against a sibling are narrow
    kinds = np.array(model.ic.kinds)
    z, bonds = model.ic.zmatrix, {frozenset(b) for b in model.ic.zmatrix.bonds.tolist()}
    tkinds = kinds[-len(z.torsions):]
    sibling = np.array([frozenset((q[1], q[3])) in bonds for q in z.torsions.tolist()])
    assert (tkinds[~sibling] == "torsion").all() and (tkinds[sibling] == "narrow_torsion").all()
    assert sibling.sum() >= 10


def test_bad_inputs(bg):
    with pytest.raises(ValueError, match="shape"):
        bg.log_prob(torch.zeros(2, 21, 3), 300.0)
    with pytest.raises(ValueError, match="temperature"):
        bg.sample(5, -3.0)
    with pytest.raises(ValueError, match="shape"):
        bg.sample(5, np.array([300.0, 400.0]))


def test_flow_config_keys_are_strict(ala2):
    from trade_md.config import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'bins'"):
        BoltzmannGenerator.for_system(ala2, 600.0, flow={"binz": 4})
    assert isinstance(BoltzmannGenerator.for_system(ala2, 600.0, flow=FlowConfig(bins=4)).flow.config, FlowConfig)


def test_repr_is_one_line(bg, ala2):
    text = repr(bg)
    assert "\n" not in text and len(text) < 200
    assert f"n_atoms={ala2.n_atoms}" in text and f"dims={bg.density.ic.dim}" in text and "T0=" in text
