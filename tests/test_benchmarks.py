"""benchmarks/transfer_benchmark.py (shared by ala2_transfer.py and ala4_transfer.py) end to end on a tiny peptide."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trade_md.simulate import simulate
from trade_md.system import MolecularSystem

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
METHODS = ("TRADE", "NLL-only", "reweighting", "backward KL")


@pytest.fixture
def bench(monkeypatch):
    """The shared benchmark module, imported as the scripts import it (benchmarks/ on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import transfer_benchmark

    return transfer_benchmark


def tiny_workflow(tmp_path) -> Path:
    """Ace-Ala-Ala-Nme ("AA", two residues): 40 frames of 600 K MD to train on, 450 and 600 K references."""
    system = MolecularSystem.from_sequence("AA")
    files = {"train": (600.0, 0.02, 5), "ref_450K": (450.0, 0.01, 6), "ref_600K": (600.0, 0.01, 7)}
    for name, (t, ns, seed) in files.items():
        simulate(system, t, ns, report_interval_ps=0.5, seed=seed, out=tmp_path / f"{name}.h5",
                 equilibration_ps=1.0, progress=False)
    cfg = {
        "system": {"sequence": "AA"},
        "data": {"train": str(tmp_path / "train.h5"), "validation_fraction": 0.2, "block_frames": 5},
        "model": {"flow": {"hidden": [16], "bins": 4}},
        "transfer": {"method": "trade_grid", "condition_range": [450.0, 700.0], "warmup_steps": 2, "ramp_steps": 2,
                     "widen_steps": 2, "grid_size": 3, "snis_samples": 8, "refresh_every": 2},
        "optim": {"steps": 6, "batch_size": 8, "lr": 1e-3},
        "run": {"checkpoint_every": 3, "validate_every": 3},
        "sample": {"temperatures": [600.0], "n": 16},
        "evaluate": {"references": {450: str(tmp_path / "ref_450K.h5"), 600: str(tmp_path / "ref_600K.h5")}},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.filterwarnings("ignore::trade_md.provenance.OutOfRangeWarning")  # NLL-only sampled beyond 600 K: intended
def test_every_method_and_temperature_per_residue_and_a_rerun_does_not_retrain(tmp_path, bench, capsys):
    workflow, out = tiny_workflow(tmp_path), tmp_path / "bench"
    common = dict(description="tiny", title="tiny benchmark", workflow=str(workflow), out=str(out), steps=6)
    # 700 K has no reference: every method is trained and sampled, then the run stops naming what is missing
    assert bench.main(["--n", "16"], temperatures=(450.0, 600.0, 700.0), **common) == 1
    message = capsys.readouterr().out
    assert "no MD reference yet for 700 K: training and sampling go ahead" in message  # said before training
    assert "no MD reference in" in message and "700 K" in message and "rerun" in message
    for method in bench.METHODS.values():
        assert (out / method / "model.pt").exists() and (out / method / "samples_700K.h5").exists()
    models = {m: (out / m / "model.pt").stat().st_mtime_ns for m in bench.METHODS.values()}

    logs = []
    base = bench.load_base(workflow, 16)
    result = bench.run_benchmark(base, (450.0, 600.0), 6, out, workflow=str(workflow), log=logs.append)
    assert sum("skipping training" in line for line in logs) == len(bench.METHODS)
    assert not any(line.startswith(("training", "resuming")) for line in logs)
    assert {m: (out / m / "model.pt").stat().st_mtime_ns for m in models} == models

    assert list(result.rows) == [(m, t) for m in METHODS for t in (450.0, 600.0)]
    for (method, t), row in result.rows.items():
        assert list(row["residues"]) == ["ALA2", "ALA3"], (method, t)
        for residue in row["residues"].values():
            assert {"js_reweighted", "js_reweighted_floor", "dF_alphaL_reweighted", "dF_alphaL_md",
                    "dF_alphaL_vs_md", "verdict"} <= set(residue)
        assert row["joint_basins"]["n_residues"] == 2 and "js_reweighted" in row["joint_basins"]
        assert 0 < row["relative_ess"] <= 1
        assert row["nll_md"] is not None
    assert result.settings["T0_K"] == 600.0

    text = bench.write_results(result, "tiny benchmark")
    for method in METHODS:
        for t in ("450", "600"):
            assert f"| {method} | {t} | ALA2 |" in text and f"| {method} | {t} | ALA3 |" in text
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["rows"]) == {f"{m}@{t}" for m in METHODS for t in ("450", "600")}
    assert (out / "results.md").read_text() == text and (out / "results.png").stat().st_size > 0

    # the reweighting samples are kept and reused too
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "reweighting").glob("samples_*K.h5")}
    assert set(kept) == {"samples_450K.h5", "samples_600K.h5"}
    logs.clear()
    again = bench.run_benchmark(base, (450.0, 600.0), 6, out, workflow=str(workflow), log=logs.append)
    assert not any("reweighting:" in line or line.startswith("training") for line in logs)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "reweighting").glob("samples_*K.h5")} == kept
    assert again.rows[("reweighting", 450.0)]["relative_ess"] == result.rows[("reweighting", 450.0)]["relative_ess"]


@pytest.mark.parametrize("script", ["ala2_transfer.py", "ala4_transfer.py"])
def test_the_scripts_run_from_the_repository_root(script):
    """Run as `python benchmarks/<script>` the import of the shared module works and the options are there."""
    root = BENCHMARKS.parent
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for option in ("--workflow", "--steps", "--n", "--out"):
        assert option in result.stdout
    assert ("--md-ns" in result.stdout) == (script == "ala2_transfer.py")
