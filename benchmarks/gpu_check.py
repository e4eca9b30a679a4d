"""The device check of issue 18: energies, a TRADE run and sampling on CUDA, against the CPU in the same run.

About 2-4 minutes on one GPU (at most 5). Three parts:

1. Energies + forces of 256 MD frames (600 K Langevin) of alanine dipeptide
   (22 atoms) and Ace-Ala3-Nme (42 atoms), one ``setPositions``/``getState``
   per configuration: the Reference and CPU (1 thread) platforms, the CUDA
   platform (mixed precision) with one context, and several CUDA contexts used
   concurrently (``OpenMMEnergy(n_workers=k)``, one process and context each;
   the design in docs/architecture.md, "Energies on a GPU"). CUDA must equal
   Reference within 1e-3 relative (energy: ``|dE| / max(|E|, 1 kJ/mol)`` per
   frame; forces: ``|dF| / |F|`` per frame); a failure exits with status 1.
2. 200 TRADE steps on alanine dipeptide (``workflows/ala2_quick.yaml``'s
   model and transfer settings, the curriculum compressed to the first three
   quarters of the run, training frames from the shipped 600 K PT data) with
   the model on the device and energies from the fastest CUDA setting of
   part 1; then seconds per full TRADE step (past the curriculum, the mean of
   ``--timed-steps`` steps, by default one refresh period of the SNIS table, so
   one refresh is among them) on the device and on the CPU as a CPU user runs
   it today (model on the CPU, one torch thread, OpenMM's automatic CPU-side
   platform, one context).
3. 100,000 samples at 300 K with energies from the trained model on the
   device; the CPU draws ``--cpu-samples`` for its rate.

Every rate is printed with its ratio to the CPU figure measured in this run.
Without a CUDA device (and ``--device cuda``, the default) it prints one line
and exits with status 0. ``--device cpu`` runs every part on the CPU (the CPU
platform standing in for CUDA): a dry run of the script, used by the slow tests.

    python benchmarks/gpu_check.py [--device cuda] [--steps 200] [--samples 100000] [--help]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-3


def md_frames(system, n: int, seed: int = 1) -> np.ndarray:
    """``n`` frames (n, n_atoms, 3) nm of 600 K Langevin MD on the Reference platform, 100 fs apart."""
    import openmm

    integrator = openmm.LangevinMiddleIntegrator(600.0, 1.0, 0.002)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system.openmm_system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(system.reference_xyz)
    context.setVelocitiesToTemperature(600.0, seed)
    integrator.step(1000)
    frames = []
    for _ in range(n):
        integrator.step(50)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    return np.asarray(frames)


def best_time(fn, repeats: int = 3) -> float:
    """Shortest wall time of ``repeats`` calls (s), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def relative_errors(e, f, e_ref, f_ref) -> tuple[float, float]:
    """Largest per-frame relative energy and force errors against the reference."""
    de = np.abs(e - e_ref) / np.maximum(np.abs(e_ref), 1.0)
    df = np.linalg.norm((f - f_ref).reshape(len(f), -1), axis=1) / np.linalg.norm(f_ref.reshape(len(f), -1), axis=1)
    return float(de.max()), float(df.max())


def check_energies(name: str, system, frames: np.ndarray, platform: str, workers: list[int]) -> tuple[bool, int]:
    """Part 1 for one molecule: per-configuration times, concurrent contexts, accuracy; (passed, fastest workers)."""
    from trade_md.energy import OpenMMEnergy

    n = len(frames)
    results, per_config = {}, {}
    for label, plat, k in ([("Reference", "Reference", 1), ("CPU", "CPU", 1)]
                           + [(f"{platform} x{k}", platform, k) for k in workers]):
        bridge = OpenMMEnergy(system, platform=plat, n_workers=k)
        per_config[label] = best_time(lambda: bridge.energy_and_forces(frames)) / n
        results[label] = bridge.energy_and_forces(frames)
        bridge.close()
    base = per_config["Reference"]
    print(f"  {name} ({system.n_atoms} atoms, {n} frames), us per configuration (energy + forces) and speed-up "
          "against Reference:")
    for label, seconds in per_config.items():
        print(f"    {label:<14} {1e6 * seconds:9.1f} us   x{base / seconds:6.2f}")
    e_ref, f_ref = results["Reference"]
    passed = True
    for label in [f"{platform} x1", "CPU"]:
        de, df = relative_errors(*results[label], e_ref, f_ref)
        ok = de <= TOLERANCE and df <= TOLERANCE
        passed &= ok
        print(f"    {label} vs Reference: max relative error energy {de:.2e}, forces {df:.2e} "
              f"(tolerance {TOLERANCE:g}): {'PASS' if ok else 'FAIL'}")
    fastest = min(workers, key=lambda k: per_config[f"{platform} x{k}"])
    return passed, fastest


