"""Scale-out on one machine: 1 process against 2 (training steps/s, samples/s, energies/s), one run.

* training: TRADE (trade_grid, central-difference derivative, on from the
  first step) on alanine dipeptide with the README job's flow, global batch
  256; 1 process against 2 ranks (torch.distributed, gloo, spawned like
  torchrun's workers), the same number of steps; time from the first to the
  last step (process start-up and imports left out, reported separately);
* sampling: ``sample_sharded`` of n configurations with energies, 1 process
  against 2 ranks;
* energies + forces: :class:`~trade_md.energy.OpenMMEnergy` with 1 and 2
  worker processes on batches of 256 frames.

    python benchmarks/scaling.py [--steps 60] [--samples 20000]

Prints a table and writes ``benchmarks/scaling_results.json`` when asked
(``--out``). On a machine whose cores are busy with other jobs, the ratios
say how this machine is loaded, not how trade_md scales; state the load.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from trade_md.distributed import World
from trade_md.energy import OpenMMEnergy
from trade_md.flows import FlowConfig
from trade_md.generator import BoltzmannGenerator, sample_sharded
from trade_md.system import MolecularSystem
from trade_md.targets import BoltzmannTarget
from trade_md.train import train
from trade_md.losses import GradientLossConfig
from trade_md.train_config import OptimConfig, RunConfig, TrainConfig, TransferConfig
from trade_md.training_data import BoundaryData, TrainingData

DATA = Path(__file__).resolve().parents[1] / "data" / "ala2_600K.h5"


def _problem(frames: np.ndarray):
    system = MolecularSystem.alanine_dipeptide()
    energy = OpenMMEnergy(system)
    torch.manual_seed(0)
    bg = BoltzmannGenerator.for_system(system, reference_temperature=600.0, reference_frames=frames[::20],
                                       flow=FlowConfig(), energy=energy)
    x = torch.as_tensor(frames, dtype=torch.float32)
    part = lambda rows: BoundaryData(x[rows], torch.full((len(x[rows]),), 600.0))  # noqa: E731
    data = TrainingData(part(slice(0, int(0.9 * len(x)))), part(slice(int(0.9 * len(x)), None)))
    return bg, BoltzmannTarget(energy.energy), data


def _config(steps: int) -> TrainConfig:
    transfer = TransferConfig(method="trade_grid", condition_range=(250.0, 700.0), warmup_steps=0, ramp_steps=0,
                              widen_steps=0, grid_size=8, snis_samples=256,
                              gradient=GradientLossConfig(derivative="central_difference"))
    return TrainConfig(transfer=transfer, optim=OptimConfig(steps=steps, batch_size=256, lr=5e-4),
                       run=RunConfig(progress=False, validate_every=steps, checkpoint_every=steps))


def _worker(rank: int, size: int, port: int, steps: int, n_samples: int, frames_path: str, out: str) -> None:
    if size > 1:
        os.environ.update(WORLD_SIZE=str(size), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    torch.set_num_threads(1)
    bg, target, data = _problem(np.load(frames_path))
    world = World.from_env()
    world.start(torch.empty(0))
    world.barrier()
    start = time.perf_counter()
    train(bg.density, target, data, _config(steps), Path(out) / f"train_{size}", resume=False)
    world.barrier()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        sample_sharded(bg, n_samples, 300.0, world, seed=1)
    world.barrier()
    sample_s = time.perf_counter() - start
    if world.is_main:
        Path(out, f"timing_{size}.json").write_text(json.dumps({"train_s": train_s, "sample_s": sample_s}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_run(size: int, steps: int, n_samples: int, frames_path: str, out: str) -> dict:
    start = time.perf_counter()
    mp.spawn(_worker, args=(size, _free_port(), steps, n_samples, frames_path, out), nprocs=size, join=True)
    timing = json.loads(Path(out, f"timing_{size}.json").read_text())
    timing["wall_s"] = time.perf_counter() - start
    return timing


def energy_rate(workers: int, xyz: np.ndarray, repeats: int) -> float:
    energy = OpenMMEnergy(MolecularSystem.alanine_dipeptide(), n_workers=workers)
    energy.energy_and_forces(xyz)  # start the workers and contexts
    start = time.perf_counter()
    for _ in range(repeats):
        energy.energy_and_forces(xyz)
    return len(xyz) * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--samples", type=int, default=20000, help="configurations sampled per run")
    parser.add_argument("--energy-repeats", type=int, default=20, help="batches of 256 frames per energy rate")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"{DATA} not found: the benchmark trains on the shipped 600 K alanine-dipeptide data")
    from trade_md.data import ReferenceData

    frames = ReferenceData.load(DATA).xyz[:20000:4]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        frames_path = str(Path(tmp) / "frames.npy")
        np.save(frames_path, frames)
        runs = {size: timed_run(size, args.steps, args.samples, frames_path, tmp) for size in (1, 2)}
    xyz = frames[:256].astype(np.float64)
    energies = {w: energy_rate(w, xyz, args.energy_repeats) for w in (1, 2)}
    rows = [
        ("training steps/s", args.steps / runs[1]["train_s"], args.steps / runs[2]["train_s"]),
        ("samples/s (with energies)", args.samples / runs[1]["sample_s"], args.samples / runs[2]["sample_s"]),
        ("energies+forces/s", energies[1], energies[2]),
    ]
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} before the run")
    print("| figure | 1 process | 2 processes | ratio |\n|---|---|---|---|")
    for name, one, two in rows:
        print(f"| {name} | {one:.2f} | {two:.2f} | {two / one:.2f} |")
    print(f"wall time incl. start-up: {runs[1]['wall_s']:.0f} s (1 process), {runs[2]['wall_s']:.0f} s (2)")
    if args.out:
        Path(args.out).write_text(json.dumps({"load_average": load, "runs": runs, "energies_per_s": energies,
                                              "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
