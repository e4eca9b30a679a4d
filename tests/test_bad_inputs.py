"""Bad inputs fail fast, before any MD, training or sampling, with a message naming the problem.

One table per entry point: workflow configuration edits (``trade-md run``),
toy training configuration edits (``trade-md train``), command-line arguments.
Every row is (edit, expected message fragment).
"""
import importlib
import math
import os

import mdtraj
import numpy as np
import pytest
import yaml

from trade_md import cli
from trade_md.cli import main
from trade_md.config import ConfigError, load_yaml
from trade_md.data import ReferenceData
from trade_md.testsystems import ToyRunConfig, build_problem
from trade_md.train import TrainResult, train
from trade_md.workflow import WorkflowConfig

TINY_TRAIN = {
    "problem": {"name": "multiwell", "dim": 2, "n_train": 200, "n_validation": 100, "n_evaluation": 200},
    "flow": {"schedule": ["real/0 | *", "real/1 | *"], "hidden": [8], "bins": 4},
    "transfer": {"method": "trade_grid", "condition_range": [0.5, 1.5], "warmup_steps": 8, "ramp_steps": 4,
                 "widen_steps": 12, "grid_size": 3, "snis_samples": 16},
    "optim": {"steps": 20, "batch_size": 16},
    "run": {"progress": False, "validate_every": 5, "checkpoint_every": 5},
}


def tiny_workflow(tmp_path) -> dict:
    """A valid tiny workflow whose data file is missing (the only error it has)."""
    return {
        "out_dir": str(tmp_path / "run"),
        "data": {"train": str(tmp_path / "no.h5"), "validation_fraction": 0.2, "block_frames": 10},
        "model": {"flow": {"hidden": [16], "bins": 4}, "dtype": "float64"},
        "transfer": {"method": "trade_grid", "condition_range": [400.0, 700.0], "warmup_steps": 4, "ramp_steps": 4,
                     "widen_steps": 4, "grid_size": 3, "snis_samples": 16},
        "optim": {"steps": 12, "batch_size": 16, "lr": 1e-3},
        "run": {"progress": False},
        "sample": {"temperatures": [450.0, 600.0], "n": 32},
        "evaluate": {"references": {}},
    }


def edited(config: dict, edits: dict, tmp_path) -> dict:
    """``config`` with ``{"section.key": value}`` edits; ``{tmp}`` in string values is ``tmp_path``."""
    config = yaml.safe_load(yaml.safe_dump(config))
    for dotted, value in edits.items():
        *parents, key = dotted.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, str):
            value = value.format(tmp=tmp_path)
        elif isinstance(value, dict):
            value = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in value.items()}
        node[key] = value
    return config


@pytest.fixture
def reference_files(tmp_path, ala2):
    """``ala2_600K.h5`` (alanine dipeptide, 600 K), ``other.h5`` (a 3-atom molecule), ``garbage.h5``."""
    xyz = np.repeat(ala2.reference_xyz[None], 3, axis=0)
    ReferenceData(xyz, np.zeros(3), 600.0, np.arange(3.0), ala2.topology).save(tmp_path / "ala2_600K.h5")
    top = mdtraj.Topology()
    res = top.add_residue("HOH", top.add_chain())
    for name, element in (("O", "oxygen"), ("H1", "hydrogen"), ("H2", "hydrogen")):
        top.add_atom(name, mdtraj.element.get_by_symbol(element[0].upper()), res)
    ReferenceData(np.zeros((2, 3, 3)), np.zeros(2), 600.0, np.arange(2.0), top).save(tmp_path / "other.h5")
    (tmp_path / "garbage.h5").write_text("not hdf5")
    return tmp_path


