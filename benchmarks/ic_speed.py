"""Speed of the internal-coordinate transform on alanine dipeptide.

Forward (x -> ic) and inverse (ic -> x) at batch 256, float32, one torch
thread, CPU; prints the median milliseconds per call over repeats and the
ratio to bgflow's global IC transform measured on this kind of machine
(12.7 ms forward, 21 ms inverse at batch 256).

Usage: ``python benchmarks/ic_speed.py [--batch 256] [--repeats 50] [--torsion-style proper]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from trade_md.coordinates import InternalCoordinates
from trade_md.system import MolecularSystem

BGFLOW_MS = {"forward": 12.7, "inverse": 21.0}


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--torsion-style", default="proper", choices=["proper", "relative"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    system = MolecularSystem.alanine_dipeptide()
    ict = InternalCoordinates.for_system(system, torsion_style=args.torsion_style)
    x = torch.as_tensor(system.reference_xyz, dtype=torch.float32)
    x = x + 0.005 * torch.randn(args.batch, system.n_atoms, 3)
    ic, _ = ict(x)
    n_gen = len(ict.zmatrix.generations())
    print(f"alanine dipeptide, {args.torsion_style} torsions: dim={ict.dim}, {n_gen} placement generations, "
          f"batch {args.batch}, float32, {torch.get_num_threads()} thread")
    results = {}
    with torch.no_grad():
        results["forward"] = median_ms(lambda: ict(x), args.repeats)
        results["inverse"] = median_ms(lambda: ict.inverse(ic), args.repeats)
    x_grad = x.clone().requires_grad_(True)
    results["forward+backward"] = median_ms(lambda: ict(x_grad)[1].sum().backward(), args.repeats)
    ic_grad = ic.clone().requires_grad_(True)
    results["inverse+backward"] = median_ms(
        lambda: (lambda out: (out[0].sum() + out[1].sum()).backward())(ict.inverse(ic_grad)), args.repeats
    )
    for name, ms in results.items():
        ref = BGFLOW_MS.get(name)
        cmp = f"  (bgflow {ref:.1f} ms: {ref / ms:.0f}x faster)" if ref else ""
        print(f"{name:>18}: {ms:7.3f} ms/call{cmp}")


if __name__ == "__main__":
    main()
