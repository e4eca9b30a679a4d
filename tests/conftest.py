"""Shared test setup: seeded RNGs, float64 by default, one torch thread, markers."""
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seeds."""
    np.random.seed(1234)
    torch.manual_seed(1234)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261129)


@pytest.fixture(scope="session")
def ala2():
    """Alanine dipeptide (Amber99SB-ILDN + OBC, HBonds), minimized reference structure."""
    from trade_md.system import MolecularSystem

    return MolecularSystem.alanine_dipeptide()


@pytest.fixture(scope="session")
def ala2_frames(ala2):
    """200 frames of 600 K Langevin MD of alanine dipeptide, (200, 22, 3) float64 nm."""
    import openmm

    integ = openmm.LangevinMiddleIntegrator(600.0, 1.0, 0.002)
    integ.setRandomNumberSeed(7)
    ctx = openmm.Context(ala2.openmm_system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(ala2.reference_xyz)
    ctx.setVelocitiesToTemperature(600.0, 7)
    integ.step(500)
    frames = []
    for _ in range(200):
        integ.step(50)
        frames.append(ctx.getState(getPositions=True).getPositions(asNumpy=True)._value)
    return np.asarray(frames)
