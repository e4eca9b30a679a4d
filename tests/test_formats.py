"""Any MD trajectory as a reference, samples in every mdtraj format (issue 13 items 1 and 2)."""
import json

import mdtraj
import numpy as np
import pytest
import torch

from trade_md.cli import main
from trade_md.data import ReferenceData
from trade_md.energy import OpenMMEnergy
from trade_md.generator import BoltzmannGenerator, Samples
from trade_md.trajectory import sidecar_path


@pytest.fixture(scope="module")
def md(tmp_path_factory, ala2, ala2_frames):
    """Plain OpenMM MD at 600 K written by mdtraj: DCD, XTC and a PDB topology, no trade_md metadata."""
    d = tmp_path_factory.mktemp("md")
    traj = mdtraj.Trajectory(ala2_frames.astype(np.float32), ala2.topology, time=np.arange(200) * 0.1)
    traj.save_dcd(str(d / "run.dcd"))
    traj.save_xtc(str(d / "run.xtc"))
    traj[0].save_pdb(str(d / "system.pdb"))
    # 22 atoms too, but two of them (the alanine's CA and HA) named and typed the other way round
    top = ala2.topology.copy()
    a, b = top.atom(8), top.atom(9)
    assert (a.name, b.name) == ("CA", "HA")
    (a.name, a.element), (b.name, b.element) = (b.name, b.element), (a.name, a.element)
    mdtraj.Trajectory(ala2_frames[:1].astype(np.float32), top).save_pdb(str(d / "swapped.pdb"))
    torch.manual_seed(0)
    model = BoltzmannGenerator.for_system(ala2, 600.0, reference_frames=ala2_frames, flow={"hidden": [16], "bins": 4})
    model.save(d / "m.pt")
    return d


def test_dcd_with_pdb_topology_gets_openmm_energies(md, ala2, ala2_frames):
    ref = ReferenceData.load(md / "run.dcd", system=ala2, top=md / "system.pdb", temperature=600.0)
    assert len(ref) == 200 and ref.temperature == 600.0
    np.testing.assert_allclose(ref.xyz, ala2_frames, atol=1e-5)  # DCD stores float32 Angstrom
    expected = OpenMMEnergy(ala2).energy(ref.xyz.astype(np.float64))
    np.testing.assert_allclose(ref.energies, expected, rtol=0, atol=1e-6)
    assert np.all(np.isfinite(ref.energies)) and ref.energies.std() > 1.0
    assert ref.metadata["source"] == str(md / "run.dcd")
    assert ref.time.shape == (200,)  # DCD stores no times: mdtraj numbers the frames


def test_from_mdtraj_takes_given_energies_or_computes_them(ala2, ala2_frames):
    traj = mdtraj.Trajectory(ala2_frames[:5], ala2.topology)
    given = ReferenceData.from_mdtraj(traj, 300.0, energies=np.arange(5.0))
    np.testing.assert_array_equal(given.energies, np.arange(5.0))
    computed = ReferenceData.from_mdtraj(traj, 300.0, system=ala2)
    np.testing.assert_allclose(computed.energies, OpenMMEnergy(ala2).energy(traj.xyz.astype(np.float64)))
    with pytest.raises(ValueError, match="no potential energies: give the system"):
        ReferenceData.from_mdtraj(traj, 300.0)


def test_same_atom_count_other_molecule_names_the_first_mismatch(md, ala2):
    with pytest.raises(ValueError) as info:
        ReferenceData.load(md / "run.dcd", system=ala2, top=md / "swapped.pdb", temperature=600.0)
    message = str(info.value)
    assert "run.dcd holds a different molecule: atom 8 is" in message and "\n" not in message
    assert "2 of 22 atoms differ" in message


@pytest.mark.parametrize("case, kwargs, message", [
    ("no temperature", {"top": "system.pdb"}, "records no temperature: give temperature="),
    ("no topology", {"temperature": 600.0}, "is a DCD file, which holds no topology"),
    ("missing topology", {"top": "none.pdb", "temperature": 600.0}, "topology file not found"),
    ("bad temperature", {"top": "system.pdb", "temperature": -3.0}, "temperature"),
])
def test_missing_pieces_are_named(md, case, kwargs, message):
    if "top" in kwargs:
        kwargs = dict(kwargs, top=md / kwargs["top"])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        ReferenceData.load(md / "run.dcd", **kwargs)


def test_unknown_format_and_garbage_file(md, tmp_path):
    (tmp_path / "run.abc").write_text("x")
    with pytest.raises(ValueError, match="unknown trajectory format '.abc'"):
        ReferenceData.load(tmp_path / "run.abc", temperature=300.0)
    (tmp_path / "bad.dcd").write_bytes(b"garbage" * 20)
    with pytest.raises(ValueError, match="bad.dcd is not a readable DCD trajectory"):
        ReferenceData.load(tmp_path / "bad.dcd", top=md / "system.pdb", temperature=300.0)


def test_trade_md_file_checks_a_given_temperature(md, ala2, ala2_frames, tmp_path):
    ReferenceData(ala2_frames, np.zeros(200), 600.0, np.arange(200.0), ala2.topology).save(tmp_path / "r.h5")
    assert ReferenceData.load(tmp_path / "r.h5", temperature=600.0).temperature == 600.0
    with pytest.raises(ValueError, match="holds MD at 600 K, not at the 300 K given"):
        ReferenceData.load(tmp_path / "r.h5", temperature=300.0)


def test_foreign_hdf5_is_read_through_mdtraj(ala2, ala2_frames, tmp_path):
    mdtraj.Trajectory(ala2_frames[:20], ala2.topology).save_hdf5(str(tmp_path / "other.h5"))
    ref = ReferenceData.load(tmp_path / "other.h5", system=ala2, temperature=600.0)
    assert len(ref) == 20 and np.all(np.isfinite(ref.energies))


