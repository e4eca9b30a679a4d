import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import pytest

from trade_md import units
from trade_md.data import ReferenceData
from trade_md.energy import OpenMMEnergy
from trade_md.simulate import SimulationSettings, simulate
from trade_md.system import MolecularSystem

pytestmark = pytest.mark.openmm


def harmonic_oscillators(n=8, k=2000.0):
    """n independent 3-D harmonic oscillators, U = k/2 |r|^2 (kJ/mol/nm^2), mass 12 Da."""
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*k*(x^2+y^2+z^2)")
    force.addGlobalParameter("k", k)
    top = app.Topology()
    res = top.addResidue("OSC", top.addChain())
    for i in range(n):
        system.addParticle(12.0)
        force.addParticle(i, [])
        top.addAtom(f"C{i}", app.element.carbon, res)
    system.addForce(force)
    xyz = np.random.default_rng(0).normal(0, 0.01, (n, 3))
    return MolecularSystem.from_openmm(system, top, xyz, name="oscillators", minimize=False)


def statistical_inefficiency(a: np.ndarray) -> float:
    """g = 1 + 2 sum_t (1 - t/N) C(t), summed until C(t) first drops below zero."""
    a = a - a.mean()
    n, var = len(a), a.var()
    g = 1.0
    for t in range(1, n // 2):
        c = np.dot(a[:-t], a[t:]) / ((n - t) * var)
        if c <= 0:
            break
        g += 2.0 * c * (1.0 - t / n)
    return g


@pytest.mark.parametrize("temperature", [300.0, 600.0])
def test_harmonic_oscillator_equipartition(temperature):
    system = harmonic_oscillators()
    data = simulate(system, temperature, nanoseconds=0.2, report_interval_ps=0.1, timestep_fs=1.0,
                    friction_per_ps=5.0, seed=3, equilibration_ps=5.0, progress=False)
    assert len(data) == 2000
    expected = 1.5 * units.KB * temperature * system.n_atoms
    g = statistical_inefficiency(data.energies)
    stderr = data.energies.std() * np.sqrt(g / len(data))
    assert abs(data.energies.mean() - expected) < 6 * stderr, (data.energies.mean(), expected, stderr)
    # and the test is sharp enough to see a 10 % temperature error
    assert 0.1 * expected > 6 * stderr


def test_saved_energies_match_openmm(ala2, tmp_path):
    out = tmp_path / "md.h5"
    simulate(ala2, 500.0, nanoseconds=0.02, seed=1, out=out, equilibration_ps=1.0, progress=False)
    traj = mdtraj.load(str(out))
    assert traj.n_frames == 20 and traj.n_atoms == 22
    data = ReferenceData.load(out, system=ala2)
    assert data.temperature == 500.0 and data.metadata["settings"]["seed"] == 1
    np.testing.assert_allclose(data.energies, OpenMMEnergy(ala2).energy(data.xyz.astype(np.float64)), rtol=1e-9)
    np.testing.assert_array_equal(data.xyz, traj.xyz)
    assert not (tmp_path / "md.h5.partial").exists()


_RUN = """
import sys
from trade_md.system import MolecularSystem
from trade_md.simulate import simulate
simulate(MolecularSystem.alanine_dipeptide(), 600.0, 0.3, seed=5, out=sys.argv[1],
         equilibration_ps=1.0, checkpoint_frames=20, progress=False)
"""


def test_kill_and_resume(tmp_path):
    out = tmp_path / "run.h5"
    ckpt = tmp_path / "run.h5.partial" / "checkpoint.json"
    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(out)])
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and json.loads(ckpt.read_text())["n_chunks"] >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed; make it longer"
    subprocess.run([sys.executable, "-c", _RUN, str(out)], check=True)
    data = ReferenceData.load(out)
    assert len(data) == 300
    assert np.all(np.diff(data.time) > 0)
    np.testing.assert_allclose(data.time, np.arange(1, 301) * 1.0)
    # same frames as an uninterrupted run with the same settings
    again = tmp_path / "again.h5"
    subprocess.run([sys.executable, "-c", _RUN, str(again)], check=True)
    np.testing.assert_array_equal(ReferenceData.load(again).xyz, data.xyz)


def test_refuses_to_overwrite(ala2, tmp_path):
    out = tmp_path / "x.h5"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate(ala2, 300.0, 0.001, out=out, progress=False)
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(temperature=0.0, nanoseconds=0.01), ValueError, "temperature"),
        (dict(temperature=-300.0, nanoseconds=0.01), ValueError, "temperature"),
        (dict(temperature=300.0, nanoseconds=0.0), ValueError, "nanoseconds"),
        (dict(temperature=300.0, nanoseconds=0.01, timestep_fs=-1.0), ValueError, "timestep"),
    ],
)
def test_bad_settings(ala2, kwargs, error, match):
    with pytest.raises(error, match=match):
        simulate(ala2, progress=False, **kwargs)


def test_unwritable_output(ala2, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(FileNotFoundError, match="folder"):
        simulate(ala2, 300.0, 0.001, out=blocker / "out.h5", progress=False)


def test_settings_object_with_keyword_options(ala2, tmp_path):
    """A SimulationSettings object passes through; keyword options replace single fields of it."""
    base = SimulationSettings(temperature=300.0, nanoseconds=0.002, equilibration_ps=1.0, seed=4)
    resolved = SimulationSettings.resolve(base, ala2, nanoseconds=None, seed=5)
    assert resolved == replace(base, seed=5, system=ala2.name)
    data = simulate(ala2, settings=base, seed=5, out=tmp_path / "md.h5", progress=False)
    assert len(data) == 2 and data.metadata["settings"] == asdict(resolved)
    with pytest.raises(TypeError, match="unknown simulation setting.*'timestep'"):
        simulate(ala2, 300.0, 0.001, timestep=1.0, progress=False)
    with pytest.raises(TypeError, match="temperature"):  # neither given nor in a settings object
        simulate(ala2, nanoseconds=0.001, progress=False)
