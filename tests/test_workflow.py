"""The main job end to end on a tiny configuration: MD -> TRADE -> samples -> report."""
import json

import numpy as np
import pytest
import yaml

from trade_md.cli import main
from trade_md.config import ConfigError
from trade_md.generator import BoltzmannGenerator, Samples
from trade_md.simulate import simulate


def tiny_workflow(tmp_path, ala2, method="trade_grid"):
    for t in (450.0, 600.0):
        simulate(ala2, t, 0.1, report_interval_ps=0.5, seed=3, out=tmp_path / f"md_{t:g}K.h5",
                 equilibration_ps=2.0, progress=False)
    return {
        "out_dir": str(tmp_path / "run"),
        "data": {"train": str(tmp_path / "md_600K.h5"), "validation_fraction": 0.2, "block_frames": 10},
        "model": {"flow": {"hidden": [16], "bins": 4}, "dtype": "float64"},
        "transfer": {"method": method, "condition_range": [400.0, 700.0], "warmup_steps": 4, "ramp_steps": 4,
                     "widen_steps": 4, "grid_size": 3, "snis_samples": 16, "refresh_every": 2},
        "optim": {"steps": 12, "batch_size": 16, "lr": 1e-3},
        "run": {"checkpoint_every": 4, "validate_every": 4, "progress": False},
        "sample": {"temperatures": [450.0, 600.0], "n": 32},
        "evaluate": {"references": {450: str(tmp_path / "md_450K.h5"), 600: str(tmp_path / "md_600K.h5")}},
    }


def test_workflow_end_to_end(tmp_path, ala2):
    cfg = tiny_workflow(tmp_path, ala2)
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    run = tmp_path / "run"
    for name in ("model.pt", "samples_450K.h5", "samples_600K.h5", "train/log.csv", "train/best.pt",
                 "report/report.md", "report/metrics.json", "report/ramachandran_450K.png",
                 "report/metrics_vs_temperature.png", "workflow.yaml"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert set(metrics) == {"450 K", "600 K"} and np.isfinite(metrics["600 K"]["nll_md"]["value"])
    model = BoltzmannGenerator.load(run / "model.pt")
    assert model.reference_temperature == 600.0
    s = Samples.load(run / "samples_450K.h5", system=ala2)
    assert len(s) == 32 and np.all(s.temperature == 450.0)
    # a second run resumes: nothing is retrained or resampled
    before = (run / "samples_450K.h5").stat().st_mtime_ns
    assert main(["run", str(path)]) == 0
    assert (run / "samples_450K.h5").stat().st_mtime_ns == before


def test_misspelled_workflow_key_is_an_error(tmp_path, capsys):
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({"tranfser": {"method": "trade_grid"}}))
    assert main(["run", str(path)]) == 2
    assert "did you mean 'transfer'" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"transfer": {"methd": "trade_grid"}}))
    with pytest.raises(ConfigError, match="method"):
        from trade_md.workflow import run_workflow

        run_workflow(path)


def test_missing_reference_data_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "r"), "data": {"train": str(tmp_path / "no.h5")}}))
    assert main(["run", str(path)]) == 2
    assert "no.h5 not found" in capsys.readouterr().err
