"""The command line: options generated from the settings dataclasses, help text on every option."""
import argparse
import dataclasses
import importlib
import typing
from types import SimpleNamespace

import pytest

from trade_md import cli
from trade_md.cli import build_parser, main
from trade_md.simulate import SimulationSettings
from trade_md.system import DEFAULT_CONSTRAINTS, DEFAULT_FORCEFIELD
from trade_md.workflow_config import SampleSection, SystemSection, WorkflowConfig


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions if a.option_strings and a.dest != "help" for s in a.option_strings}


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_option_has_help_text(command):
    parser = _subparsers(build_parser())[command]
    missing = [name for name, action in _options(parser).items() if not action.help]
    positionals = [a.dest for a in parser._actions if not a.option_strings and not a.help]
    assert not missing and not positionals, f"trade-md {command}: no help for {missing + positionals}"


def test_simulate_options_are_the_settings_fields():
    """One option per SimulationSettings field (but the two temperatures and the molecule's name),
    with the field's type, default and help text."""
    options = _options(_subparsers(build_parser())["simulate"])
    types = typing.get_type_hints(SimulationSettings)
    fields = [f for f in dataclasses.fields(SimulationSettings) if f.name not in ("temperature", "system")]
    for f in fields:
        action = options.pop("--" + f.name.replace("_", "-"))
        assert action.dest == f.name and action.type is types[f.name]
        if f.default is dataclasses.MISSING:
            assert action.required
        else:
            assert action.default == f.default and not action.required
        assert action.help.startswith(f.metadata["help"])
    # the rest: the molecule, both temperature options, output and run-time choices
    assert set(options) == {"--system", "--pdb", "--sequence", "--forcefield", "--constraints",
                            "--temperature", "--temperatures", "--out", "--platform", "--overwrite"}


class _Result:
    """What the stand-in MD returns: no frames at a temperature."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __len__(self) -> int:
        return 0


def _fake_simulation(monkeypatch):
    """Replace the molecule and the MD by stand-ins; return the list of settings they were called with."""
    calls = []
    system = SimpleNamespace(name="stand-in")

    def fake_simulate(system, temperature=None, nanoseconds=None, *, settings=None, platform=None, out=None,
                      overwrite=False, progress=True, **options):
        resolved = SimulationSettings.resolve(settings, system, temperature=temperature,
                                              nanoseconds=nanoseconds, **options)
        calls.append((resolved, platform, overwrite))
        return _Result(resolved.temperature)

    monkeypatch.setattr(cli, "_system_from_args", lambda args: system)
    monkeypatch.setattr(importlib.import_module("trade_md.simulate"), "simulate", fake_simulate)
    return calls


def test_simulate_passes_every_setting_through(monkeypatch, tmp_path):
    calls = _fake_simulation(monkeypatch)
    argv = ["simulate", "--temperature", "450", "--nanoseconds", "2", "--out", str(tmp_path / "md.h5"),
            "--report-interval-ps", "0.5", "--timestep-fs", "1", "--friction-per-ps", "5",
            "--equilibration-ps", "0", "--checkpoint-frames", "7", "--seed", "3", "--platform", "Reference"]
    assert main(argv) == 0
    settings, platform, overwrite = calls[0]
    assert settings == SimulationSettings(temperature=450.0, nanoseconds=2.0, report_interval_ps=0.5,
                                          timestep_fs=1.0, friction_per_ps=5.0, equilibration_ps=0.0,
                                          checkpoint_frames=7, seed=3, system="stand-in")
    assert platform == "Reference" and overwrite is False


def test_simulate_defaults_are_the_settings_defaults(monkeypatch, tmp_path):
    calls = _fake_simulation(monkeypatch)
    assert main(["simulate", "--temperature", "300", "--nanoseconds", "1", "--out", str(tmp_path / "md.h5")]) == 0
    assert calls[0][0] == SimulationSettings(temperature=300.0, nanoseconds=1.0, system="stand-in")


@pytest.mark.parametrize("option, value, message", [
    ("--timestep-fs", "-1", "timestep_fs must be finite and > 0, got -1.0"),
    ("--checkpoint-frames", "0", "checkpoint_frames must be a positive integer (>= 1), got 0"),
    ("--equilibration-ps", "-5", "equilibration_ps must be finite and >= 0, got -5.0"),
    ("--seed", "-2", "seed must be a non-negative integer (>= 0), got -2"),
])
def test_bad_simulation_setting_is_a_clear_error(monkeypatch, tmp_path, capsys, option, value, message):
    _fake_simulation(monkeypatch)
    argv = ["simulate", "--temperature", "300", "--nanoseconds", "1", "--out", str(tmp_path / "md.h5"),
            option, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"trade-md simulate: error: {message}" in err and "Traceback" not in err, err


def test_bad_temperature_option_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["simulate", "--temperature", "-300", "--nanoseconds", "1", "--out", "x.h5"])
    assert exit.value.code == 2
    assert "argument --temperature: value must be finite and > 0 K, got -300" in capsys.readouterr().err


def test_sample_and_molecule_defaults_are_the_workflow_defaults():
    """``trade-md sample`` and the workflow's ``sample`` section, the molecule options and the ``system``
    section, ``--threads`` and the workflow's ``threads``: one default per setting."""
    parsers = _subparsers(build_parser())
    sample = _options(parsers["sample"])
    for option, key in (("--n", "n"), ("--batch-size", "batch_size"), ("--seed", "seed")):
        assert sample[option].default == getattr(SampleSection(), key), option
    for command in ("sample", "evaluate"):
        assert _options(parsers[command])["--threads"].default == WorkflowConfig().threads
    molecule = _options(parsers["simulate"])
    assert molecule["--system"].default == SystemSection().name
    assert tuple(molecule["--forcefield"].default) == SystemSection().forcefield == DEFAULT_FORCEFIELD
    assert molecule["--constraints"].default == SystemSection().constraints == DEFAULT_CONSTRAINTS


def test_version_names_the_engines(capsys):
    import torch

    from trade_md import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"trade-md {__version__}" in out and f"torch {torch.__version__}" in out and "OpenMM" in out


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "trade_md", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("trade-md ")