# ------------------------------------------------------------- workflow configuration
WORKFLOW_CASES = [
    # wrong types name the key (one check in the config loader, for every section)
    ({"optim.lr": "fast"}, "optim.lr must be a number, got 'fast'"),
    ({"optim.steps": "many"}, "optim.steps must be an integer, got 'many'"),
    ({"optim.steps": 12.5}, "optim.steps must be an integer, got 12.5"),
    ({"transfer.condition_range": "hot"}, "transfer.condition_range must be a list of 2 numbers, got 'hot'"),
    ({"transfer.condition_range": [400.0]}, "transfer.condition_range must be a list of 2 numbers"),
    ({"transfer.energy_free": "maybe"}, "transfer.energy_free must be true or false, got 'maybe'"),
    ({"model.flow.hidden": [16, "wide"]}, "model.flow.hidden[1] must be an integer, got 'wide'"),
    ({"model.torsion_style": 3}, "model.torsion_style must be a string, got 3"),
    ({"run.seed": None}, "run.seed must be an integer, got None"),
    ({"data.max_frames": "all"}, "data.max_frames must be an integer or null, got 'all'"),
    ({"optim": 5}, "optim must be a mapping of keys, got 5"),
    # the curriculum must fit into optim.steps, for every method with a curriculum
    ({"optim.steps": 7}, "optim.steps = 7 is shorter than the curriculum of method 'trade_grid'"),
    ({"optim.steps": 7, "transfer.method": "trade_continuous"}, "transfer.warmup_steps + max(transfer.ramp_steps"),
    ({"optim.steps": 7, "transfer.method": "reweighting"}, "= 4 + max(4, 4) = 8"),
    ({"optim.steps": 7, "transfer.method": "reverse_kl"}, "curriculum of method 'reverse_kl'"),
    # sampling and runtime settings, checked before training
    ({"sample.n": 0}, "sample.n must be a positive integer (>= 1), got 0"),
    ({"sample.n": "lots"}, "sample.n must be an integer, got 'lots'"),
    ({"sample.batch_size": -1}, "sample.batch_size must be a positive integer"),
    ({"sample.temperatures": 300}, "sample.temperatures must be a list of numbers, got 300"),
    ({"sample.temperatures": []}, "sample.temperatures is empty"),
    ({"sample.temperatures": [300.0, -5.0]}, "sample.temperatures must be finite and > 0 K, got [-5.0]"),
    ({"sample.temperatures": [0, 300]}, "sample.temperatures must be finite and > 0 K, got [0.0]"),
    ({"sample.temperatures": [300, 300.0]}, "sample.temperatures lists 300 K more than once"),
    ({"threads": 0}, "threads must be a positive integer (>= 1), got 0"),
    ({"energy_workers": 0}, "energy_workers must be a positive integer (>= 1), got 0"),
    ({"energy_workers": "two"}, "energy_workers must be an integer, got 'two'"),
    ({"data.validation_fraction": 1.5}, "data.validation_fraction must be in (0, 1), got 1.5"),
    ({"data.stride": 0}, "data.stride must be a positive integer"),
    ({"model.dtype": "float16"}, "model.dtype must be one of 'float32', 'float64', got 'float16'"),
    ({"model.torsion_style": "twisted"}, "model.torsion_style must be one of 'relative', 'proper', got 'twisted'"),
    # one setting, one key: the top-level out_dir and threads, never silently overwritten
    ({"run.threads": 2}, "run.threads is not used in a workflow: set the top-level threads instead"),
    ({"run.out_dir": "elsewhere"}, "run.out_dir is not used in a workflow: set the top-level out_dir instead"),
    ({"data.temperature": -600}, "data.temperature must be finite and > 0 K, got -600.0"),
    # MD references: exist, readable, the same molecule, at the temperature they are listed under
    ({"evaluate.references": {450: "{tmp}/missing.h5"}}, "evaluate.references[450]: reference file not found"),
    ({"evaluate.references": {"450K": "{tmp}/ala2_600K.h5"}}, "evaluate.references keys must be a number, got '450K'"),
    ({"evaluate.references": {-450: "{tmp}/ala2_600K.h5"}}, "evaluate.references keys must be finite and > 0 K"),
    ({"evaluate.references": {450: 7}}, "evaluate.references[450] must be a file path, got 7"),
    ({"evaluate.references": {450: "{tmp}/ala2_600K.h5"}},
     "evaluate.references[450] = {tmp}/ala2_600K.h5 holds data at 600 K, not 450 K"),
    ({"evaluate.references": {600: "{tmp}/garbage.h5"}},
     "evaluate.references[600]: {tmp}/garbage.h5 "),
    ({"evaluate.references": {600: "{tmp}/other.h5"}}, "has 3 atoms but the system has 22"),
    ({"evaluate.references": "refs.yaml"}, "evaluate.references must be a mapping, got 'refs.yaml'"),
    ({"evaluate.referencs": {}}, "did you mean 'references'"),
    # control: a valid configuration gets as far as the missing data file
    ({}, "no.h5 not found"),
]


@pytest.mark.parametrize("edits, message", WORKFLOW_CASES, ids=[m for _, m in WORKFLOW_CASES])
def test_bad_workflow_configuration_fails_before_any_stage(tmp_path, reference_files, capsys, edits, message):
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(edited(tiny_workflow(tmp_path), edits, tmp_path)))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "train").exists() and not (tmp_path / "run" / "workflow.yaml").exists()


