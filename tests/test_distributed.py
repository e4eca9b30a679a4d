"""Data-parallel training (trade_md.distributed): 2 CPU ranks with gloo, spawned by torch.multiprocessing.

Each rank draws batch_size / 2 with its own random stream (rank_seed), so the
global batch cannot equal a single process's draws of batch_size from one
stream. The strongest true property tested: after every step the parameters
are identical on both ranks and equal (float tolerance) to one process that
computes the two ranks' losses from the same streams and steps on their mean.
"""

import copy
import dataclasses
import socket
import types

import pytest
import torch
import torch.multiprocessing as mp

from trade_md import train as train_module
from trade_md.config import ConfigError
from trade_md.curriculum import condition_range, transfer_weight
from trade_md.distributed import World, rank_seed
from trade_md.testsystems import build_problem

from .test_train import make_config, read_log

STEPS = 8


def config(batch=64):
    # curriculum 2: the TRADE term (trade_grid) is on from step 3, its table refreshed every 2 steps
    c = make_config(steps=STEPS, curriculum=2, n_train=400, hidden=(16,), batch=batch, refresh_every=2)
    return dataclasses.replace(c, run=dataclasses.replace(c.run, validate_every=3, checkpoint_every=2))


def build(name, frames=None):
    """(problem with model/target/data, training config) of the toy target or of alanine dipeptide.

    ``frames``: path of a .npy file of 600 K alanine-dipeptide frames (nm), for ``name == "ala2"``.
    """
    cfg = config()
    if name == "toy":
        return build_problem(cfg.problem, cfg.flow), cfg
    import numpy as np

    from trade_md.energy import OpenMMEnergy
    from trade_md.flows import FlowConfig
    from trade_md.generator import BoltzmannGenerator
    from trade_md.system import MolecularSystem
    from trade_md.targets import BoltzmannTarget
    from trade_md.train_config import TrainConfig
    from trade_md.training_data import BoundaryData, TrainingData

    system = MolecularSystem.alanine_dipeptide()
    xyz = np.load(frames)
    energy = OpenMMEnergy(system, platform="Reference")
    torch.manual_seed(0)  # the same initial flow in every process
    bg = BoltzmannGenerator.for_system(system, reference_temperature=600.0, reference_frames=xyz,
                                       flow=FlowConfig(hidden=(16,), bins=4), energy=energy).double()
    x = torch.as_tensor(xyz)
    part = lambda rows: BoundaryData(x[rows], torch.full((len(x[rows]),), 600.0, dtype=torch.float64))
    transfer = dataclasses.replace(cfg.transfer, condition_range=(450.0, 700.0), snis_samples=16)
    train_cfg = TrainConfig(transfer=transfer, optim=dataclasses.replace(cfg.optim, batch_size=16, lr=1e-3),
                            run=cfg.run)
    problem = types.SimpleNamespace(model=bg.density, target=BoltzmannTarget(energy.energy),
                                    data=TrainingData(part(slice(0, 160)), part(slice(160, None))))
    return problem, train_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Stop(Exception):
    pass


def _worker(rank, port, out, resume, stop_after, results, name, frames):
    import os

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    snapshots = []
    step = train_module._Trainer.train_step

    def recording(self):
        row = step(self)
        snapshots.append(torch.cat([p.detach().reshape(-1).clone() for p in self.model.parameters()]))
        if self.step == stop_after:
            self.checkpoint()
            raise _Stop
        return row

    train_module._Trainer.train_step = recording
    problem, cfg = build(name, frames)
    try:
        train_module.train(problem.model, problem.target, problem.data, cfg, out, resume=resume)
    except _Stop:
        pass
    torch.save(torch.stack(snapshots), f"{results}/rank{rank}.pt")


def spawn(out, results, resume=False, stop_after=-1, name="toy", frames=None):
    results.mkdir(exist_ok=True)
    mp.spawn(_worker, args=(_free_port(), str(out), resume, stop_after, str(results), name,
                            None if frames is None else str(frames)), nprocs=2, join=True)
    return [torch.load(results / f"rank{r}.pt") for r in range(2)]


