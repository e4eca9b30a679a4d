"""The shipped model and data: the model loads, samples, and matches the 600 K MD basin populations."""
from pathlib import Path

import numpy as np
import pytest
import torch

from trade_md import datasets
from trade_md.analysis.observables import BASINS, assign_basins, ramachandran
from trade_md.data import ReferenceData
from trade_md.generator import BoltzmannGenerator

ROOT = Path(__file__).resolve().parents[1]
MODEL = datasets.path("ala2")

# Tolerance on each basin population of raw (unweighted) model samples at 600 K:
# 0.03 absolute.  The statistical error of 4000 samples is <= 0.008 and that of
# the MD populations <= 0.005 (block bootstrap), so 0.03 means a real model error.
TOLERANCE = 0.03


@pytest.fixture(scope="module")
def model():
    return BoltzmannGenerator.load(MODEL)


def populations(xyz, topology):
    phi, psi = ramachandran(xyz, topology)
    codes = assign_basins(phi[:, 0], psi[:, 0])
    return np.array([np.mean(codes == k) for k in range(len(BASINS))])


def test_shipped_model_matches_600K_md(model):
    torch.manual_seed(0)
    s = model.sample(4000, 600.0)
    md = ReferenceData.load(ROOT / "data" / "ala2_600K.h5", system=model.system)
    p_model = populations(s.xyz, s.topology)
    p_md = populations(md.xyz, md.topology)
    assert np.all(np.abs(p_model - p_md) < TOLERANCE), (p_model, p_md)
    assert s.relative_ess() > 0.01
    assert np.isfinite(s.energies).mean() > 0.99


def test_shipped_model_samples_at_300K(model):
    torch.manual_seed(1)
    s = model.sample(2000, 300.0)
    assert s.xyz.shape == (2000, 22, 3) and np.all(s.temperature == 300.0)
    assert np.isfinite(s.log_weights).mean() > 0.99 and s.ess() > 5
    # colder means lower energies than at 600 K
    hot = model.sample(2000, 600.0)
    assert np.median(s.energies) < np.median(hot.energies)


def test_readme_commands_take_the_shipped_names(tmp_path):
    """`trade-md sample --model ala2` and `trade-md evaluate --reference ala2_pt_300K --model ala2`."""
    from trade_md.cli import main

    assert main(["sample", "--model", "ala2", "--temperature", "300", "--n", "300", "--out",
                 str(tmp_path / "s.h5")]) == 0
    assert main(["evaluate", "--samples", str(tmp_path / "s.h5"), "--reference", "ala2_pt_300K", "--model", "ala2",
                 "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "300 K" in text and "ALA2" in text
