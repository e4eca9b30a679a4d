"""Parallel tempering under MPI (``mpiexec -n 2 trade-md simulate --temperatures ...``) against the serial run.

On the CPU platform (one thread) the files of a 2-rank run, and of a 2-rank
run killed after its first chunk and resumed with the same command, equal
the serial run's bit for bit.  Not on the Reference platform: it draws the
Langevin noise of all contexts of a process from one process-wide random
stream, seeded by the last context made, so the noise depends on which
contexts share a process (a serial Reference run is reproducible, and
resumes exactly, but 2 ranks draw other noise).
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trade_md.data import ReferenceData
from trade_md.tempering import temperature_blocks

pytestmark = pytest.mark.openmm

TEMPERATURES = (300, 400, 500, 600)
# 2 equilibration + 6 production iterations of 250 steps, 4 chunks of 2 iterations
ARGS = ["--system", "alanine-dipeptide", "--temperatures", ",".join(map(str, TEMPERATURES)),
        "--nanoseconds", "0.003", "--report-interval-ps", "0.5", "--equilibration-ps", "1",
        "--checkpoint-frames", "2", "--seed", "11", "--platform", "CPU"]


def _mpiexec() -> str | None:
    """The mpiexec next to this python (``pip install mpich``), else the one on the PATH."""
    here = Path(sys.executable).with_name("mpiexec")
    return str(here) if here.is_file() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs mpi4py and an mpiexec (pip install trade_md[mpi], which brings the mpich wheel)")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        env.pop(var, None)  # pytest itself started by an MPI launcher: the serial run must stay serial
    return env


def _command(out: Path, ranks: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "trade_md", "simulate", *ARGS, "--out", str(out)]
    return [MPIEXEC, "-n", str(ranks), *cmd] if ranks > 1 else cmd


def _simulate(out: Path, ranks: int = 1) -> float:
    """Run the command to the end; return its wall time, s."""
    t0 = time.perf_counter()
    done = subprocess.run(_command(out, ranks), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - t0


def _outputs(out: Path) -> dict[int, ReferenceData]:
    return {t: ReferenceData.load(out.parent / f"{out.stem}_{t}K.h5") for t in TEMPERATURES}


def _assert_same_files(serial: dict, other: dict) -> None:
    for t in TEMPERATURES:
        a, b = serial[t], other[t]
        assert len(a) == len(b) == 6 and a.temperature == b.temperature == t
        assert a.xyz.dtype == b.xyz.dtype and a.xyz.shape == b.xyz.shape
        np.testing.assert_array_equal(a.xyz, b.xyz)
        np.testing.assert_array_equal(a.energies, b.energies)
        np.testing.assert_array_equal(a.time, b.time)
        assert dict(a.metadata) == dict(b.metadata)  # settings, replica indices, acceptance, round trips


def _descendants(pid: int) -> list[int]:
    """Processes started by ``pid``, their children and so on (Linux /proc; elsewhere none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_all(run: subprocess.Popen) -> list[int]:
    """kill -9 of mpiexec, its proxies and the ranks (Hydra starts each in a session of its own); their ids."""
    pids = [run.pid, *_descendants(run.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> dict[int, ReferenceData]:
    out = tmp_path_factory.mktemp("serial") / "pt.h5"
    seconds = _simulate(out)
    print(f"serial: {seconds:.1f} s wall")
    return _outputs(out)


def test_blocks_of_temperatures():
    assert temperature_blocks(4, 2) == [range(0, 2), range(2, 4)]
    assert temperature_blocks(5, 2) == [range(0, 3), range(3, 5)]
    assert temperature_blocks(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert temperature_blocks(3, 3) == [range(0, 1), range(1, 2), range(2, 3)]
    assert temperature_blocks(13, 1) == [range(0, 13)]
    for n in range(1, 12):
        for ranks in range(1, n + 1):
            blocks = temperature_blocks(n, ranks)
            assert [k for b in blocks for k in b] == list(range(n))  # contiguous, in order, each state once
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    with pytest.raises(ValueError, match="3 MPI ranks for 2 temperatures.*mpiexec -n 2"):
        temperature_blocks(2, 3)


@needs_mpi
def test_two_ranks_write_the_files_of_the_serial_run(serial, tmp_path):
    out = tmp_path / "pt.h5"
    seconds = _simulate(out, ranks=2)
    print(f"2 ranks: {seconds:.1f} s wall")
    _assert_same_files(serial, _outputs(out))
    assert not (tmp_path / "pt.pt.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"pt_{t}K.h5" for t in TEMPERATURES]


@needs_mpi
def test_killed_two_rank_run_resumes_with_the_same_command(serial, tmp_path):
    out = tmp_path / "pt.h5"
    checkpoint = tmp_path / "pt.pt.partial" / "checkpoint.json"
    run = subprocess.Popen(_command(out, ranks=2), env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:
            if checkpoint.exists() and json.loads(checkpoint.read_text())["n_chunks"] >= 1:
                break  # (written atomically: never read half-written)
            time.sleep(0.01)
        assert run.poll() is None, "the run ended before it could be killed after its first chunk"
    finally:
        killed = _kill_all(run)
    assert len(killed) >= 3 or not Path("/proc/self/stat").exists()  # mpiexec and the two ranks at least
    assert 1 <= json.loads(checkpoint.read_text())["n_chunks"] < 4
    assert not any(tmp_path.glob("pt_*K.h5"))
    _simulate(out, ranks=2)
    _assert_same_files(serial, _outputs(out))
