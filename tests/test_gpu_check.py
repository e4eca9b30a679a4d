"""``benchmarks/gpu_check.py``: one line without CUDA; every part runs end to end on the CPU (``--device cpu``)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: the check would run")
def test_without_cuda_it_says_so_in_one_line_and_exits_cleanly():
    result = run()
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and "\n" not in output
    assert output.startswith("gpu_check: no CUDA device is present") and "nothing was checked" in output


@pytest.mark.slow
def test_every_part_runs_on_the_cpu():
    result = run("--device", "cpu", "--frames", "8", "--workers", "1,2", "--steps", "8", "--timed-steps", "1",
                 "--batch-size", "8", "--snis-samples", "8", "--samples", "64", "--cpu-samples", "32")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for text in ("alanine dipeptide (22 atoms, 8 frames)", "Ace-Ala3-Nme (42 atoms, 8 frames)",
                 "CPU x2", "CPU x1 vs Reference: max relative error", "trained 8 steps", "full TRADE step",
                 "relative ESS", "gpu_check: energies PASS"):
        assert text in out, text
    assert "FAIL" not in out
