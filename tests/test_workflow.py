"""The main job end to end on a tiny configuration: MD -> TRADE -> samples -> report."""
import json
from pathlib import Path

import numpy as np
import torch
import pytest
import yaml

from trade_md.cli import main
from trade_md.config import ConfigError, load_yaml
from trade_md.data import ReferenceData
from trade_md.generator import BoltzmannGenerator, Samples
from trade_md.simulate import simulate
from trade_md.system import DEFAULT_FORCEFIELD
from trade_md.train import RunConfig
from trade_md.workflow_config import DataSection, WorkflowConfig
from trade_md.zmatrix import DEFAULT_TORSION_STYLE


@pytest.fixture(scope="module")
def md_dir(tmp_path_factory, ala2):
    """0.1 ns of MD at 450 K and 600 K (shared by the tests of this module; never written to)."""
    folder = tmp_path_factory.mktemp("md")
    for t in (450.0, 600.0):
        simulate(ala2, t, 0.1, report_interval_ps=0.5, seed=3, out=folder / f"md_{t:g}K.h5",
                 equilibration_ps=2.0, progress=False)
    return folder


def tiny_workflow(tmp_path, md_dir, method="trade_grid"):
    return {
        "out_dir": str(tmp_path / "run"),
        "data": {"train": str(md_dir / "md_600K.h5"), "validation_fraction": 0.2, "block_frames": 10},
        "model": {"flow": {"hidden": [16], "bins": 4}, "dtype": "float64"},
        "transfer": {"method": method, "condition_range": [400.0, 700.0], "warmup_steps": 4, "ramp_steps": 4,
                     "widen_steps": 4, "grid_size": 3, "snis_samples": 16, "refresh_every": 2},
        "optim": {"steps": 12, "batch_size": 16, "lr": 1e-3},
        "run": {"checkpoint_every": 4, "validate_every": 4, "progress": False},
        "sample": {"temperatures": [450.0, 600.0], "n": 32},
        "evaluate": {"references": {450: str(md_dir / "md_450K.h5"), 600: str(md_dir / "md_600K.h5")}},
    }


def test_the_workflow_energy_gets_the_platform_and_device_properties(tmp_path, md_dir, monkeypatch):
    """OpenMM's context goes where the model runs (DeviceIndex on CUDA): the wiring, without a GPU."""
    import trade_md.workflow as workflow

    seen = {}

    def properties(platform, device):
        seen["args"] = (platform, device)
        return {"Threads": "1"}

    class Stop(Exception):
        pass

    def energy(system, platform, n_workers, properties):
        seen["energy"] = (platform, n_workers, properties)
        raise Stop

    monkeypatch.setattr(workflow, "openmm_device_properties", properties)
    monkeypatch.setattr(workflow, "OpenMMEnergy", energy)
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({**tiny_workflow(tmp_path, md_dir), "platform": "CPU"}))
    cfg = load_yaml(WorkflowConfig, path)
    with pytest.raises(Stop):
        workflow.run(cfg, log=lambda *a: None)
    assert seen["args"] == ("CPU", torch.device("cpu"))
    assert seen["energy"] == ("CPU", 1, {"Threads": "1"})


def test_workflow_end_to_end(tmp_path, ala2, md_dir):
    cfg = tiny_workflow(tmp_path, md_dir)
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
    # the model file records what it was trained on and for
    from trade_md.trajectory import file_sha256

    assert model.record.temperature_range == (400.0, 700.0) and model.record.method == "trade_grid"
    assert model.record.training_data == str(md_dir / "md_600K.h5")
    assert model.record.training_data_sha256 == file_sha256(md_dir / "md_600K.h5")
    assert model.record.versions["trade_md"] and model.record.versions["openmm"]
    s = Samples.load(run / "samples_450K.h5", system=ala2)
    assert len(s) == 32 and np.all(s.temperature == 450.0)
    # a second run resumes: nothing is retrained, resampled or rewritten
    before = outputs(run)
    assert main(["run", str(path)]) == 0
    assert outputs(run) == before


def outputs(run):
    """Modification times of the workflow's outputs (None: missing)."""
    names = ("model.pt", "samples_450K.h5", "samples_600K.h5", "report/metrics.json", "workflow.yaml")
    return {n: (run / n).stat().st_mtime_ns if (run / n).exists() else None for n in names}


