"""The README's main job keeps its measured quality (issue 16): a change that loses it fails here.

Runs ``workflows/ala2_quick.yaml`` as it is (600 K data -> 250-700 K, 2,500
steps, seeded) and checks, at 300 K against the shipped parallel-tempering
reference, the thresholds the job was accepted with: relative ESS >= 20 %,
reweighted Ramachandran JS within 0.01 nats of the reference's noise floor,
alpha_L/C7ax free energy within 0.3 kT of the reference's. Measured when the
test was written (same configuration, this machine): ESS 36.8 %, JS 0.0152
(floor 0.0185), dF 3.93 vs 3.86 kT; 9.2 CPU-minutes.
"""
from pathlib import Path

import pytest

from trade_md.workflow import run_workflow

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_main_job_keeps_its_quality(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the workflow names its data relative to the repository
    metrics = run_workflow(ROOT / "workflows" / "ala2_quick.yaml", out_dir=tmp_path / "run", log=lambda *a: None)
    at300 = metrics["300 K"]
    residue = at300["residues"]["ALA2"]
    assert at300["relative_ess"] >= 0.20, at300["relative_ess"]
    assert residue["js_reweighted"] <= residue["js_reweighted_floor"] + 0.01, residue
    assert abs(residue["dF_alphaL_vs_md"]["value"]) <= 0.3, residue["dF_alphaL_vs_md"]
