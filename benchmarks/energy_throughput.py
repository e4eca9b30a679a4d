"""Energies + forces per second for batches of 256 alanine-dipeptide configurations.

Baseline: a naive loop (positions as a Quantity of Vec3, one getState per
property) on the platform OpenMM picks by default (the fastest it ranks, CPU
here) and on the Reference platform.  Against: OpenMMEnergy with 1 and 2
worker processes (automatic platform).  Ratios are computed in the same run.

    python benchmarks/energy_throughput.py [--batches 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import openmm
import openmm.unit as u
import torch

from trade_md.energy import OpenMMEnergy
from trade_md.system import MolecularSystem


def naive(system: openmm.System, xyz: np.ndarray, platform: str | None) -> None:
    integ = openmm.VerletIntegrator(0.001)
    ctx = (openmm.Context(system, integ) if platform is None
           else openmm.Context(system, integ, openmm.Platform.getPlatformByName(platform)))
    for x in xyz:
        ctx.setPositions(u.Quantity([openmm.Vec3(*r) for r in x], u.nanometer))
        ctx.getState(getEnergy=True).getPotentialEnergy()
        ctx.getState(getForces=True).getForces()


def rate(fn, n_configs: int, repeats: int) -> float:
    fn()  # warm-up (contexts, worker start)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_configs * repeats / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=20, help="batches of 256 per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    system = MolecularSystem.alanine_dipeptide()
    xyz = system.reference_xyz[None] + np.random.default_rng(0).normal(0, 0.003, (256, 22, 3))
    default_platform = openmm.Context(system.openmm_system, openmm.VerletIntegrator(0.001)).getPlatform().getName()
    rows = [
        (f"naive loop, OpenMM default platform ({default_platform})",
         rate(lambda: naive(system.openmm_system, xyz, None), 256, max(1, args.batches // 10))),
        ("naive loop, Reference platform", rate(lambda: naive(system.openmm_system, xyz, "Reference"), 256, args.batches)),
    ]
    for workers in (1, 2):
        bridge = OpenMMEnergy(system, n_workers=workers)
        rows.append((f"OpenMMEnergy, {workers} worker(s), {bridge.platform}",
                     rate(lambda: bridge.energy_and_forces(xyz), 256, args.batches)))
        bridge.close()
    base_default, base_ref = rows[0][1], rows[1][1]
    print(f"{'method':58s} {'configs/s':>10s} {'vs default':>10s} {'vs naive Ref':>12s}")
    for name, r in rows:
        print(f"{name:58s} {r:10.0f} {r / base_default:9.1f}x {r / base_ref:11.2f}x")


if __name__ == "__main__":
    main()