def test_rerun_redoes_exactly_the_stages_whose_settings_changed(tmp_path, md_dir, capsys):
    """Stale results: a rerun after editing the workflow redoes what the edit touches, never reuses it silently."""
    cfg = tiny_workflow(tmp_path, md_dir)
    cfg["evaluate"]["references"] = {450: str(md_dir / "md_450K.h5")}  # one set of figures is enough here
    path, run = tmp_path / "wf.yaml", tmp_path / "run"

    def rerun(code=0, **edits):
        for dotted, value in edits.items():
            section, _, key = dotted.rpartition("__")
            (cfg[section] if section else cfg)[key] = value
        path.write_text(yaml.safe_dump(cfg))
        capsys.readouterr()
        assert main(["run", str(path)]) == code
        return capsys.readouterr()

    def saved():
        return yaml.safe_load((run / "workflow.yaml").read_text())

    rerun()
    first = outputs(run)
    # runtime-only keys redo nothing, and workflow.yaml keeps describing the outputs
    out = rerun(platform="Reference", energy_workers=2, device="cpu").out
    assert "up to date: skipping training" in out and outputs(run) == first
    assert saved()["platform"] is None and saved()["energy_workers"] == 1 and saved()["device"] == "auto"
    # sample section: samples and report are redone, the model is kept
    out = rerun(sample__n=40).out
    assert "sample changed (sample.n: 32 -> 40): redoing the samples at 450 K" in out
    second = outputs(run)
    assert second["model.pt"] == first["model.pt"]
    assert all(second[n] != first[n] for n in ("samples_450K.h5", "samples_600K.h5", "report/metrics.json"))
    assert len(Samples.load(run / "samples_600K.h5")) == 40 and saved()["sample"]["n"] == 40
    # optim section: training and everything after it are redone
    out = rerun(optim__lr=2e-3).out
    assert "optim changed (optim.lr: 0.001 -> 0.002): redoing training, sampling and evaluation" in out
    third = outputs(run)
    assert all(third[n] != second[n] for n in third)
    assert saved()["optim"]["lr"] == 2e-3
    # an unfinished training (killed before model.pt) is not resumed with other settings
    (run / "model.pt").unlink()
    err = rerun(code=2, optim__lr=3e-3).err
    assert "unfinished" in err and "optim.lr: 0.002 -> 0.003" in err and "Traceback" not in err
    assert saved()["optim"]["lr"] == 2e-3 and not (run / "model.pt").exists()
    # with the settings it was started with, it resumes; the samples made from it stay
    out = rerun(optim__lr=2e-3).out
    assert "resuming the training" in out and (run / "model.pt").exists()
    assert outputs(run)["samples_450K.h5"] == third["samples_450K.h5"]
    # a temperature dropped from the list: its samples are removed, and the report made from them
    out = rerun(sample__temperatures=[600.0]).out
    assert "450 K is no longer in sample.temperatures: removing" in out
    assert not (run / "samples_450K.h5").exists() and not (run / "report").exists()
    assert outputs(run)["samples_600K.h5"] == third["samples_600K.h5"]


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


