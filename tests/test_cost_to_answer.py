"""``benchmarks/cost_to_answer.py`` on a tiny configuration: every arm runs, writes its outputs, and a rerun redoes nothing."""
import datetime
import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml

from trade_md.simulate import simulate

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cost_to_answer.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("cost_to_answer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_setup(tmp_path, ala2):
    data = tmp_path / "md_600K.h5"
    simulate(ala2, 600.0, 0.02, report_interval_ps=0.2, seed=3, out=data, equilibration_ps=1.0, progress=False)
    workflow = {
        "out_dir": str(tmp_path / "unused"),
        "data": {"train": str(data), "validation_fraction": 0.2, "block_frames": 10},
        "model": {"flow": {"hidden": [16], "bins": 4}, "dtype": "float64"},
        "transfer": {"method": "trade_grid", "condition_range": [250.0, 700.0], "warmup_steps": 2, "ramp_steps": 2,
                     "widen_steps": 2, "grid_size": 3, "snis_samples": 8, "refresh_every": 2},
        "optim": {"steps": 6, "batch_size": 16, "lr": 1e-3},
        "run": {"checkpoint_every": 2, "validate_every": 2},
        "sample": {"n": 32},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(workflow))
    return ["--out", str(tmp_path / "out"), "--workflow", str(path), "--temperatures", "300,600",
            "--report-interval-ps", "0.2", "--block-ps", "1", "--prefix-step-ns", "2.5",
            "--md-chunk-ns", "0.002", "--md-cap-ns", "0.004", "--md-equilibration-ps", "1",
            "--md-rest-equilibration-ps", "0.2", "--speed-ns", "0.002", "--pt-temperatures", "300,450",
            "--pt-short-ns", "0.002", "--pt-equilibration-ps", "0.4", "--trade-ns", "0.01,0.02", "--samples", "32"]


def mtimes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and p.name not in ("results.json", "results.md", "se_vs_cpu.png")}


def test_tiny_run_writes_every_part_and_a_rerun_redoes_nothing(tmp_path, ala2, script):
    argv = tiny_setup(tmp_path, ala2)
    messages = []
    results = script.main(argv, log=messages.append)
    out = tmp_path / "out"
    for name in ("results.json", "results.md", "se_vs_cpu.png", "md_300K/segments.json", "md_300K/seg_001.h5",
                 "md_speed_600K/speed.json", "pt_short/cost.json", "trade_0.01ns/cost.json",
                 "trade_0.02ns/metrics.json", "trade_0.02ns/workflow/model.pt",
                 "trade_0.02ns/workflow/samples_600K.h5"):
        assert (out / name).exists(), name
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= {"date", "machine", "settings", "references", "md", "speed", "pt", "trade"}
    # plain MD: two chunks of 2 ps, then the cap (alpha_L is not reached in 4 ps: an extrapolation instead)
    md = saved["md"]
    assert [p["ns"] for p in md["curve"]] == [0.002, 0.004] and md["cpu_s"] > 0
    assert not md["reached"] and md["extrapolated_ns"] > md["ns"]
    # PT: measured CPU per ns; prefixes of the shipped references (10 ns at 2.5 ns steps)
    pt = saved["pt"]
    assert pt["measured"]["cpu_s_per_ns"] > 0 and set(pt["per_temperature"]) == {"300", "600"}
    assert [p["ns"] for p in pt["per_temperature"]["300"]["curve"]] == [2.5, 5.0, 7.5, 10.0]
    assert math.isclose(saved["references"]["300"]["value"], 3.86, abs_tol=0.01)
    # trade_md: one entry per amount of data, each with its costs and metrics at both temperatures
    assert set(saved["trade"]) == {"0.01", "0.02"}
    for n_ns, entry in saved["trade"].items():
        assert entry["frames"] == round(float(n_ns) * 1000 / 0.2)
        assert entry["cpu_s_train_and_sample"] > 0 and entry["cpu_s_other_samples"] > 0
        assert entry["cpu_s_all_temperatures"] > entry["cpu_s_answer"] > entry["cpu_s_data"] > 0
        assert set(entry["metrics"]) == {"300", "600"}
        assert 0 < entry["metrics"]["300"]["relative_ess"] <= 1
    text = (out / "results.md").read_text()
    assert "plain MD 300 K" in text and "trade_md, 0.02 ns of 600 K data" in text and "PT, 2 replicas" in text
    # a rerun loads every cached part: no file but the summaries is rewritten, nothing is simulated or trained
    before = mtimes(out)
    messages.clear()
    again = script.main(argv, log=messages.append)
    assert mtimes(out) == before
    redone = [m for m in messages if ": train_and_sample_answer" in m or ": sample_others" in m
              or m.lstrip().startswith("training") or m.startswith("md 300 K:")]
    assert not redone
    assert again["md"] == results["md"] and again["trade"] == results["trade"]
    # with a deadline already reached, no further MD chunk and no new training starts
    late = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M")
    third = script.main(argv + ["--md-cap-ns", "0.006", "--trade-ns", "0.01,0.015", "--deadline", late],
                        log=messages.append)
    assert third["md"]["ns"] == 0.004 and third["md"]["stopped_by_deadline"]
    assert set(third["trade"]) == {"0.01", "0.02"} and not (out / "trade_0.015ns" / "cost.json").exists()


def test_plain_md_needs_visits_as_well_as_a_small_se(script):
    """One long visit gives a small block SE and a wrong answer (measured: 14 ns, 1.22 +- 0.20 vs 3.86 kT)."""
    one_visit = {"dF": {"value": 1.22, "stderr": 0.197}, "visits": 1}
    assert script.se_reached(one_visit["dF"], 0.2) and not script.md_answered(one_visit, 0.2)
    assert script.md_answered({"dF": {"value": 3.9, "stderr": 0.19}, "visits": script.MIN_VISITS}, 0.2)
    assert not script.md_answered({"dF": {"value": 3.9, "stderr": 0.25}, "visits": 40}, 0.2)