def single_process_reference(tmp_path, name="toy", frames=None):
    """One process: the two ranks' losses from their streams, backward of their mean, the trainer's optimizer."""
    problem, cfg = build(name, frames)
    half = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, batch_size=cfg.optim.batch_size // 2))
    ranks = [train_module._Trainer(problem.model, problem.target, problem.data, half, tmp_path) for _ in range(2)]
    main, tc = ranks[0], cfg.transfer
    streams = []
    for r in range(2):
        torch.manual_seed(rank_seed(cfg.run.seed, r))
        streams.append(torch.get_rng_state())
    snapshots = []
    for step in range(STEPS):
        main.optimizer.zero_grad(set_to_none=True)
        low, high = condition_range(tc, main.reference, step)
        weight = transfer_weight(tc, step)
        for r, trainer in enumerate(ranks):
            torch.set_rng_state(streams[r])
            total = tc.boundary_weight * trainer.boundary.loss()
            term = None if weight == 0 else trainer.method.loss(step, low, high)
            if term is not None:
                total = total + weight * term.loss
            (total / 2).backward()
            streams[r] = torch.get_rng_state()
        torch.nn.utils.clip_grad_norm_(main.params, cfg.optim.grad_clip)
        main.optimizer.step()
        main.scheduler.step()
        ranks[1].method.load_state_dict(copy.deepcopy(main.method.state_dict()))  # rank 0's table, as broadcast
        snapshots.append(torch.cat([p.detach().reshape(-1).clone() for p in problem.model.parameters()]))
    return torch.stack(snapshots)


@pytest.mark.slow  # ~75 s on the loaded 2-core machine: spawning and importing dominate
def test_two_ranks_keep_equal_parameters_equal_to_the_mean_of_their_losses(tmp_path):
    rank0, rank1 = spawn(tmp_path / "run", tmp_path / "results")
    assert rank0.shape[0] == STEPS
    for step in range(STEPS):
        assert torch.equal(rank0[step], rank1[step]), f"ranks differ after step {step + 1}"
    assert not torch.equal(rank0[0], rank0[-1])
    reference = single_process_reference(tmp_path / "reference")
    torch.testing.assert_close(rank0, reference, rtol=1e-5, atol=1e-6)
    rows = read_log(tmp_path / "run" / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))  # one log, each step once
    assert sum(r["transfer"] != "nan" for r in rows) >= 4  # the TRADE term ran


@pytest.mark.slow  # ~2 min on the loaded 2-core machine
def test_two_ranks_on_alanine_dipeptide_match_one_process_stepping_on_their_mean_loss(tmp_path, ala2_frames):
    """The same property with OpenMM energies: each rank its own OpenMMEnergy, TRADE on from step 3."""
    import numpy as np

    frames = tmp_path / "frames.npy"
    np.save(frames, ala2_frames)
    rank0, rank1 = spawn(tmp_path / "run", tmp_path / "results", name="ala2", frames=frames)
    for step in range(STEPS):
        assert torch.equal(rank0[step], rank1[step]), f"ranks differ after step {step + 1}"
    reference = single_process_reference(tmp_path / "reference", name="ala2", frames=frames)
    torch.testing.assert_close(rank0, reference, rtol=1e-5, atol=1e-6)
    rows = read_log(tmp_path / "run" / "log.csv")
    assert sum(r["transfer"] != "nan" for r in rows) >= 4


@pytest.mark.slow  # three 2-rank runs, ~3 min
def test_two_ranks_resume_exactly_from_rank_0s_checkpoint(tmp_path):
    full = spawn(tmp_path / "full", tmp_path / "r_full")[0]
    first = spawn(tmp_path / "killed", tmp_path / "r_first", stop_after=4)[0]
    assert first.shape[0] == 4
    second = spawn(tmp_path / "killed", tmp_path / "r_second", resume=True)
    assert torch.equal(second[0], second[1])
    torch.testing.assert_close(torch.cat([first, second[0]]), full, rtol=0, atol=0)


def test_a_single_process_checkpoint_does_not_resume_under_two_ranks(tmp_path, monkeypatch):
    cfg = config()
    problem = build_problem(cfg.problem, cfg.flow)
    trainer = train_module._Trainer(problem.model, problem.target, problem.data, cfg, tmp_path)
    state = trainer.state_dict()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    two = train_module._Trainer(problem.model, problem.target, problem.data, cfg, tmp_path)
    with pytest.raises(ConfigError, match="written by a run of 1 process"):
        two.load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size 63 must be divisible by the 2"):
        train_module._Trainer(problem.model, problem.target, problem.data, config(batch=63), tmp_path)


def test_the_environment_is_read_with_one_line_errors(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert World.from_env() == World(0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not World.from_env().distributed
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not: launch with torchrun"):
        World.from_env()
    for name, value in (("RANK", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="RANK=2 is outside 0..1"):
        World.from_env()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        World.from_env()
    monkeypatch.setenv("RANK", "1")
    world = World.from_env()
    assert (world.rank, world.size, world.is_main) == (1, 2, False)
    with pytest.raises(ValueError, match="cpu \\(gloo\\) or cuda \\(nccl\\), not on meta"):
        world.start(torch.empty(0, device="meta"))