def training_config(args, steps: int):
    """ala2_quick's transfer and optim settings, ``steps`` long, the curriculum in its first three quarters."""
    from trade_md.config import load_yaml
    from trade_md.train import RunConfig, TrainConfig
    from trade_md.workflow import WorkflowConfig

    wf = load_yaml(WorkflowConfig, ROOT / "workflows" / "ala2_quick.yaml")
    quarter = max(1, steps // 4)
    transfer = dataclasses.replace(wf.transfer, warmup_steps=quarter, ramp_steps=quarter, widen_steps=quarter,
                                   snis_samples=args.snis_samples)
    optim = dataclasses.replace(wf.optim, steps=steps, batch_size=args.batch_size)
    run = RunConfig(seed=0, progress=False, validate_every=quarter, checkpoint_every=steps, threads=1)
    return wf, TrainConfig(transfer=transfer, optim=optim, run=run)


def seconds_per_step(bg, target, data, config, device, n: int) -> float:
    """Mean wall time (s) of ``n`` full TRADE steps (past the curriculum) of a copy of ``bg`` on ``device``."""
    from trade_md.curriculum import curriculum_steps
    from trade_md.train import _Trainer

    model = copy.deepcopy(bg.density).to(device)
    with tempfile.TemporaryDirectory() as folder:
        trainer = _Trainer(model, target, data, config, Path(folder))
        trainer.step = curriculum_steps(config.transfer)
        times = []
        for _ in range(n + 1):  # the first step fills the SNIS table of every grid point: not timed
            start = time.perf_counter()
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.mean(times[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=256, help="MD frames per molecule for the energies")
    parser.add_argument("--workers", default="1,2,4,8", help="concurrent contexts to try (comma-separated)")
    parser.add_argument("--steps", type=int, default=200, help="TRADE steps of the training run")
    parser.add_argument("--timed-steps", type=int, default=10,
                        help="full TRADE steps timed per device (default: ala2_quick's refresh_every)")
    parser.add_argument("--batch-size", type=int, default=256, help="optim.batch_size")
    parser.add_argument("--snis-samples", type=int, default=256, help="transfer.snis_samples")
    parser.add_argument("--samples", type=int, default=100_000, help="samples drawn on the device")
    parser.add_argument("--cpu-samples", type=int, default=10_000, help="samples drawn on the CPU for its rate")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from trade_md.devices import resolve_device

    if args.device.strip().lower() != "cpu" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device is present (torch {torch.__version__} sees none); nothing was checked "
              "(--device cpu runs the script on the CPU)")
        return 0
    device = resolve_device(args.device, "--device")
    from trade_md import datasets, units
    from trade_md.data import ReferenceData
    from trade_md.energy import OpenMMEnergy, _platform_works, available_platforms
    from trade_md.generator import BoltzmannGenerator
    from trade_md.provenance import current_versions
    from trade_md.system import MolecularSystem
    from trade_md.targets import BoltzmannTarget
    from trade_md.train import train
    from trade_md.training_data import BoundaryData, TrainingData
    from trade_md.weights import relative_ess

    platform = "CUDA" if device.type == "cuda" else "CPU"
    if platform not in available_platforms() or not _platform_works(platform):
        print(f"gpu_check: OpenMM has no working {platform} platform (platforms: {', '.join(available_platforms())}); "
              "install an OpenMM build for this CUDA version")
        return 1
    v = current_versions()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check: {device} ({name}), OpenMM {v['openmm']} platform {platform}, torch {v['torch']}, "
          f"trade_md {v['trade_md']}, {os.cpu_count()} CPU cores")
    workers = [k for k in (int(w) for w in args.workers.split(",")) if k <= (os.cpu_count() or 1)]

    # 1. energies
    print("1. energies")
    ala2 = MolecularSystem.alanine_dipeptide()
    passed = True
    for label, system in (("alanine dipeptide", ala2), ("Ace-Ala3-Nme", MolecularSystem.from_sequence("AAA"))):
        ok, fastest = check_energies(label, system, md_frames(system, args.frames), platform, workers)
        passed &= ok
        if system is ala2:
            ala2_workers = fastest

    # 2. training
    print(f"2. TRADE on alanine dipeptide ({args.steps} steps, batch {args.batch_size}, "
          f"{args.snis_samples} SNIS samples per grid point)")
    wf, config = training_config(args, args.steps)
    reference = ReferenceData.load(datasets.path("ala2_pt_600K"), system=ala2)
    x, t0 = torch.as_tensor(reference.xyz, dtype=torch.float32), torch.full((len(reference),), 600.0)
    data = TrainingData(BoundaryData(x[:9000], t0[:9000]), BoundaryData(x[9000:], t0[9000:]))  # 10 % held out
    torch.manual_seed(0)
    bg = BoltzmannGenerator.for_system(ala2, 600.0, reference.xyz[::10].astype(np.float64), flow=wf.model.flow,
                                       torsion_style=wf.model.torsion_style).to(torch.float32)
    device_energy = OpenMMEnergy(ala2, platform=platform, n_workers=ala2_workers)
    cpu_energy = OpenMMEnergy(ala2)
    trained = copy.deepcopy(bg).to(device)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = train(trained.density, BoltzmannTarget(device_energy.energy), data, config, folder)
        run_s = time.perf_counter() - start
    print(f"  run on {device} ({platform} x{ala2_workers} energies): {run_s:.1f} s, {args.steps / run_s:.2f} steps/s; "
          f"{result.summary()}")
    step_config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, steps=10 * args.steps))
    on_device = seconds_per_step(bg, BoltzmannTarget(device_energy.energy), data, step_config, device, args.timed_steps)
    on_cpu = seconds_per_step(bg, BoltzmannTarget(cpu_energy.energy), data, step_config, torch.device("cpu"),
                              args.timed_steps)
    print(f"  full TRADE step: {device} {1e3 * on_device:.0f} ms, CPU ({cpu_energy.platform} x1 energies) "
          f"{1e3 * on_cpu:.0f} ms: x{on_cpu / on_device:.2f}")

    # 3. sampling
    print("3. sampling at 300 K with energies")
    rates = {}
    for where, model, energy, n in ((str(device), trained, device_energy, args.samples),
                                    ("CPU", copy.deepcopy(trained).cpu(), cpu_energy, args.cpu_samples)):
        torch.manual_seed(1)
        start = time.perf_counter()
        samples = model.sample(n, 300.0, energies=False)
        if device.type == "cuda" and where != "CPU":
            torch.cuda.synchronize(device)
        flow_s = time.perf_counter() - start
        start = time.perf_counter()
        u = energy.energy(samples.xyz)
        energy_s = time.perf_counter() - start
        rates[where] = (n / flow_s, n / energy_s, n / (flow_s + energy_s),
                        relative_ess(-units.reduced_energy(u, 300.0) - samples.log_prob))
    cpu_rates = rates["CPU"]
    for where, r in rates.items():
        print(f"  {where:<8} samples/s: flow {r[0]:10.0f} (x{r[0] / cpu_rates[0]:6.2f}), energies {r[1]:9.0f} "
              f"(x{r[1] / cpu_rates[1]:6.2f}), both {r[2]:9.0f} (x{r[2] / cpu_rates[2]:6.2f}); "
              f"relative ESS {r[3]:.2%}")
    device_energy.close()
    cpu_energy.close()
    print(f"gpu_check: energies {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
