"""Speed of the conditional flow on an alanine-dipeptide-sized problem.

Times, on one torch thread at batch 256, for a 48-D flow (9 bonds, 20 angles,
19 torsions; default FlowConfig):

- NLL step: log_prob, mean NLL, backward, Adam step;
- double-backward (TRADE) step: log_prob, ``g = d/dcontext log p`` with
  ``create_graph=True``, a squared loss on ``g``, backward, Adam step
  (``transfer.gradient.derivative: autograd``);
- central-difference (TRADE) step: the same with ``g`` from log_prob at
  ``context +- h`` in one doubled batch, a plain backward
  (``derivative: central_difference``, ``h = 0.01``);
- sampling 10k points with their log-density (no autograd graph);

and the ratios of the TRADE steps to the NLL step, as medians of
wall-clock and of process CPU time (the latter is robust to other processes
sharing the core). Prototype figures (issue 5): 148 ms, 348 ms, 3.1 s;
targets: no slower, ratio <= 2 (issue 16).

Usage: ``python benchmarks/flow_speed.py [--repeats 20] [--threads 1] [--schedule-repeats 1]``
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from trade_md.flows import ConditionalFlow, FlowConfig

KINDS = ["bond"] * 9 + ["angle"] * 20 + ["torsion"] * 19
PROTOTYPE_MS = {"nll": 148.0, "double_backward": 348.0, "central_difference": float("nan"), "sample_10k": 3100.0}
DIFFERENCE_STEP = 0.01


def _median_ms(step: Callable[[], None], repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds of ``step`` (CPU time ignores time-slicing on a busy host)."""
    for _ in range(warmup):
        step()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return 1e3 * sorted(wall)[len(wall) // 2], 1e3 * sorted(cpu)[len(cpu) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions per figure")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--schedule-repeats", type=int, default=1, help="FlowConfig.repeats (1: 7 layers here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    flow = ConditionalFlow(KINDS, context_dim=1, config=FlowConfig(repeats=args.schedule_repeats))
    with torch.no_grad():  # move away from the identity so splines are non-trivial
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-4)
    b = args.batch
    context = torch.log(torch.empty(b, 1).uniform_(0.4, 1.1))
    with torch.no_grad():
        x, _ = flow.sample(b, context)
    target = torch.randn(b)

    def nll_step() -> None:
        optimizer.zero_grad()
        loss = -flow.log_prob(x, context).mean()
        loss.backward()
        optimizer.step()

    def double_backward_step() -> None:
        optimizer.zero_grad()
        c = context.clone().requires_grad_(True)
        log_p = flow.log_prob(x, c)
        (g,) = torch.autograd.grad(log_p.sum(), c, create_graph=True)
        loss = (g[:, 0] - target).square().mean()
        loss.backward()
        optimizer.step()

    def central_difference_step() -> None:
        optimizer.zero_grad()
        h = DIFFERENCE_STEP
        both = flow.log_prob(torch.cat([x, x]), torch.cat([context + h, context - h]))
        g = (both[:b] - both[b:]) / (2 * h)
        loss = (g - target).square().mean()
        loss.backward()
        optimizer.step()

    def sample_10k() -> None:
        with torch.no_grad():
            flow.sample(10_000, torch.zeros(10_000, 1))

    figures = {
        "nll": _median_ms(nll_step, args.repeats),
        "double_backward": _median_ms(double_backward_step, args.repeats),
        "central_difference": _median_ms(central_difference_step, args.repeats),
        "sample_10k": _median_ms(sample_10k, max(3, args.repeats // 5), warmup=1),
    }
    n_params = sum(p.numel() for p in flow.parameters())
    print(f"flow: D={flow.dim}, {len(flow.layers)} coupling layers, {n_params} parameters, "
          f"batch {b}, {torch.get_num_threads()} thread(s)")
    print(f"{'':>18}  {'wall ms':>9}  {'CPU ms':>9}  prototype ms")
    for name, (wall, cpu) in figures.items():
        print(f"{name:>18}  {wall:9.1f}  {cpu:9.1f}  {PROTOTYPE_MS[name]:9.0f}")
    for name in ("double_backward", "central_difference"):
        ratios = [figures[name][i] / figures["nll"][i] for i in (0, 1)]
        print(f"{'ratio':>18}  {ratios[0]:9.2f}  {ratios[1]:9.2f}  ({name.replace('_', '-')} / NLL step, target <= 2)")

if __name__ == "__main__":
    main()
