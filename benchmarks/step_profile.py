"""Where the time of one TRADE training step goes, on alanine dipeptide.

Builds the model and target as ``trade_md.workflow.run`` does with the
settings of ``workflows/ala2_quick.yaml`` (trade_grid, batch 256, 256 SNIS
samples per grid point, refresh every 10 steps, 8 grid points over 250-700 K,
T0 = 600 K, training frames from ``data/ala2_600K.h5``), loads the shipped
trained weights (shipped model ``ala2``, ``trade_md/data/models/ala2_trade.pt``) when they fit (so flow samples
and their energies look like those of a run in progress, not of an identity
flow), and runs the library's own ``trade_md.train._Trainer.train_step`` past the curriculum
(full transfer weight, all 8 grid points active). Library functions are
wrapped by monkeypatching with ``perf_counter`` / ``process_time`` timers, so
the breakdown is that of the real step:

- data batch indexing: the boundary term (``NLLBoundary.loss``) minus the ``nll`` call in it;
- boundary NLL forward: ``losses.nll`` (the flow's ``log_prob`` of the batch);
- gradient loss: evaluation points (flow samples at c, ``model.sample``), their
  OpenMM energies (the target ``t``), ``log_prob`` with a graph, the
  ``torch.autograd.grad(..., create_graph=True)`` of ``d/dT log p``, the rest;
- backward: ``total.backward()``; the double-backward share is that minus the
  backward of an NLL-only step measured in the same run;
- SNIS refresh: ``ConditionGrid.refresh`` (flow samples + OpenMM energies +
  log-weights), timed on the steps that refresh and amortized over
  ``refresh_every`` steps;
- gradient clipping, optimizer step, and the remainder (``other``).

Also: an NLL-only step (method ``nll``), the TRADE/NLL ratio, float64 against
float32, 2 torch threads against 1, and OpenMM energy throughput for the SNIS
batch (8 x 256 flow samples) and for one step's 256 evaluation points with
``OpenMMEnergy(n_workers=1)`` and ``n_workers=2``.

Figures are medians over steps (wall clock and process CPU time; CPU time is
robust to other processes sharing the cores, wall time is not). Ratios are
measured in the same run. About 3-5 minutes on a loaded 2-core machine.

Usage: ``python benchmarks/step_profile.py [--steps 40] [--quick]`` (``--help`` for the step counts)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import trade_md.losses as losses_mod
import trade_md.methods.boundary as boundary_mod
import trade_md.methods.trade_grid as trade_grid_mod
import trade_md.train as train_mod
from trade_md import datasets
from trade_md.config import load_yaml
from trade_md.curriculum import curriculum_steps
from trade_md.data import ReferenceData
from trade_md.energy import OpenMMEnergy
from trade_md.generator import BoltzmannGenerator
from trade_md.system import MolecularSystem
from trade_md.targets import BoltzmannTarget
from trade_md.workflow import WorkflowConfig, _training_data

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ timing
class PhaseTimer:
    """Nested inclusive timers: per step, path ("step/transfer/...") -> [wall s, CPU s]."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.current: dict = defaultdict(lambda: [0.0, 0.0])

    def begin(self) -> None:
        self.current = defaultdict(lambda: [0.0, 0.0])

    @contextlib.contextmanager
    def phase(self, name: str):
        self.stack.append(name)
        path = "/".join(self.stack)
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.current[path][0] += time.perf_counter() - w
            self.current[path][1] += time.process_time() - c
            self.stack.pop()

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with self.phase(name):
                return fn(*args, **kwargs)

        return wrapped


