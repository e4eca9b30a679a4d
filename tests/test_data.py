import mdtraj
import numpy as np
import pytest

from trade_md.data import ReferenceData


@pytest.fixture
def data(ala2, ala2_frames):
    n = len(ala2_frames)
    return ReferenceData(ala2_frames, np.linspace(-50, 50, n), 600.0, np.arange(1, n + 1) * 0.1,
                         ala2.topology, {"seed": 7})


def test_save_load_round_trip(data, tmp_path, ala2):
    path = tmp_path / "ref.h5"
    data.save(path)
    again = ReferenceData.load(path, system=ala2)
    np.testing.assert_array_equal(again.xyz, data.xyz)
    np.testing.assert_array_equal(again.energies, data.energies)
    np.testing.assert_array_equal(again.time, data.time)
    assert again.temperature == 600.0 and again.metadata == {"seed": 7}
    assert mdtraj.load(str(path)).n_frames == len(data)
    with pytest.raises(FileExistsError):
        data.save(path)


def test_split_is_deterministic_and_disjoint(data):
    a = data.split([0.8, 0.2], seed=3, block_frames=10)
    b = data.split([0.8, 0.2], seed=3, block_frames=10)
    c = data.split([0.8, 0.2], seed=4, block_frames=10)
    np.testing.assert_array_equal(a[1].time, b[1].time)
    assert not np.array_equal(a[1].time, c[1].time)
    assert len(a[0]) + len(a[1]) == len(data) and len(a[1]) == 40
    assert not set(a[0].time) & set(a[1].time)
    assert np.all(np.diff(a[0].time) > 0)


def test_subsample(data):
    s = data.subsample(10)
    assert len(s) == 20
    np.testing.assert_array_equal(s.xyz, data.xyz[::10])
    with pytest.raises(ValueError, match="stride"):
        data.subsample(0)


def test_bad_split_fractions(data):
    with pytest.raises(ValueError, match="fractions"):
        data.split([0.5, 0.6])


def test_loading_another_molecule_says_what_differs(data, tmp_path):
    path = tmp_path / "ref.h5"
    data.save(path)
    from tests.test_simulate import harmonic_oscillators

    with pytest.raises(ValueError, match="22 atoms"):
        ReferenceData.load(path, system=harmonic_oscillators())


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        ReferenceData.load(tmp_path / "none.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="HDF5"):
        ReferenceData.load(bad)


def test_bad_temperature_and_shapes(ala2, ala2_frames):
    with pytest.raises(ValueError, match="temperature"):
        ReferenceData(ala2_frames, np.zeros(200), -1.0, np.arange(200.0), ala2.topology)
    with pytest.raises(ValueError, match="shape"):
        ReferenceData(ala2_frames, np.zeros(199), 300.0, np.arange(200.0), ala2.topology)


def test_samples_file_is_not_an_md_reference(ala2, ala2_frames, tmp_path):
    from trade_md.generator import Samples

    path = tmp_path / "samples.h5"
    Samples(ala2_frames[:10], np.zeros(10), 600.0, ala2.topology, np.zeros(10), np.zeros(10)).save(path)
    with pytest.raises(ValueError, match=f"{path} holds generated samples, not an MD reference"):
        ReferenceData.load(path)
    with pytest.raises(ValueError, match=f"{path} holds generated samples, not an MD reference"):
        ReferenceData.load(path, system=ala2)


def test_md_reference_is_not_a_samples_file(data, tmp_path):
    from trade_md.generator import Samples

    path = tmp_path / "ref.h5"
    data.save(path)
    with pytest.raises(ValueError, match=f"{path} holds an MD reference, not generated samples"):
        Samples.load(path)
