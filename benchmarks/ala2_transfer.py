"""Alanine dipeptide, 600 K -> 300/450/600 K: TRADE against baselines, and the cost against MD.

Methods, metrics and outputs: benchmarks/transfer_benchmark.py (TRADE, NLL-only,
reweighting from 600 K, backward KL; each trained on the same 600 K MD frames
with the same flow and budget; relative ESS, NLL of the MD frames,
Ramachandran JS of the reweighted samples vs the MD noise floor, and
dF = F(alpha_L/C7ax) - F(rest) in k_B T with bootstrap errors, per
temperature).

Cost: CPU time of plain 300 K MD needed to estimate that free-energy
difference to 0.2 k_B T (from the measured MD speed and the measured rate of
independent basin visits in a plain 300 K run), against trade_md's train +
sample time.

    python benchmarks/ala2_transfer.py [--steps 6000] [--n 10000] [--out runs/bench_ala2]
Every stage resumes: rerun the same command after an interruption.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from transfer_benchmark import BenchmarkResult, main  # benchmarks/ is on sys.path when run as a script

from trade_md.analysis.observables import BASIN_ALPHA_L_C7AX, assign_basins, ramachandran
from trade_md.data import ReferenceData
from trade_md.simulate import simulate

TEMPERATURES = (300.0, 450.0, 600.0)


def md_cost(system, out: Path, nanoseconds: float, reference_dF: dict) -> dict:
    """Plain 300 K MD: speed and the time to estimate dF(alpha_L) to 0.2 k_B T.

    Parameters
    ----------
    system : MolecularSystem
    out : folder of the run (``md_300K_plain.h5``, ``md_speed.json``)
    nanoseconds : length of the plain MD run, ns
    reference_dF : the parallel-tempering reference's dF at 300 K, kT (reported as is)
    """
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


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--md-ns", type=float, default=5.0, help="plain 300 K MD for the cost estimate, ns")


def _cost(args: argparse.Namespace, result: BenchmarkResult) -> tuple[str, dict]:
    """The cost line of ``results.md`` and the ``cost`` entry of ``results.json``."""
    timing = json.loads((result.folders["TRADE"] / "timings.json").read_text())
    cost = md_cost(result.system, result.out, args.md_ns, result.rows[("TRADE", 300.0)]["dF_alphaL_md"])
    trade_cpu_h = (timing.get("train_s", float("nan")) + timing.get("sample_300K_s", 0.0)) / 3600.0
    cost["trade_md_cpu_hours"] = trade_cpu_h
    bound = "at least " if cost["visits_lower_bound_only"] else "about "
    line = (f"Cost at 300 K: plain MD needs {bound}{cost['needed_ns_for_0.2kT']:.0f} ns "
            f"({cost['md_cpu_hours_for_0.2kT']:.1f} CPU hours at {cost['ns_per_cpu_day']:.0f} ns/day; "
            f"{cost['alphaL_visits']} alpha_L visits in {cost['plain_md_ns']:g} ns) to reach 0.2 kT on dF(alpha_L); "
            f"trade_md train + sample: {trade_cpu_h:.2f} CPU hours.")
    return line, {"cost": cost}


if __name__ == "__main__":
    raise SystemExit(main(description=__doc__, title="Alanine dipeptide: temperature transfer from 600 K MD",
                          workflow="workflows/ala2_temperature_transfer.yaml", out="runs/bench_ala2",
                          temperatures=TEMPERATURES, steps=6000, extra_arguments=_arguments, epilogue=_cost))