def test_cli_evaluates_dcd_and_xtc_references(md, capsys):
    d = md
    assert main(["sample", "--model", str(d / "m.pt"), "--temperature", "600", "--n", "64",
                 "--out", str(d / "s.h5")]) == 0
    for name in ("run.dcd", "run.xtc"):
        out = d / f"report_{name}"
        assert main(["evaluate", "--samples", str(d / "s.h5"), "--reference", str(d / name), "--top",
                     str(d / "system.pdb"), "--temperature", "600", "--model", str(d / "m.pt"),
                     "--out", str(out)]) == 0, capsys.readouterr().err
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(metrics) == {"600 K"} and 0 <= metrics["600 K"]["js"] <= np.log(2)
    # wrong molecule, same atom count: refused, naming the atom
    capsys.readouterr()
    assert main(["evaluate", "--samples", str(d / "s.h5"), "--reference", str(d / "run.dcd"), "--top",
                 str(d / "swapped.pdb"), "--temperature", "600", "--model", str(d / "m.pt"),
                 "--out", str(d / "r_bad")]) == 2
    err = capsys.readouterr().err
    assert "holds a different molecule: atom 8 is" in err and len(err.strip().splitlines()) == 1
    # without a model nothing computes the energies; a temperature per reference
    assert main(["evaluate", "--samples", str(d / "s.h5"), "--reference", str(d / "run.dcd"), "--top",
                 str(d / "system.pdb"), "--temperature", "600", "--out", str(d / "r_nomodel")]) == 2
    assert "has no potential energies: give the system (--model)" in capsys.readouterr().err
    assert main(["evaluate", "--samples", str(d / "s.h5"), "--reference", str(d / "run.dcd"), "--top",
                 str(d / "system.pdb"), "--temperature", "600,450", "--out", str(d / "r_two")]) == 2
    assert "2 temperatures for 1 --reference files" in capsys.readouterr().err


# ------------------------------------------------------------------ samples in other formats
@pytest.fixture(scope="module")
def samples(md, ala2):
    torch.manual_seed(3)
    model = BoltzmannGenerator.load(md / "m.pt")
    s = model.sample(50, np.repeat([450.0, 600.0], 25))
    s.log_weights[3] = -np.inf  # a clash: must survive the side-car
    s.energies[3] = np.inf
    return s


@pytest.mark.parametrize("suffix", [".dcd", ".xtc", ".pdb", ".nc", ".trr"])
def test_samples_in_other_formats_load_back_with_identical_weights(samples, ala2, tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    samples.save(path)
    assert sidecar_path(path) == tmp_path / "s.weights.csv" and sidecar_path(path).is_file()
    again = Samples.load(path, system=ala2)
    for name in ("log_weights", "energies", "log_prob", "temperature"):
        np.testing.assert_array_equal(getattr(again, name), getattr(samples, name), err_msg=name)
    np.testing.assert_allclose(again.xyz, samples.xyz, atol=2e-3 if suffix in (".xtc", ".pdb") else 1e-5)
    assert mdtraj.load(str(path), top=ala2.topology).n_frames == 50
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        samples.save(path)


def test_side_car_must_belong_to_its_frames(samples, ala2, tmp_path):
    samples.save(tmp_path / "s.dcd")
    (tmp_path / "t.dcd").write_bytes((tmp_path / "s.dcd").read_bytes())
    with pytest.raises(FileNotFoundError, match="t.dcd has no side-car .*t.weights.csv"):
        Samples.load(tmp_path / "t.dcd", system=ala2)
    samples.select(slice(0, 10)).save(tmp_path / "u.dcd")
    (tmp_path / "s.dcd").write_bytes((tmp_path / "u.dcd").read_bytes())  # frames replaced, side-car kept
    with pytest.raises(ValueError, match="s.weights.csv does not belong to .*s.dcd"):
        Samples.load(tmp_path / "s.dcd", system=ala2)


def test_cli_sample_dcd_with_resampling(md, ala2, capsys):
    d = md
    assert main(["sample", "--model", str(d / "m.pt"), "--temperature", "600", "--n", "80", "--resample", "30",
                 "--out", str(d / "r.dcd")]) == 0
    assert "r.weights.csv" in capsys.readouterr().out
    s = Samples.load(d / "r.dcd", top=d / "system.pdb")
    assert len(s) == 30 and np.all(s.log_weights == 0) and np.all(np.isfinite(s.energies))
    assert s.metadata["resampled_from"] == 80
    # the side-car is checked before sampling: refused without --overwrite
    d.joinpath("q.weights.csv").write_text("keep")
    assert main(["sample", "--model", str(d / "m.pt"), "--temperature", "600", "--n", "8",
                 "--out", str(d / "q.dcd")]) == 2
    assert "q.weights.csv exists" in capsys.readouterr().err and not (d / "q.dcd").exists()
    assert main(["sample", "--model", str(d / "m.pt"), "--temperature", "600", "--n", "8", "--no-energies",
                 "--resample", "4", "--out", str(d / "z.dcd")]) == 2
    assert "--resample draws by importance weight" in capsys.readouterr().err
    assert main(["sample", "--model", str(d / "m.pt"), "--temperature", "600", "--n", "8",
                 "--out", str(d / "z.txt")]) == 2
    assert "unknown trajectory format '.txt'" in capsys.readouterr().err
    # DCD samples + side-car evaluate like HDF5 ones
    assert main(["evaluate", "--samples", str(d / "r.dcd"), "--reference", str(d / "run.dcd"), "--top",
                 str(d / "system.pdb"), "--temperature", "600", "--model", str(d / "m.pt"),
                 "--out", str(d / "report_r")]) == 0