@contextlib.contextmanager
def instrumented(trainer, timer: PhaseTimer):
    """Wrap the library pieces one step calls; restore module-level names afterwards."""
    model, grid, loss_target = trainer.model, getattr(trainer.method, "grid", None), trainer.method.target
    # instance attributes (this trainer's objects only)
    trainer.boundary.loss = timer.wrap("boundary", trainer.boundary.loss)
    trainer.method.loss = timer.wrap("transfer", trainer.method.loss)
    trainer.optimizer.step = timer.wrap("optimizer_step", trainer.optimizer.step)
    trainer.scheduler.step = timer.wrap("scheduler_step", trainer.scheduler.step)
    model.log_prob = timer.wrap("log_prob", model.log_prob)
    model.sample = timer.wrap("sample", model.sample)
    if loss_target is not None:
        loss_target.energy_fn = timer.wrap("openmm_energy", loss_target.energy_fn)
    if grid is not None:
        grid.refresh = timer.wrap("snis_refresh", grid.refresh)
        grid.causality_weights = timer.wrap("causality_weights", grid.causality_weights)
        grid.record_losses = timer.wrap("record_losses", grid.record_losses)
    # module-level names, looked up at call time by the boundary, the grid method and losses.py
    patches = [
        (boundary_mod, "nll", "nll_forward"),
        (trade_grid_mod, "grid_gradient_loss", "gradient_loss"),
        (losses_mod, "condition_derivative", "dlogp_dT"),
        (torch.autograd, "grad", "autograd_grad"),
        (torch.Tensor, "backward", "backward"),
        (torch.nn.utils, "clip_grad_norm_", "clip_grad_norm"),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, label in patches:
            setattr(obj, name, timer.wrap(label, getattr(obj, name)))
        yield
    finally:
        for obj, name, original in saved:
            setattr(obj, name, original)
        trainer.boundary.__dict__.pop("loss", None)
        trainer.method.__dict__.pop("loss", None)
        for name in ("log_prob", "sample"):
            model.__dict__.pop(name, None)
        if grid is not None:
            for name in ("refresh", "causality_weights", "record_losses"):
                grid.__dict__.pop(name, None)
        if loss_target is not None:
            loss_target.energy_fn = loss_target.energy_fn.__wrapped__
        trainer.optimizer.step = trainer.optimizer.step.__wrapped__
        trainer.scheduler.__dict__.pop("step", None)


def run_steps(trainer, warmup: int, steps: int) -> list[dict]:
    """Run ``warmup + steps`` real train_steps; per timed step: path -> (wall, CPU) seconds."""
    timer = PhaseTimer()
    records = []
    with instrumented(trainer, timer):
        for i in range(warmup + steps):
            timer.begin()
            with timer.phase("step"):
                row = trainer.train_step()
            if i >= warmup:
                rec = {k: tuple(v) for k, v in timer.current.items()}
                rec["_event"] = row["event"]
                records.append(rec)
    return records


# --------------------------------------------------------------- building
@dataclasses.dataclass
class Setup:
    wf: WorkflowConfig
    system: MolecularSystem
    energy: OpenMMEnergy
    model32: torch.nn.Module  # CartesianFlow (bg.density), float32
    data32: object
    data64: object
    weights: str


def build(workflow: Path, weights: str) -> Setup:
    """What ``trade_md.workflow.run`` builds for training (model, target, data); the
    model is the trained one in ``weights`` (a file or shipped name) when it loads."""
    wf = load_yaml(WorkflowConfig, workflow)
    system = MolecularSystem.alanine_dipeptide()
    data = ReferenceData.load(ROOT / wf.data.train, system=system).subsample(wf.data.stride)
    energy = OpenMMEnergy(system, platform=wf.platform, n_workers=wf.energy_workers)
    torch.manual_seed(wf.run.seed)
    try:
        bg = BoltzmannGenerator.load(datasets.resolve(weights, "model"), system=system, energy=energy)
        note = f"trained weights of {weights} (its own architecture)"
    except Exception as err:  # noqa: BLE001 - fall back to the fresh model, say so
        frames = data.xyz[:: max(1, len(data) // 5000)].astype(np.float64) if wf.model.scale_from_data else None
        bg = BoltzmannGenerator.for_system(system, reference_temperature=data.temperature, reference_frames=frames,
                                           flow=wf.model.flow, torsion_style=wf.model.torsion_style, energy=energy)
        note = f"fresh initialization, near-identity flow ({weights} did not load: {err})"
    bg = bg.to(torch.float32)
    return Setup(wf, system, energy, bg.density, _training_data(data, wf, torch.float32),
                 _training_data(data, wf, torch.float64), note)


def make_trainer(setup: Setup, method: str, dtype: torch.dtype, out_dir: Path):
    """A fresh _Trainer on a copy of the model, positioned right after the curriculum."""
    wf = setup.wf
    model = copy.deepcopy(setup.model32).to(dtype)
    data = setup.data32 if dtype == torch.float32 else setup.data64
    transfer = dataclasses.replace(wf.transfer, method=method)
    # many total steps so the one-cycle scheduler never runs out while we time steps
    optim = dataclasses.replace(wf.optim, steps=1_000_000)
    run = dataclasses.replace(wf.run, out_dir=None, threads=wf.threads, progress=False)
    cfg = train_mod.TrainConfig(transfer=transfer, optim=optim, run=run)
    trainer = train_mod._Trainer(model, BoltzmannTarget(setup.energy.energy), data, cfg, out_dir)
    return trainer, curriculum_steps(transfer)


# ---------------------------------------------------------------- summary
def med(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def get(rec: dict, path: str, k: int) -> float:
    return rec.get("step/" + path, (0.0, 0.0))[k] if path else rec["step"][k]


def is_refresh(rec: dict) -> bool:
    return "step/transfer/snis_refresh/sample" in rec


GL = "transfer/gradient_loss"
# (label, function of (record, k) -> seconds), exclusive components of a non-refresh step
TRADE_PARTS = [
    ("data batch indexing", lambda r, k: get(r, "boundary", k) - get(r, "boundary/nll_forward", k)),
    ("boundary NLL forward (log_prob)", lambda r, k: get(r, "boundary/nll_forward", k)),
    ("eval points: flow sampling at c", lambda r, k: get(r, GL + "/sample", k)),
    ("eval points: OpenMM energies (t)", lambda r, k: get(r, GL + "/openmm_energy", k)),
    ("grad loss: log_prob with graph", lambda r, k: get(r, GL + "/dlogp_dT/log_prob", k)),
    ("grad loss: autograd.grad create_graph", lambda r, k: get(r, GL + "/dlogp_dT/autograd_grad", k)),
    ("grad loss: rest (penalty, weights)", lambda r, k: get(r, GL, k) - get(r, GL + "/sample", k)
     - get(r, GL + "/openmm_energy", k) - get(r, GL + "/dlogp_dT/log_prob", k)
     - get(r, GL + "/dlogp_dT/autograd_grad", k)),
    ("transfer: rest (grid mask, logs)", lambda r, k: get(r, "transfer", k) - get(r, GL, k)
     - get(r, "transfer/snis_refresh", k)),
    ("backward (NLL + double backward)", lambda r, k: get(r, "backward", k)),
    ("clip_grad_norm_", lambda r, k: get(r, "clip_grad_norm", k)),
    ("optimizer step (Adam)", lambda r, k: get(r, "optimizer_step", k)),
]
NLL_PARTS = [TRADE_PARTS[i] for i in (0, 1, 8, 9, 10)]
REFRESH_PARTS = [
    ("flow sampling (8 x 256)", lambda r, k: get(r, "transfer/snis_refresh/sample", k)),
    ("OpenMM energies (2048)", lambda r, k: get(r, "transfer/snis_refresh/openmm_energy", k)),
    ("log-weights, SNIS, EMA", lambda r, k: get(r, "transfer/snis_refresh", k)
     - get(r, "transfer/snis_refresh/sample", k) - get(r, "transfer/snis_refresh/openmm_energy", k)),
]


def summarize(records: list[dict], parts, refresh_every: int) -> dict:
    """Medians (ms, wall and CPU) of each part over non-refresh steps; refresh over refresh steps."""
    plain = [r for r in records if not is_refresh(r)]
    fresh = [r for r in records if is_refresh(r)]
    out = {"n_steps": len(records), "n_refresh": len(fresh),
           "events": sorted({r["_event"] for r in records if r["_event"]})}
    for k, unit in ((0, "wall"), (1, "cpu")):
        rows = {label: 1e3 * med(f(r, k) for r in plain) for label, f in parts}
        rows["other (float(loss), spike check, scheduler)"] = 1e3 * med(
            get(r, "", k) - sum(f(r, k) for _, f in parts) for r in plain)
        step = 1e3 * med(get(r, "", k) for r in plain)
        result = {"parts": rows, "step": step}
        if fresh:
            refresh = 1e3 * med(get(r, "transfer/snis_refresh", k) for r in fresh)
            result["refresh"] = refresh
            result["refresh_parts"] = {label: 1e3 * med(f(r, k) for r in fresh) for label, f in REFRESH_PARTS}
            result["amortized"] = step + refresh / refresh_every
        else:
            result["amortized"] = step
        # plain mean over whole refresh cycles (includes everything, noisier)
        result["mean"] = 1e3 * statistics.fmean(get(r, "", k) for r in records)
        out[unit] = result
    return out


def print_breakdown(title: str, trade: dict, nll: dict, refresh_every: int) -> None:
    print(f"\n=== {title} ===")
    print(f"{trade['n_steps']} timed TRADE steps ({trade['n_refresh']} with an SNIS refresh), "
          f"{nll['n_steps']} NLL-only steps; events: {trade['events'] + nll['events'] or 'none'}")
    print(f"{'part of the TRADE step':46s} {'wall ms':>9s} {'CPU ms':>9s} {'% (CPU)':>8s}")
    w, c = trade["wall"], trade["cpu"]
    total = c["amortized"]
    backward = "backward (NLL + double backward)"
    for label in w["parts"]:
        share = 100 * c["parts"][label] / total
        print(f"  {label:44s} {w['parts'][label]:9.1f} {c['parts'][label]:9.1f} {share:7.1f}%")
        if label == backward:
            nb = (nll["wall"]["parts"][backward], nll["cpu"]["parts"][backward])
            tb = (w["parts"][backward], c["parts"][backward])
            print(f"    {'of which NLL backward (NLL-only step)':42s} {nb[0]:9.1f} {nb[1]:9.1f} "
                  f"{100 * nb[1] / total:7.1f}%")
            print(f"    {'of which double backward (difference)':42s} {tb[0] - nb[0]:9.1f} {tb[1] - nb[1]:9.1f} "
                  f"{100 * (tb[1] - nb[1]) / total:7.1f}%")
    if "refresh" in c:
        print(f"  {'SNIS refresh, amortized (/' + str(refresh_every) + ')':44s} {w['refresh'] / refresh_every:9.1f} "
              f"{c['refresh'] / refresh_every:9.1f} {100 * c['refresh'] / refresh_every / total:7.1f}%")
        print(f"    {'one refresh of 8 grid points, of which:':42s} {w['refresh']:9.1f} {c['refresh']:9.1f}")
        for label in c["refresh_parts"]:
            print(f"      {label:40s} {w['refresh_parts'][label]:9.1f} {c['refresh_parts'][label]:9.1f}")
    print(f"  {'TRADE step without refresh (median)':44s} {w['step']:9.1f} {c['step']:9.1f}")
    print(f"  {'TRADE step, refresh amortized':44s} {w['amortized']:9.1f} {c['amortized']:9.1f} {100.0:7.1f}%")
    print(f"  {'TRADE step, plain mean over the run':44s} {w['mean']:9.1f} {c['mean']:9.1f}")
    print(f"{'NLL-only step':46s} {'wall ms':>9s} {'CPU ms':>9s}")
    for label in nll["wall"]["parts"]:
        print(f"  {label:44s} {nll['wall']['parts'][label]:9.1f} {nll['cpu']['parts'][label]:9.1f}")
    print(f"  {'NLL-only step (median)':44s} {nll['wall']['step']:9.1f} {nll['cpu']['step']:9.1f}")
    print(f"  {'TRADE (amortized) / NLL ratio':44s} {w['amortized'] / nll['wall']['step']:9.2f} "
          f"{c['amortized'] / nll['cpu']['step']:9.2f}")


# ---------------------------------------------------------- energy throughput
def energy_throughput(setup: Setup, repeats: int) -> list[tuple]:
    """configs/s of OpenMMEnergy.energy on flow samples: the SNIS batch (8 x 256) and one step's 256 points."""
    tc = setup.wf.transfer
    grid = trade_grid_mod.ConditionGrid(*tc.condition_range, 600.0, tc.grid_size, 0.9, 1.0)
    n = setup.wf.transfer.snis_samples
    c = grid.conditions.to(torch.float32).repeat_interleave(n)
    with torch.no_grad():
        x, _ = setup.model32.sample(c.shape[0], c)
    x = x.double()
    rows = []
    for workers in (1, 2):
        bridge = OpenMMEnergy(setup.system, n_workers=workers)
        for label, batch in (("SNIS batch", x), ("eval points", x[: setup.wf.optim.batch_size])):
            bridge.energy(batch)  # warm-up: context / worker processes
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                e = bridge.energy(batch)
                times.append(time.perf_counter() - t)
            nonfinite = float((~torch.isfinite(e)).float().mean())
            rows.append((workers, bridge.platform, label, len(batch), len(batch) / med(times),
                         1e3 * med(times), nonfinite))
        bridge.close()
    return rows


# --------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed TRADE steps, float32 / 1 thread")
    parser.add_argument("--float64-steps", type=int, default=20, help="timed TRADE steps, float64 / 1 thread")
    parser.add_argument("--thread2-steps", type=int, default=6,
                        help="timed TRADE steps, float32 / 2 threads (slow on a loaded machine)")
    parser.add_argument("--nll-steps", type=int, default=20,
                        help="timed NLL-only steps per configuration (a third of them with 2 threads)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--energy-repeats", type=int, default=5)
    parser.add_argument("--workflow", default=str(ROOT / "workflows/ala2_quick.yaml"))
    parser.add_argument("--weights", default="ala2", help="model file or shipped model name")
    parser.add_argument("--quick", action="store_true", help="few steps (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.float64_steps, args.thread2_steps, args.nll_steps = 11, 11, 2, 5
        args.warmup, args.energy_repeats = 1, 2
    start = time.perf_counter()
    load_start = os.getloadavg()
    torch.set_num_threads(1)
    setup = build(Path(args.workflow), args.weights)
    tc = setup.wf.transfer
    print(f"alanine dipeptide, {len(setup.data32.train)} training frames; method {tc.method}, "
          f"batch {setup.wf.optim.batch_size}, {tc.snis_samples} SNIS samples x {tc.grid_size} grid points "
          f"over {tc.condition_range[0]:g}-{tc.condition_range[1]:g} K, refresh every {tc.refresh_every}; "
          f"model: {setup.weights}; {sum(p.numel() for p in setup.model32.parameters())} parameters; "
          f"OpenMM platform {setup.energy.platform}, energy workers {setup.energy.n_workers}")
    print(f"torch {torch.__version__}; {os.cpu_count()} CPUs; load average at start {load_start[0]:.2f}")

    configs = [("float32, 1 thread", torch.float32, 1, args.steps),
               ("float64, 1 thread", torch.float64, 1, args.float64_steps),
               ("float32, 2 threads", torch.float32, 2, args.thread2_steps)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, dtype, threads, steps in configs:
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            trainer, curriculum = make_trainer(setup, "trade_grid", dtype, Path(tmp))
            # start a few steps before a refresh step, after the curriculum: the warm-up fills the SNIS table
            trainer.step = curriculum + tc.refresh_every - args.warmup
            trade = summarize(run_steps(trainer, args.warmup, steps), TRADE_PARTS, tc.refresh_every)
            torch.manual_seed(0)
            trainer, _ = make_trainer(setup, "nll", dtype, Path(tmp))
            nll_steps = args.nll_steps if threads == 1 else max(3, args.nll_steps // 3)
            nll = summarize(run_steps(trainer, args.warmup, nll_steps), NLL_PARTS, tc.refresh_every)
            results[name] = (trade, nll)
            print_breakdown(name, trade, nll, tc.refresh_every)
    torch.set_num_threads(1)

    print("\n=== summary (medians, ms; TRADE with refresh amortized) ===")
    print(f"{'configuration':20s} {'NLL wall':>9s} {'NLL CPU':>9s} {'TRADE wall':>11s} {'TRADE CPU':>10s} "
          f"{'ratio wall':>10s} {'ratio CPU':>10s}")
    for name, (trade, nll) in results.items():
        print(f"{name:20s} {nll['wall']['step']:9.1f} {nll['cpu']['step']:9.1f} {trade['wall']['amortized']:11.1f} "
              f"{trade['cpu']['amortized']:10.1f} {trade['wall']['amortized'] / nll['wall']['step']:10.2f} "
              f"{trade['cpu']['amortized'] / nll['cpu']['step']:10.2f}")
    base = results["float32, 1 thread"]
    for name in ("float64, 1 thread", "float32, 2 threads"):
        trade, nll = results[name]
        print(f"{name + ' / float32, 1 thread':40s} "
              f"TRADE wall {trade['wall']['amortized'] / base[0]['wall']['amortized']:5.2f}x"
              f"  CPU {trade['cpu']['amortized'] / base[0]['cpu']['amortized']:5.2f}x;"
              f"  NLL wall {nll['wall']['step'] / base[1]['wall']['step']:5.2f}x"
              f"  CPU {nll['cpu']['step'] / base[1]['cpu']['step']:5.2f}x")

    print("\n=== OpenMM energies of flow samples (OpenMMEnergy.energy, wall clock) ===")
    print(f"{'workers':>7s} {'platform':>9s} {'batch':>12s} {'configs':>7s} {'configs/s':>10s} {'ms':>8s} "
          f"{'non-finite':>10s}")
    rows = energy_throughput(setup, args.energy_repeats)
    for workers, platform, label, n, rate, ms, bad in rows:
        print(f"{workers:7d} {platform:>9s} {label:>12s} {n:7d} {rate:10.0f} {ms:8.1f} {100 * bad:9.1f}%")
    for label in ("SNIS batch", "eval points"):
        one = next(r for r in rows if r[0] == 1 and r[2] == label)[4]
        two = next(r for r in rows if r[0] == 2 and r[2] == label)[4]
        print(f"  {label}: 2 workers / 1 worker = {two / one:.2f}x")
    load_end = os.getloadavg()
    print(f"\nload average at end {load_end[0]:.2f} (1 min), {load_end[1]:.2f} (5 min); "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
