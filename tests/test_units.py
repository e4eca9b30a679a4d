import numpy as np
import pytest
import torch

from trade_md import units


def test_kb_matches_openmm():
    import openmm.unit as u

    kb = (u.MOLAR_GAS_CONSTANT_R).value_in_unit(u.kilojoule_per_mole / u.kelvin)
    assert units.KB == pytest.approx(kb, rel=1e-9)


def test_beta_temperature_round_trip():
    T = np.array([250.0, 300.0, 700.0])
    np.testing.assert_allclose(units.temperature_from_beta(units.beta(T)), T, rtol=1e-14)
    assert units.kT(300.0) == pytest.approx(2.494338785, rel=1e-8)


def test_dlogq_dT_is_finite_difference_of_log_q():
    U = torch.tensor([-120.0, 0.0, 35.5, 1e3])
    T = torch.tensor([250.0, 300.0, 450.0, 700.0])
    h = 1e-3
    fd = (-(U / (units.KB * (T + h))) + U / (units.KB * (T - h))) / (2 * h)
    torch.testing.assert_close(units.dlogq_dT(U, T), fd, rtol=1e-6, atol=0)
    # the research code's -u/T^3 would differ by a factor 1/T
    assert not torch.allclose(units.dlogq_dT(U, T), -U / (units.KB * T**3) * -1)


def test_per_sample_temperature_gives_per_sample_reduced_energy():
    U = np.array([10.0, 20.0, 30.0])
    T = np.array([300.0, 400.0, 500.0])
    np.testing.assert_allclose(units.reduced_energy(U, T), U / (units.KB * T))
    np.testing.assert_allclose(units.reduced_energy(U, 300.0), U / (units.KB * 300.0))


def test_column_temperature_is_rejected_not_broadcast():
    U = torch.zeros(4)
    with pytest.raises(ValueError, match="shape"):
        units.dlogq_dT(U, torch.full((4, 1), 300.0))
    with pytest.raises(ValueError, match="shape"):
        units.reduced_energy(torch.zeros(4, 1), 300.0)


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan"), float("inf")])
def test_nonpositive_temperature_is_an_error(bad):
    with pytest.raises(ValueError, match="temperature"):
        units.beta(bad)
    with pytest.raises(ValueError, match="temperature"):
        units.dlogq_dT(np.zeros(2), np.array([300.0, bad]))
