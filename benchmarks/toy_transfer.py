"""Benchmark: temperature transfer on the 5-D multi-well, TRADE against its baselines.

Every method trains the same conditional flow from exact samples at ``T = 1``
only, over the range ``T in [0.5, 1.5]``, and is scored at
``T in {0.5, 0.75, 1.0, 1.25, 1.5}`` by ``KL(p_true || p_theta)`` (exact
``log Z`` and exact samples) and the relative ESS of importance weights of
model samples; mean and standard deviation over seeds.

    python benchmarks/toy_transfer.py                      # 3 seeds, 2 workers, ~15 min on 2 cores
    python benchmarks/toy_transfer.py --steps 300 --seeds 0  # smoke run

Writes ``results.json`` and ``table.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trade_md._io import atomic_write_text
from trade_md.flows import FlowConfig
from trade_md.testsystems import ProblemConfig, ToyRunConfig, build_problem, transfer_metrics
from trade_md.train import OptimConfig, RunConfig, TransferConfig, train

TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5)
#: label -> (transfer.method, TSF-like scaled-base model)
METHODS = {
    "TRADE grid": ("trade_grid", False),
    "TRADE continuous": ("trade_continuous", False),
    "NLL-only": ("nll", False),
    "NLL, scaled base (TSF-like)": ("nll", True),
    "reweighting": ("reweighting", False),
    "backward KL": ("reverse_kl", False),
}


def make_config(method: str, scaled_base: bool, seed: int, steps: int, dim: int) -> ToyRunConfig:
    """The shared setup: 20k samples at T = 1, a 3x2-layer spline flow, one-cycle Adam."""
    curriculum = steps // 5
    return ToyRunConfig(
        problem=ProblemConfig(
            name="multiwell", dim=dim, reference=1.0, n_train=20000, n_validation=2000,
            scaled_base_only=scaled_base, dtype="float32", seed=seed,
        ),
        flow=FlowConfig(schedule=("real/0 | *", "real/1 | *"), repeats=3, hidden=(64, 64), bins=8, real_bound=4.0),
        transfer=TransferConfig(
            method=method, condition_range=(0.5, 1.5),
            warmup_steps=curriculum, ramp_steps=curriculum, widen_steps=curriculum,
        ),
        optim=OptimConfig(steps=steps, batch_size=256, lr=3e-3),
        run=RunConfig(seed=seed, progress=False, validate_every=50, checkpoint_every=steps, threads=1),
    )  # fmt: skip


def run_one(job: tuple) -> dict:
    """Train one (method, seed) and score it at every temperature."""
    label, seed, steps, dim, n_eval = job
    method, scaled_base = METHODS[label]
    config = make_config(method, scaled_base, seed, steps, dim)
    problem = build_problem(config.problem, config.flow)
    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        train(problem.model, problem.target, problem.data, config, folder)
    seconds = time.time() - start
    scores = {T: transfer_metrics(problem.model, problem.target, T, n_eval, seed=1000 + seed) for T in TEMPERATURES}
    return {
        "method": label, "seed": seed, "seconds": seconds,
        "kl": {str(T): m.kl for T, m in scores.items()}, "ess": {str(T): m.ess for T, m in scores.items()},
    }  # fmt: skip


def _mean_spread(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def table(results: list[dict]) -> str:
    """Markdown table: KL (nats) and relative ESS per method and temperature, mean ± std over seeds."""
    header = (
        "| method | "
        + " | ".join(f"KL T={T}" for T in TEMPERATURES)
        + " | "
        + " | ".join(f"ESS T={T}" for T in TEMPERATURES)
        + " | s/run |"
    )
    lines = [header, "|" + "---|" * (2 * len(TEMPERATURES) + 2)]
    for label in METHODS:
        runs = [r for r in results if r["method"] == label]
        if not runs:
            continue
        kl = [_mean_spread([r["kl"][str(T)] for r in runs], 3) for T in TEMPERATURES]
        ess = [_mean_spread([r["ess"][str(T)] for r in runs], 2) for T in TEMPERATURES]
        seconds = statistics.fmean(r["seconds"] for r in runs)
        lines.append(f"| {label} | " + " | ".join(kl + ess) + f" | {seconds:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dim", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--n-eval", type=int, default=20000, help="samples per temperature for KL and ESS")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/toy_transfer"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(label, seed, args.steps, args.dim, args.n_eval) for seed in args.seeds for label in args.methods]
    start = time.time()
    with multiprocessing.get_context("spawn").Pool(
        args.workers, initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:
        results = []
        for result in pool.imap_unordered(run_one, jobs):
            results.append(result)
            print(f"[{time.time() - start:6.0f} s] {result['method']} seed {result['seed']}: "
                  f"KL(T=0.5) {result['kl']['0.5']:.3f}, {result['seconds']:.0f} s", flush=True)  # fmt: skip
    results.sort(key=lambda r: (list(METHODS).index(r["method"]), r["seed"]))
    text = table(results)
    atomic_write_text(
        args.out / "results.json", json.dumps({"args": {**vars(args), "out": str(args.out)}, "runs": results}, indent=2)
    )
    atomic_write_text(args.out / "table.md", text)
    print(f"\n{args.dim}-D multi-well, data at T = 1 only, {len(args.seeds)} seeds, {args.steps} steps, "
          f"{time.time() - start:.0f} s in all\n")  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
