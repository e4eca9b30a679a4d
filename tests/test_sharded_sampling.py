"""Sharded sampling (trade_md.generator.sample_sharded): 2 CPU ranks draw their shares, rank 0 gathers."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from trade_md.distributed import World, rank_seed
from trade_md.flows import FlowConfig
from trade_md.generator import BoltzmannGenerator, Samples, sample_sharded
from trade_md.system import MolecularSystem

N = 301
TEMPS = np.repeat([450.0, 600.0], [150, 151])


def model():
    torch.manual_seed(0)  # the same untrained flow in every process (float64 whatever the default dtype)
    return BoltzmannGenerator.for_system(MolecularSystem.alanine_dipeptide(), reference_temperature=600.0,
                                         flow=FlowConfig(hidden=(16,), bins=4)).double()


def _worker(rank, port, out):
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = World.from_env()
    world.start(torch.empty(0))
    with torch.no_grad():
        samples = sample_sharded(model(), N, TEMPS, world, seed=5)
    assert (samples is None) == (rank != 0)
    if samples is not None:
        samples.save(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # spawning two processes that import torch and OpenMM, ~40 s on the loaded machine
def test_two_ranks_draw_their_shares_with_their_own_streams(tmp_path):
    out = tmp_path / "samples.h5"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    both = Samples.load(out)
    assert len(both) == N and both.metadata["ranks"] == 2
    np.testing.assert_array_equal(both.temperature, TEMPS)
    bg = model()
    with torch.no_grad():
        for rank, rows in ((0, slice(0, N // 2)), (1, slice(N // 2, N))):
            torch.manual_seed(rank_seed(5, rank))
            alone = bg.sample(len(TEMPS[rows]), TEMPS[rows])
            np.testing.assert_array_equal(both.xyz[rows], alone.xyz)
            np.testing.assert_allclose(both.log_weights[rows], alone.log_weights, rtol=1e-12)


def test_one_process_samples_exactly_as_before():
    bg = model()
    with torch.no_grad():
        sharded = sample_sharded(bg, 20, 450.0, World(), seed=3)
        torch.manual_seed(3)
        plain = bg.sample(20, 450.0)
    np.testing.assert_array_equal(sharded.xyz, plain.xyz)
    np.testing.assert_array_equal(sharded.energies, plain.energies)
    assert "ranks" not in sharded.metadata
    with pytest.raises(ValueError, match=r"temperature must be a scalar or have shape \(20,\)"):
        sample_sharded(bg, 20, [300.0, 400.0], World())


def test_joining_samples_checks_what_they_hold():
    bg = model()
    with torch.no_grad():
        a, b = bg.sample(3, 450.0), bg.sample(2, 600.0, energies=False)
    joined = Samples.concatenate([a, a])
    assert len(joined) == 6 and np.array_equal(joined.energies[3:], a.energies)
    with pytest.raises(ValueError, match="some samples to join have energies and some do not"):
        Samples.concatenate([a, b])
    with pytest.raises(ValueError, match="at least one"):
        Samples.concatenate([])


@pytest.mark.slow  # torchrun with 2 ranks importing torch and OpenMM, ~40 s on the loaded machine
def test_trade_md_sample_under_torchrun_writes_one_file_of_all_shares(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "s.h5"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "trade_md", "sample", "--model", "ala2", "--temperature", "300,450", "--n-samples", "50",
                           "--seed", "4", "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"{out}: 100 samples at 300, 450 K") == 1  # rank 0 alone reports and writes
    s = Samples.load(out)
    assert len(s) == 100 and s.metadata["ranks"] == 2
    np.testing.assert_array_equal(s.temperature, np.repeat([300.0, 450.0], 50))
    assert np.isfinite(s.log_weights).mean() > 0.9
