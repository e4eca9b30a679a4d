"""Packaging: dependencies agree between setup.cfg and environment.yml; README and CI agree."""
import configparser
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch", "pytables": "tables"}
NOT_RUNTIME = {"python", "pip", "pytest", "-e ."}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    setup = {_name(r) for r in cfg["options"]["install_requires"].split("\n") if r.strip()}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {d if d == "-e ." else _name(d) for d in dep["pip"]}
        else:
            names.add(_name(dep))
    conda = {CONDA_TO_PIP.get(n, n) for n in names} - NOT_RUNTIME
    assert conda == setup, f"only in environment.yml: {conda - setup}; only in setup.cfg: {setup - conda}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    blocks = [line for line in readme[:40] if "pytest" in line and "pip install" in line]
    assert blocks, "README must start with an install-and-test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[0].strip() in ci.splitlines()


def test_version_and_public_api():
    import trade_md

    assert re.fullmatch(r"\d+\.\d+\.\d+", trade_md.__version__)
    for name in trade_md.__all__:
        assert hasattr(trade_md, name), name