def test_simulated_training_data_is_redone_when_its_settings_change(tmp_path, ala2, monkeypatch):
    """The data stage: a file the workflow simulated is simulated again when data.seed/... change; a file it
    did not make is never overwritten (refused if it was simulated with other settings)."""
    from trade_md import workflow

    calls = []

    def fake_simulate(system, temperature, nanoseconds, seed, out, platform, progress):
        calls.append(seed)
        xyz = np.repeat(system.reference_xyz[None], 4, axis=0)
        settings = {"temperature": temperature, "nanoseconds": nanoseconds, "seed": seed}
        ReferenceData(xyz, np.zeros(4), temperature, np.arange(4.0), system.topology,
                      {"settings": settings}).save(out)

    monkeypatch.setattr(workflow, "simulate", fake_simulate)
    messages = []

    def data_stage(seed, out="run"):
        cfg = WorkflowConfig(out_dir=str(tmp_path / out), data=DataSection(
            train=str(tmp_path / "md.h5"), temperature=600.0, simulate_nanoseconds=0.01, seed=seed))
        (tmp_path / out).mkdir(exist_ok=True)
        return workflow._reference_data(cfg, ala2, workflow._Stages(cfg, tmp_path / out, messages.append))

    first, first_hash = data_stage(seed=1)
    assert calls == [1] and len(first) == 4 and (tmp_path / "run" / "workflow.yaml").exists()
    assert data_stage(seed=1)[1] == first_hash and calls == [1]
    _, second_hash = data_stage(seed=2)
    assert calls == [1, 2] and second_hash != first_hash
    assert "data changed (data.seed: 1 -> 2): redoing the simulation" in messages[-2]
    with pytest.raises(ConfigError, match=r"data.seed = 3 but the file has 2.*delete it to simulate it again"):
        data_stage(seed=3, out="other")  # another workflow's file
    assert calls == [1, 2]


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("workflows/ala[24]_*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_workflows_load(path):
    cfg = load_yaml(WorkflowConfig, path)
    assert cfg.system.forcefield == DEFAULT_FORCEFIELD and cfg.model.torsion_style == DEFAULT_TORSION_STYLE


def test_threads_and_out_dir_are_set_once_at_the_top_level(tmp_path):
    """The workflow's threads reach training; run.threads / run.out_dir would be overwritten, so they are refused."""
    cfg = WorkflowConfig(out_dir=str(tmp_path), threads=3)
    assert cfg.run.threads is None and cfg.training_run().threads == 3
    for key, value in (("threads", 2), ("out_dir", "elsewhere")):
        with pytest.raises(ConfigError, match=f"run.{key} is not used in a workflow"):
            WorkflowConfig(out_dir=str(tmp_path), run=RunConfig(**{key: value}))


def test_tripeptide_from_its_sequence_runs_end_to_end(tmp_path):
    """Smoke test of "your own peptide": Ace-Ala-Ala-Nme built from "AA", MD simulated by the workflow,
    TRADE, samples, and a per-residue report (both residues and the joint basins)."""
    from trade_md.system import MolecularSystem

    md, reference = tmp_path / "md_600K.h5", tmp_path / "ref_600K.h5"
    simulate(MolecularSystem.from_sequence("AA"), 600.0, 0.02, report_interval_ps=0.5, seed=6, out=reference,
             equilibration_ps=2.0, progress=False)
    cfg = {
        "out_dir": str(tmp_path / "run"),
        "system": {"sequence": "AA"},
        "data": {"train": str(md), "temperature": 600.0, "simulate_nanoseconds": 0.02, "seed": 5,
                 "validation_fraction": 0.2, "block_frames": 5},
        "model": {"flow": {"hidden": [16], "bins": 4}},
        "transfer": {"method": "trade_grid", "condition_range": [450.0, 700.0], "warmup_steps": 2, "ramp_steps": 2,
                     "widen_steps": 2, "grid_size": 3, "snis_samples": 8, "refresh_every": 2},
        "optim": {"steps": 6, "batch_size": 8, "lr": 1e-3},
        "run": {"checkpoint_every": 3, "validate_every": 3, "progress": False},
        "sample": {"temperatures": [600.0], "n": 16},
        "evaluate": {"references": {600: str(reference)}},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    run = tmp_path / "run"
    model = BoltzmannGenerator.load(run / "model.pt")
    assert model.system.n_atoms == 32 and "narrow_torsion" in model.ic.kinds
    report = (run / "report" / "report.md").read_text()
    summary = report.split("## Summary")[1].split("\n\n")[1]
    assert "| 600 K | ALA2 |" in summary and "| 600 K | ALA3 |" in summary and "joint" in summary
    assert len(list((run / "report").glob("ramachandran*600K*.png"))) >= 2


def test_training_data_from_several_runs_is_joined_in_order(tmp_path, ala2, md_dir):
    """data.train may list independent runs at one temperature: frames joined in order, the model record
    names every file, and a list with simulate_nanoseconds (which simulates one file) is refused."""
    part = ReferenceData.load(md_dir / "md_600K.h5")
    first, second = part.select(slice(0, 100)), part.select(slice(100, 200))
    first.save(tmp_path / "a.h5")
    second.save(tmp_path / "b.h5")
    joined = ReferenceData.concatenate([first, second], sources=["a", "b"])
    np.testing.assert_array_equal(joined.xyz, part.xyz[:200])
    np.testing.assert_array_equal(joined.energies, part.energies[:200])
    assert joined.metadata["sources"] == ["a", "b"]
    cfg = tiny_workflow(tmp_path, md_dir)
    cfg["data"]["train"] = [str(tmp_path / "a.h5"), str(tmp_path / "b.h5")]
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    record = BoltzmannGenerator.load(tmp_path / "run" / "model.pt").record
    assert record.training_data == f"{tmp_path / 'a.h5'}, {tmp_path / 'b.h5'}"
    with pytest.raises(ConfigError, match="simulate_nanoseconds simulates one file, but data.train lists 2"):
        DataSection(train=("a.h5", "b.h5"), temperature=600.0, simulate_nanoseconds=1.0)
    with pytest.raises(ConfigError, match="data.train lists no files"):
        DataSection(train=())


def test_joining_runs_of_other_temperatures_or_molecules_is_refused(md_dir):
    from trade_md.system import MolecularSystem

    cold, hot = ReferenceData.load(md_dir / "md_450K.h5"), ReferenceData.load(md_dir / "md_600K.h5")
    with pytest.raises(ValueError, match="hot.h5 holds data at 600 K, cold.h5 at 450 K"):
        ReferenceData.concatenate([cold, hot], sources=["cold.h5", "hot.h5"])
    other = MolecularSystem.from_sequence("AA")
    stranger = ReferenceData(np.zeros((2, other.n_atoms, 3)), np.zeros(2), 600.0, np.arange(2.0), other.topology)
    with pytest.raises(ValueError, match="stranger"):
        ReferenceData.concatenate([hot, stranger], sources=["hot", "stranger"])
    with pytest.raises(ValueError, match="at least one"):
        ReferenceData.concatenate([])
