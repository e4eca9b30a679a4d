"""Ace-Ala3-Nme (ala4), 600 K -> 300/450/600/700 K: TRADE against baselines, per residue.

Methods, metrics and outputs: benchmarks/transfer_benchmark.py (TRADE, NLL-only,
reweighting from 600 K, backward KL; each trained on the same 600 K MD
(the workflow's data: 3 x 50 ns) with the flow of workflows/ala4_temperature_transfer.yaml and the same
budget; per method and temperature the relative ESS, the NLL of the MD frames,
per residue (ALA2, ALA3, ALA4) the Ramachandran JS of the reweighted samples
against the MD noise floor and dF = F(alpha_L/C7ax) - F(rest) in k_B T against
the parallel-tempering reference's with bootstrap errors, and the JS of the
27 joint basin states with its floor).  Writes results.md, results.json and
results.png into --out.

The references data/ala4_pt_<T>K.h5 are needed only for the evaluation: the
methods can be trained before they exist (the command then stops with a
message naming the missing files; rerun it later).

    python benchmarks/ala4_transfer.py [--steps 18000] [--n 10000] [--out runs/bench_ala4]
Every stage resumes: rerun the same command after an interruption.
"""
from __future__ import annotations

from transfer_benchmark import main  # benchmarks/ is on sys.path when run as a script

TEMPERATURES = (300.0, 450.0, 600.0, 700.0)

if __name__ == "__main__":
    raise SystemExit(main(description=__doc__, title="Ace-Ala3-Nme: temperature transfer from 600 K MD",
                          workflow="workflows/ala4_temperature_transfer.yaml", out="runs/bench_ala4",
                          temperatures=TEMPERATURES, steps=18000))
