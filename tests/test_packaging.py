"""Packaging: dependencies agree between setup.cfg and environment.yml; README and CI agree; the wheel
holds the shipped model and data and works outside the repository."""
import configparser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from trade_md import datasets

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


def test_shipped_names_resolve_to_package_files():
    assert datasets.path("ala2") == ROOT / "trade_md" / "data" / "models" / "ala2_trade.pt"
    for name in datasets.names("reference"):
        assert datasets.path(name).is_file() and datasets.path(name).parent == ROOT / "trade_md" / "data"
    with pytest.raises(KeyError, match="no shipped model or data set is called 'ala3'"):
        datasets.path("ala3")
    assert datasets.resolve("ala2", "model") == datasets.path("ala2")
    assert datasets.resolve("ala2", "reference") == Path("ala2")  # not a reference: left for the reader to refuse
    assert datasets.resolve(ROOT / "README.md", "model") == ROOT / "README.md"  # files first


#: the wheel must stay small: the model and the parallel-tempering references, not the training data
MAX_WHEEL_MB = 20


@pytest.mark.slow
def test_wheel_holds_the_shipped_files_and_samples_outside_the_repository(tmp_path):
    """Build the wheel offline from a copy of the sources, install it elsewhere, sample with ``--model ala2``."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "trade_md", src / "trade_md", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
                    str(tmp_path / "dist"), "./src"], cwd=tmp_path, check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("trade_md-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(datasets.path(n).relative_to(ROOT)) for n in datasets.names()}
    assert "trade_md/data/models/ala2_trade.pt" in shipped and shipped <= names, shipped - names
    assert {n for n in names if n.startswith("trade_md/data/")} == shipped  # nothing else, no training data
    assert wheel.stat().st_size < MAX_WHEEL_MB * 2**20, wheel.stat().st_size
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import trade_md; print(trade_md.__file__)"], cwd=elsewhere,
                           env=env, check=True, capture_output=True, text=True).stdout
    assert Path(where.strip()).is_relative_to(site), where
    run = subprocess.run([sys.executable, "-m", "trade_md", "sample", "--model", "ala2", "--temperature", "300",
                          "--n", "20", "--out", "s.dcd"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "s.dcd").is_file() and len((elsewhere / "s.weights.csv").read_text().splitlines()) == 22