def test_unreadable_reference_is_named(tmp_path, reference_files, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    (tmp_path / "ala2_600K.h5").chmod(0)
    path = tmp_path / "wf.yaml"
    edits = {"evaluate.references": {600: "{tmp}/ala2_600K.h5"}}
    path.write_text(yaml.safe_dump(edited(tiny_workflow(tmp_path), edits, tmp_path)))
    assert main(["run", str(path)]) == 2
    assert "evaluate.references[600]: reference file is not readable" in capsys.readouterr().err


def test_numbers_written_as_yaml_strings_are_numbers(tmp_path):
    """PyYAML reads ``1e-3`` as a string; the loader converts it for number fields."""
    path = tmp_path / "wf.yaml"
    path.write_text("optim: {lr: 1e-3, steps: 1e4}\nsample: {temperatures: [300, 4.5e2]}\n")
    cfg = load_yaml(WorkflowConfig, path)
    assert cfg.optim.lr == 1e-3 and cfg.optim.steps == 10000 and isinstance(cfg.optim.steps, int)
    assert cfg.sample.temperatures == (300.0, 450.0)


# ------------------------------------------------------------- toy training configuration
TRAIN_CASES = [
    ({"optim.lr": "fast"}, "optim.lr must be a number, got 'fast'"),
    ({"transfer.condition_range": "hot"}, "transfer.condition_range must be a list of 2 numbers, got 'hot'"),
    ({"optim.steps": "many"}, "optim.steps must be an integer, got 'many'"),
    ({"problem.evaluation": ["cold"]}, "problem.evaluation[0] must be a number, got 'cold'"),
    ({"transfer.gradient.huber_delta": "big"}, "transfer.gradient.huber_delta must be a number, got 'big'"),
    ({"optim.steps": 9}, "optim.steps = 9 is shorter than the curriculum of method 'trade_grid'"),
    ({"optim.steps": 19, "transfer.method": "reverse_kl"}, "= 8 + max(4, 12) = 20"),
    ({"optim.steps": 0}, "optim.steps must be a positive integer (>= 1), got 0"),
    ({"optim.pct_start": 0.05}, "optim.pct_start * optim.steps = 0.05 * 20 = 1 leaves the one-cycle"),
]


@pytest.mark.parametrize("edits, message", TRAIN_CASES, ids=[m for _, m in TRAIN_CASES])
def test_bad_training_configuration_names_the_key(tmp_path, capsys, edits, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(edited(TINY_TRAIN, edits, tmp_path)))
    with pytest.raises(ConfigError) as info:
        load_yaml(ToyRunConfig, path)
    assert message in str(info.value)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_nll_has_no_curriculum_and_train_rechecks_an_edited_config(tmp_path):
    data = edited(TINY_TRAIN, {"optim.steps": 2, "transfer.method": "nll"}, tmp_path)
    (tmp_path / "nll.yaml").write_text(yaml.safe_dump(data))
    config = load_yaml(ToyRunConfig, tmp_path / "nll.yaml")  # no curriculum: any length is fine
    config.transfer.method = "trade_grid"  # edited after construction: train() checks again
    problem = build_problem(config.problem, config.flow)
    with pytest.raises(ConfigError, match="optim.steps = 2 is shorter than the curriculum"):
        train(problem.model, problem.target, problem.data, config, tmp_path / "out")


def test_a_run_as_long_as_its_curriculum_keeps_a_best_checkpoint(tmp_path, capsys):
    """The shortest accepted run (steps = warmup + max(ramp, widen)) selects a best step: never 'None / inf'."""
    data = edited(TINY_TRAIN, {"run.out_dir": "{tmp}/out"}, tmp_path)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 0
    out = capsys.readouterr().out
    assert "best step 20, validation loss" in out and "None" not in out and "inf" not in out, out


@pytest.mark.parametrize("best_step, lowest, message", [
    (None, 1.25, "no best checkpoint: every validation after the curriculum diverged (lowest validation loss 1.25"),
    (None, math.inf, "no best checkpoint: no validation was healthy"),
    (40, 1.0, "best step 40, validation loss 1.5"),
])
def test_end_of_run_summary_never_says_none_or_inf(tmp_path, best_step, lowest, message):
    result = TrainResult(step=40, best_step=best_step, best_validation=1.5 if best_step else math.inf,
                         out_dir=tmp_path, skipped_steps=0, reloads=1, lowest_validation=lowest)
    text = result.summary()
    assert message in text and "None" not in text and " inf" not in text, text


# ------------------------------------------------------------- command-line arguments
def _setup_cli(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "taken.h5").write_text("x")
    data = edited(TINY_TRAIN, {"run.out_dir": "{tmp}/used"}, tmp_path)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "last.pt").write_text("x")


