"""Molecular workflows under torchrun: 2 CPU ranks (gloo), rank 0 writes, kill -9 then the same command resumes."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from trade_md.config import ConfigError
from trade_md.generator import BoltzmannGenerator
from trade_md.simulate import simulate
from trade_md.workflow import WorkflowConfig, run

from .test_train import read_log

STEPS = 40


def workflow(tmp_path, data):
    return {
        "out_dir": str(tmp_path / "run"),
        "data": {"train": str(data), "validation_fraction": 0.2, "block_frames": 10},
        "model": {"flow": {"hidden": [16], "bins": 4}, "dtype": "float64"},
        "transfer": {"method": "trade_grid", "condition_range": [450.0, 700.0], "warmup_steps": 4, "ramp_steps": 4,
                     "widen_steps": 4, "grid_size": 3, "snis_samples": 16, "refresh_every": 2},
        "optim": {"steps": STEPS, "batch_size": 16, "lr": 1e-3},
        "run": {"checkpoint_every": 2, "validate_every": 4, "progress": False},
        "sample": {"temperatures": [600.0], "n": 32},
        "evaluate": {"references": {600: str(data)}},
    }


def torchrun(path, env):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "trade_md", "run", str(path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def descendants(pid):
    """Every process below ``pid`` (Linux /proc), e.g. the ranks torchrun starts in their own sessions."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as fh:
                children = [int(c) for c in fh.read().split()]
        except FileNotFoundError:
            continue
        found += children
        todo += children
    return found


@pytest.mark.slow  # two 2-rank launches of torch + OpenMM, ~2 min on the loaded 2-core machine
def test_a_killed_two_rank_workflow_resumes_with_the_same_command(tmp_path, ala2):
    data = tmp_path / "md_600K.h5"
    simulate(ala2, 600.0, 0.05, report_interval_ps=0.5, seed=3, out=data, equilibration_ps=2.0, progress=False)
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(workflow(tmp_path, data)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = tmp_path / "run" / "train" / "log.csv"
    first = torchrun(path, env)
    deadline = time.monotonic() + 600
    while not (log.exists() and len(read_log(log)) >= 10):  # a few checkpoints written
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the 2-rank run wrote no log within 10 minutes"
        time.sleep(0.2)
    for pid in [first.pid, *descendants(first.pid)]:  # torchrun and both ranks, no chance to clean up
        os.kill(pid, signal.SIGKILL)
    first.wait()
    time.sleep(1.0)
    assert not (tmp_path / "run" / "model.pt").exists()
    second = torchrun(path, env)
    output = second.communicate(timeout=600)[0]
    assert second.returncode == 0, output[-3000:]
    assert "resuming the training" in output
    assert output.count("skipping training") == 0 and output.count("resuming the training") == 1  # rank 0 speaks
    steps = [int(r["step"]) for r in read_log(log)]
    assert steps == list(range(1, STEPS + 1))  # every step logged once, across the kill
    model = BoltzmannGenerator.load(tmp_path / "run" / "model.pt")
    assert model.record.temperature_range == (450.0, 700.0)
    assert (tmp_path / "run" / "samples_600K.h5").exists() and (tmp_path / "run" / "report" / "report.md").exists()


def test_a_distributed_workflow_refuses_to_simulate_its_data(tmp_path, monkeypatch):
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    cfg = WorkflowConfig(out_dir=str(tmp_path / "run"))
    cfg.data.train = str(tmp_path / "missing.h5")
    with pytest.raises(ConfigError, match="missing.h5 does not exist: a distributed run needs its training data"):
        run(cfg)
    assert not (tmp_path / "run").exists()
