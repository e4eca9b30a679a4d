"""Alanine dipeptide, 600 K -> 300/450/600 K: TRADE against baselines, and the cost against MD.

Methods (each trained on the same 600 K MD frames, same flow and budget):
  TRADE           transfer.method = trade_grid
  NLL-only        transfer.method = nll (the conditional flow sees data at 600 K only)
  reweighting     the NLL-only model sampled at 600 K, importance-weighted to T
  backward KL     transfer.method = reverse_kl over the range (+ NLL at 600 K)
Metrics per temperature against MD references (parallel tempering, independent
of the training data): NLL of the MD frames, Ramachandran KL(MD || model) with
and without reweighting (fixed 30x30 bins), relative ESS, and the free-energy
difference alpha_L/C7ax (0 <= phi < 2.1) vs the rest with bootstrap errors.

Cost: CPU time of plain 300 K MD needed to estimate that free-energy
difference to 0.2 k_B T (from the measured MD speed and the measured rate of
independent basin visits in a plain 300 K run), against trade_md's train +
sample time.

    python benchmarks/ala2_transfer.py [--steps 6000] [--out runs/bench_ala2]
Every stage resumes: rerun the same command after an interruption.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from trade_md.analysis.evaluate import temperature_metrics
from trade_md.analysis.observables import BASIN_ALPHA_L_C7AX, assign_basins, ramachandran
from trade_md.config import load_yaml
from trade_md.data import ReferenceData
from trade_md.generator import BoltzmannGenerator, Samples
from trade_md.simulate import simulate
from trade_md.units import reduced_energy
from trade_md.workflow import WorkflowConfig, build_system, run

TEMPERATURES = (300.0, 450.0, 600.0)
METHODS = {"TRADE": "trade_grid", "NLL-only": "nll", "backward KL": "reverse_kl"}


def train_method(base: WorkflowConfig, method: str, steps: int, out: Path) -> Path:
    warm = max(1, steps // 6)
    cfg = dataclasses.replace(
        base, out_dir=str(out),
        transfer=dataclasses.replace(base.transfer, method=method, warmup_steps=warm, ramp_steps=warm,
                                     widen_steps=warm),
        optim=dataclasses.replace(base.optim, steps=steps),
        sample=dataclasses.replace(base.sample, temperatures=TEMPERATURES),
        evaluate=dataclasses.replace(base.evaluate, references={}),
    )
    start = time.perf_counter()
    run(cfg)
    timings = out / "timings.json"
    data = json.loads(timings.read_text()) if timings.exists() else {}
    data.setdefault("wall_s_total", time.perf_counter() - start)
    timings.write_text(json.dumps(data, indent=2))
    return out


def reweighted_from_c0(model: BoltzmannGenerator, t: float, n: int, t0: float) -> Samples:
    """Samples of the model at T0 with importance weights to T: -U/(k_B T) - log p(x|T0)."""
    s = model.sample(n, t0)
    log_w = -reduced_energy(s.energies, t) - s.log_prob
    return Samples(s.xyz, s.log_prob, np.full(len(s), t), s.topology, s.energies, log_w, s.metadata)


def md_cost(system, out: Path, nanoseconds: float, reference_dF: dict) -> dict:
    """Plain 300 K MD: speed and the time to estimate dF(alpha_L) to 0.2 k_B T."""
    path = out / "md_300K_plain.h5"
    start = time.perf_counter()
    if not path.exists():
        simulate(system, 300.0, nanoseconds, seed=11, out=path)
    wall = time.perf_counter() - start
    data = ReferenceData.load(path)
    phi, psi = ramachandran(data.xyz, data.topology)
    inside = assign_basins(phi[:, 0], psi[:, 0]) == BASIN_ALPHA_L_C7AX
    entries = int(np.sum(inside[1:] & ~inside[:-1]) + inside[0])
    # With n independent visits of a basin of population p << 1, the relative error of p is
    # about 1/sqrt(n), so dF = -log(p/(1-p)) has an error of about 1/sqrt(n) k_B T: 0.2 k_B T
    # needs about 25 visits.  Visits per ns from this run (at least one assumed if none seen).
    rate = max(entries, 1) / nanoseconds
    speed = json.loads((out / "md_speed.json").read_text())["ns_per_cpu_day"] if (out / "md_speed.json").exists() \
        else nanoseconds / (wall / 86400.0)
    (out / "md_speed.json").write_text(json.dumps({"ns_per_cpu_day": speed}))
    needed_ns = 25.0 / rate
    return {"plain_md_ns": nanoseconds, "alphaL_visits": entries, "fraction_alphaL": float(inside.mean()),
            "needed_ns_for_0.2kT": needed_ns, "ns_per_cpu_day": speed,
            "md_cpu_hours_for_0.2kT": needed_ns / speed * 24.0, "reference_dF_300K": reference_dF,
            "visits_lower_bound_only": entries == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", default="workflows/ala2_temperature_transfer.yaml")
    parser.add_argument("--steps", type=int, default=6000, help="training steps per method")
    parser.add_argument("--n", type=int, default=10000, help="samples per temperature")
    parser.add_argument("--md-ns", type=float, default=5.0, help="plain 300 K MD for the cost estimate, ns")
    parser.add_argument("--out", default="runs/bench_ala2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_yaml(WorkflowConfig, args.workflow)
    base = dataclasses.replace(base, sample=dataclasses.replace(base.sample, n=args.n),
                               run=dataclasses.replace(base.run, progress=False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    system = build_system(base.system)
    folders = {name: train_method(base, method, args.steps, out / method) for name, method in METHODS.items()}
    refs = {float(t): ReferenceData.load(p, system=system) for t, p in base.evaluate.references.items()
            if float(t) in TEMPERATURES}
    missing = sorted(set(TEMPERATURES) - set(refs))
    if missing:
        raise SystemExit(f"no MD reference at {missing} K in {args.workflow}")
    rows: dict = {}
    for name, method in METHODS.items():
        folder = folders[name]
        model = BoltzmannGenerator.load(folder / "model.pt", system=system)
        for t in TEMPERATURES:
            s = Samples.load(folder / f"samples_{t:g}K.h5", system=system)
            rows[(name, t)] = temperature_metrics(s, refs[t], model)
        if method == "nll":
            torch.manual_seed(1)
            for t in TEMPERATURES:
                s = reweighted_from_c0(model, t, args.n, model.reference_temperature)
                rows[("reweighting", t)] = temperature_metrics(s, refs[t], model)
    timing = json.loads((out / "trade_grid" / "timings.json").read_text())
    cost = md_cost(system, out, args.md_ns, rows[("TRADE", 300.0)]["dF_alphaL_md"])
    trade_cpu_h = (timing.get("train_s", float("nan")) + timing.get("sample_300K_s", 0.0)) / 3600.0
    cost["trade_md_cpu_hours"] = trade_cpu_h
    lines = ["| method | T [K] | NLL (MD frames) | KL(MD‖model) | KL(MD‖reweighted) | rel. ESS | dF αL model rw [kT] | dF αL MD [kT] |",
             "|---|---|---|---|---|---|---|---|"]

    def fmt(d):
        return "n/a" if d is None or d.get("value") is None else f"{d['value']:.2f} ± {d['stderr']:.2f}"

    for (name, t), m in rows.items():
        lines.append(f"| {name} | {t:g} | {fmt(m.get('nll_md'))} | {m['kl_md_model']:.3f} (floor {m['kl_md_model_floor']:.3f}) "
                     f"| {m.get('kl_md_model_reweighted', float('nan')):.3f} | {m.get('relative_ess', float('nan')):.2%} "
                     f"| {fmt(m.get('dF_alphaL_reweighted'))} | {fmt(m['dF_alphaL_md'])} |")
    lines.append("")
    bound = "at least " if cost["visits_lower_bound_only"] else "about "
    lines.append(f"Cost at 300 K: plain MD needs {bound}{cost['needed_ns_for_0.2kT']:.0f} ns "
                 f"({cost['md_cpu_hours_for_0.2kT']:.1f} CPU hours at {cost['ns_per_cpu_day']:.0f} ns/day; "
                 f"{cost['alphaL_visits']} alpha_L visits in {cost['plain_md_ns']:g} ns) to reach 0.2 kT on dF(alpha_L); "
                 f"trade_md train + sample: {trade_cpu_h:.2f} CPU hours.")
    table = "\n".join(lines)
    print(table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"rows": {f"{k[0]}@{k[1]:g}": v for k, v in rows.items()},
                                                  "cost": cost}, indent=2, default=float))


if __name__ == "__main__":
    main()