CLI_CASES = [
    # trade-md sample checks its output before loading the model (which does not exist here)
    ("sample --model {tmp}/none.pt --temperature 300 --out {tmp}/folder", 2, "--out {tmp}/folder is a folder"),
    ("sample --model {tmp}/none.pt --temperature 300 --out {tmp}/taken.h5", 2, "exists; refusing to overwrite it"),
    ("sample --model {tmp}/none.pt --temperature 300 --out {tmp}/no/such/dir/s.h5", 2,
     "output folder does not exist: {tmp}/no/such/dir"),
    ("sample --model {tmp}/none.pt --temperature 300 --out {tmp}/s.h5", 2, "model file not found"),
    ("sample --model {tmp}/none.pt --temperature 300,-5 --out {tmp}/s.h5", 2, "temperatures must be finite and > 0 K, got [-5.0]"),
    ("sample --model {tmp}/none.pt --temperature , --out {tmp}/s.h5", 2, "expected at least one temperature"),
    ("sample --model {tmp}/none.pt --temperature 300 --n 0 --out {tmp}/s.h5", 2,
     "argument --n/--n-samples: value must be a positive integer (>= 1), got 0"),
    ("sample --model {tmp}/none.pt --temperature 300 --threads 0 --out {tmp}/s.h5", 2,
     "argument --threads: value must be a positive integer (>= 1), got 0"),
    ("evaluate --samples a.h5 --reference b.h5 --out {tmp}/r --threads -1", 2,
     "argument --threads: value must be a positive integer (>= 1), got -1"),
    # trade-md train on a folder that holds a run says how to continue it
    ("train --config {tmp}/cfg.yaml", 2, "{tmp}/used already holds a training run; add --resume"),
    ("train --config {tmp}/missing.yaml", 2, "configuration file not found"),
]


@pytest.mark.parametrize("args, code, message", CLI_CASES, ids=[m for _, _, m in CLI_CASES])
def test_bad_command_line_is_a_clear_error(tmp_path, capsys, args, code, message):
    _setup_cli(tmp_path)
    argv = args.format(tmp=tmp_path).split()
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    assert status == code
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err, err


# ------------------------------------------------------------- Ctrl-C
INTERRUPT_CASES = [
    ("run {tmp}/wf.yaml", "trade_md.workflow.run_workflow", "interrupted; rerun the same command to resume"),
    ("sample --model {tmp}/m.pt --temperature 300 --out {tmp}/s.h5", "trade_md.generator.BoltzmannGenerator.load",
     "interrupted; rerun the same command to resume"),
    ("evaluate --samples a.h5 --reference b.h5 --out {tmp}/r", "trade_md.generator.Samples.load",
     "interrupted; rerun the same command to resume"),
    ("simulate --temperature 300 --nanoseconds 1 --out {tmp}/md.h5", "trade_md.simulate.simulate",
     "interrupted; rerun the same command to resume"),
    ("train --config {tmp}/cfg.yaml --resume", "trade_md.testsystems.train_from_config",
     "interrupted; rerun the same command to resume"),
    ("train --config {tmp}/cfg.yaml --out {tmp}/fresh", "trade_md.testsystems.train_from_config",
     "interrupted; rerun the same command with --resume to resume"),
]


@pytest.mark.parametrize("args, target, message", INTERRUPT_CASES, ids=[a.split()[0] for a, _, _ in INTERRUPT_CASES])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch, args, target, message):
    _setup_cli(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    module, _, name = target.rpartition(".")
    if module.endswith(("BoltzmannGenerator", "Samples")):
        owner, _, cls = module.rpartition(".")
        monkeypatch.setattr(getattr(importlib.import_module(owner), cls), name, interrupted)
    else:
        monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    monkeypatch.setattr(cli, "_system_from_args", lambda args: None)
    monkeypatch.setattr(cli, "_check_output_file", lambda path, overwrite: None)
    assert main(args.format(tmp=tmp_path).split()) == 130
    captured = capsys.readouterr()
    assert captured.err == message + "\n" and captured.out == ""

