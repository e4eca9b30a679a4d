"""Parallel tempering (trade_md.tempering): exports, exactness of resume, equipartition, agreement with MD."""
import numpy as np
import openmm
import pytest

from trade_md import units
from trade_md.energy import OpenMMEnergy
from trade_md.tempering import _Tempering, parallel_tempering

from .test_simulate import harmonic_oscillators, statistical_inefficiency


def test_exports_one_set_per_temperature(ala2, tmp_path):
    res = parallel_tempering(ala2, [330.0, 300.0, 360.0], nanoseconds=0.01, equilibration_ps=1.0,
                             seed=4, out=tmp_path / "pt", progress=False)
    assert sorted(res) == [300.0, 330.0, 360.0]
    for t, data in res.items():
        assert len(data) == 10 and data.temperature == t
        np.testing.assert_allclose(data.energies, OpenMMEnergy(ala2).energy(data.xyz.astype(np.float64)))
        assert data.metadata["method"] == "parallel_tempering"
    acc = res[300.0].metadata["swap_acceptance"]
    assert len(acc) == 2 and all(0.0 <= a <= 1.0 for a in acc) and max(acc) > 0
    # every production iteration holds each replica exactly once
    replicas = np.stack([res[t].metadata["replica"] for t in sorted(res)], axis=1)
    assert (np.sort(replicas, axis=1) == np.arange(3)).all()


_RUN = dict(nanoseconds=0.012, equilibration_ps=2.0, seed=9, checkpoint_frames=4, progress=False)


def _interrupted_run(system, folder, monkeypatch, n_saves: int) -> None:
    """Start a run in ``folder`` and interrupt it (KeyboardInterrupt) at its ``n_saves``-th checkpoint write."""
    save = _Tempering._save
    calls = {"n": 0}

    def dying_save(self, *args):
        calls["n"] += 1
        if calls["n"] == n_saves:
            raise KeyboardInterrupt
        save(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(_Tempering, "_save", dying_save)
        with pytest.raises(KeyboardInterrupt):
            parallel_tempering(system, [300.0, 400.0], out=folder, **_RUN)


def test_killed_run_resumes_to_identical_frames(ala2, tmp_path, monkeypatch):
    full = parallel_tempering(ala2, [300.0, 400.0], out=tmp_path / "full", **_RUN)
    _interrupted_run(ala2, tmp_path / "resumed", monkeypatch, n_saves=3)  # initial state + one chunk saved
    resumed = parallel_tempering(ala2, [300.0, 400.0], out=tmp_path / "resumed", **_RUN)
    for t in full:
        np.testing.assert_array_equal(full[t].xyz, resumed[t].xyz)
        assert full[t].metadata["swap_acceptance"] == resumed[t].metadata["swap_acceptance"]


def test_damaged_checkpoint_falls_back_to_the_previous_one(ala2, tmp_path, monkeypatch):
    full = parallel_tempering(ala2, [300.0, 400.0], out=tmp_path / "full", **_RUN)
    _interrupted_run(ala2, tmp_path / "pt", monkeypatch, n_saves=4)  # initial state + two chunks saved
    ckpt = tmp_path / "pt" / "checkpoint.json"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated by a crash of the disk, not of our write
    with pytest.warns(UserWarning, match="checkpoint.json is damaged.*previous checkpoint"):
        resumed = parallel_tempering(ala2, [300.0, 400.0], out=tmp_path / "pt", **_RUN)
    for t in full:
        np.testing.assert_array_equal(full[t].xyz, resumed[t].xyz)
    ckpt.write_text("garbage")
    (tmp_path / "pt" / "checkpoint.prev.json").write_text("garbage")
    with pytest.raises(ValueError, match="checkpoint.json is damaged.*checkpoint.prev.json is damaged"):
        parallel_tempering(ala2, [300.0, 400.0], out=tmp_path / "pt", **_RUN)


def test_other_settings_in_the_same_folder_are_refused(ala2, tmp_path):
    parallel_tempering(ala2, [300.0, 330.0], 0.002, equilibration_ps=1.0, out=tmp_path / "pt", progress=False)
    with pytest.raises(ValueError, match="other settings"):
        parallel_tempering(ala2, [300.0, 360.0], 0.002, equilibration_ps=1.0, out=tmp_path / "pt", progress=False)
    again = parallel_tempering(ala2, [300.0, 360.0], 0.002, equilibration_ps=1.0, out=tmp_path / "pt",
                               overwrite=True, progress=False)
    assert sorted(again) == [300.0, 360.0]


@pytest.mark.parametrize("temps", [[300.0], [300.0, 300.0], [300.0, -5.0]])
def test_bad_temperatures(ala2, temps):
    with pytest.raises(ValueError, match="temperatures"):
        parallel_tempering(ala2, temps, 0.001, progress=False)


def test_samples_the_right_temperature():
    """Equipartition at both temperatures: a configuration that swapped in from the hot state
    carries velocities rescaled to the cold one."""
    system = harmonic_oscillators(n=2)  # few degrees of freedom: most swaps are accepted
    res = parallel_tempering(system, [300.0, 450.0], nanoseconds=0.1, report_interval_ps=0.1, timestep_fs=1.0,
                             friction_per_ps=0.2, equilibration_ps=2.0, seed=5, progress=False)
    assert min(res[300.0].metadata["swap_acceptance"]) > 0.3
    assert res[300.0].metadata["round_trips"] > 10
    for t, data in res.items():
        expected = 1.5 * units.KB * t * system.n_atoms
        g = statistical_inefficiency(data.energies)
        stderr = data.energies.std() * np.sqrt(g / len(data))
        assert abs(data.energies.mean() - expected) < 6 * stderr, (t, data.energies.mean(), expected, stderr)


def _md_mean_energy(system, temperature, nanoseconds, seed):
    """Plain Langevin MD directly on OpenMM (independent of trade_md.simulate): mean U and its error."""
    integ = openmm.LangevinMiddleIntegrator(temperature, 1.0, 0.002)
    integ.setRandomNumberSeed(seed)
    ctx = openmm.Context(system.openmm_system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(system.reference_xyz)
    ctx.setVelocitiesToTemperature(temperature, seed)
    integ.step(50_000)
    u = []
    for _ in range(int(nanoseconds * 1000)):
        integ.step(500)
        u.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
    u = np.asarray(u)
    return u.mean(), u.std() * np.sqrt(statistical_inefficiency(u) / len(u))


@pytest.mark.slow
def test_mean_energy_equals_plain_md_at_lowest_and_highest_temperature(ala2):
    """The openmmtools-driven PT this replaced was 0.6 kJ/mol (300 K) and 1.5 kJ/mol (600 K) too high."""
    res = parallel_tempering(ala2, [300.0, 380.0, 480.0, 600.0], nanoseconds=4.0, seed=3, progress=False)
    for t in (300.0, 600.0):
        u = res[t].energies
        pt_mean, pt_err = u.mean(), u.std() * np.sqrt(statistical_inefficiency(u) / len(u))
        md_mean, md_err = _md_mean_energy(ala2, t, 4.0, seed=11)
        assert abs(pt_mean - md_mean) < 3 * np.hypot(pt_err, md_err), (t, pt_mean, pt_err, md_mean, md_err)
