"""``trade-md``: command-line interface (thin layer over the Python API)."""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import typing
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import validators
from .devices import check_device, rank_device, resolve_device

__all__ = ["main"]


def _system_from_args(args) -> "MolecularSystem":  # noqa: F821
    from .system import MolecularSystem

    return MolecularSystem.from_spec(args.system, args.pdb, args.forcefield, args.constraints,
                                     sequence=args.sequence)


def _add_system_args(p: argparse.ArgumentParser) -> None:
    from .system import ALANINE_DIPEPTIDE, DEFAULT_CONSTRAINTS, DEFAULT_FORCEFIELD

    g = p.add_argument_group("molecule")
    g.add_argument("--system", default=ALANINE_DIPEPTIDE, help="built-in system name (default: %(default)s)")
    g.add_argument("--pdb", help="PDB file of the molecule (instead of --system)")
    g.add_argument("--sequence", help="capped peptide ACE-...-NME from one-letter codes, e.g. AAA (instead of --system)")
    g.add_argument("--forcefield", nargs="+", default=list(DEFAULT_FORCEFIELD),
                   help="OpenMM force-field XML files, implicit solvent included (with --pdb or --sequence; "
                        "default: %(default)s)")
    g.add_argument("--constraints", default=DEFAULT_CONSTRAINTS,
                   help="HBonds, AllBonds, HAngles or none (default: %(default)s)")


#: SimulationSettings fields that ``trade-md simulate`` does not make options of:
#: --temperature / --temperatures are its own, the molecule's name comes from the molecule.
_NOT_SIMULATION_OPTIONS = ("temperature", "system")


def _simulation_fields() -> list:
    from .simulate import SimulationSettings

    return [f for f in dataclasses.fields(SimulationSettings) if f.name not in _NOT_SIMULATION_OPTIONS]


def _add_simulation_args(p: argparse.ArgumentParser) -> None:
    """One option per SimulationSettings field: name, type, default and help text from the dataclass."""
    from .simulate import SimulationSettings

    types = typing.get_type_hints(SimulationSettings)
    g = p.add_argument_group("simulation settings")
    for f in _simulation_fields():
        required = f.default is dataclasses.MISSING
        g.add_argument("--" + f.name.replace("_", "-"), type=types[f.name], required=required,
                       default=None if required else f.default,
                       help=f.metadata["help"] + ("" if required else " (default: %(default)s)"))


def _number(text: str) -> int | float | str:
    """``text`` as an int, else a float, else as it is (for a validator to reject with its message)."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


def _numbers(text: str) -> list:
    """Comma-separated numbers (see :func:`_number`)."""
    return [_number(t) for t in text.split(",") if t.strip()]


def _temperatures(name: str, values: list) -> list[float]:
    if not values:
        raise ValueError(f"expected at least one temperature in K, got {values!r}")
    return [float(t) for t in validators.temperature(name, values)]


def _checked(check: Callable[[str, object], object], name: str = "value",
             read: Callable[[str], object] = _number) -> Callable[[str], object]:
    """An argparse ``type``: ``read`` the text, then ``check`` it (a :mod:`trade_md.validators` function)."""
    def parse(text: str) -> object:
        try:
            return check(name, read(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


_positive_int = _checked(validators.positive_int)
_device = _checked(check_device, "--device", str)
_temperature_list = _checked(_temperatures, "temperatures", _numbers)


def _check_output_file(path: Path, overwrite: bool) -> None:
    """Raise unless ``path`` can be written: not a folder, not an existing file (unless overwrite), writable folder."""
    from ._io import check_writable_folder

    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a folder; give a file name such as {path / 'samples.h5'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"--out {path} exists; refusing to overwrite it (use --overwrite)")
    check_writable_folder(path.parent if str(path.parent) else Path("."))


def _cmd_simulate(args) -> int:
    from .simulate import simulate
    from .tempering import parallel_tempering

    system = _system_from_args(args)
    common = {f.name: getattr(args, f.name) for f in _simulation_fields()}
    common.update(platform=args.platform, overwrite=args.overwrite)
    if args.temperatures:
        out = Path(args.out)
        stem = out.with_suffix("")
        def target(t: float) -> Path:
            return Path(f"{stem}_{t:g}K.h5")

        existing = [str(target(t)) for t in args.temperatures if target(t).exists()]
        if existing and not args.overwrite:
            raise FileExistsError(f"{', '.join(existing)} exist; refusing to overwrite (use --overwrite)")
        checkpoints = Path(f"{stem}.pt.partial")
        results = parallel_tempering(system, args.temperatures, out=checkpoints, **common)
        if not results:  # an MPI rank other than 0 (mpiexec -n N): rank 0 writes the files
            return 0
        for t, data in results.items():
            path = target(t)
            data.save(path, overwrite=args.overwrite)
            print(f"{path}: {len(data)} frames at {t:g} K")
        shutil.rmtree(checkpoints)
        meta = next(iter(results.values())).metadata
        print("neighbour swap acceptance:", ", ".join(f"{a:.2f}" for a in meta["swap_acceptance"]),
              f"; {meta['round_trips']} round trips")
        return 0
    if args.temperature is None:
        raise ValueError("give --temperature T (plain MD) or --temperatures T1,T2,... (parallel tempering)")
    data = simulate(system, args.temperature, out=args.out, **common)
    print(f"{args.out}: {len(data)} frames at {data.temperature:g} K")
    return 0


def _cmd_sample(args) -> int:
    import warnings

    import numpy as np
    import torch

    from .distributed import World
    from .generator import sample_sharded
    from .trajectory import FRAME_FORMATS, sidecar_path
    from .weights import pareto_k_note

    out = Path(args.out)
    _check_output_file(out, args.overwrite)  # before loading the model and sampling
    if out.suffix.lower() not in FRAME_FORMATS:
        raise ValueError(f"--out {out}: unknown trajectory format {out.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(FRAME_FORMATS)}")
    if args.resample is not None and args.no_energies:
        raise ValueError("--resample draws by importance weight, which needs energies: drop --no-energies")
    if out.suffix.lower() not in (".h5", ".hdf5"):
        _check_output_file(sidecar_path(out), args.overwrite)
    torch.set_num_threads(args.threads)
    world = World.from_env()  # under torchrun every rank draws its share; rank 0 writes
    device = rank_device(resolve_device(args.device, "--device"), world)
    model = _load_model(args.model).to(device)
    world.start(torch.empty(0, device=device))
    temps = args.temperature
    if len(temps) == 1:
        temperature = temps[0]
    else:  # one sample set with per-sample temperatures, n per temperature
        temperature = np.repeat(np.asarray(temps, dtype=float), args.n)
    n = args.n * len(temps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = sample_sharded(model, n, temperature, world, seed=args.seed, batch_size=args.batch_size,
                                 energies=not args.no_energies, progress=world.is_main)
    if samples is None:  # a rank > 0: its share is with rank 0
        return 0
    for w in caught:
        print(f"trade-md sample: warning: {w.message}", file=sys.stderr)
    msg = f"{out}: {len(samples)} samples at {', '.join(f'{t:g}' for t in temps)} K"
    if samples.log_weights is not None:
        msg += f"; relative ESS {samples.relative_ess():.3%}{pareto_k_note(samples.log_weights)}"
    if args.resample is not None:
        samples = samples.resample(args.resample, seed=args.seed)
        samples.metadata["resampled_from"] = n
        msg += f"; {args.resample} frames resampled by weight"
    samples.save(out, overwrite=args.overwrite)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        msg += f"; per-frame weights, energies and log-densities in {sidecar_path(out)}"
    print(msg)
    return 0


def _cmd_info(args) -> int:
    from .datasets import resolve
    from .generator import BoltzmannGenerator

    path = resolve(args.model, "model")
    print(f"model file: {path}")
    print(BoltzmannGenerator.load(path).describe())
    return 0


def _load_model(value: str) -> "BoltzmannGenerator":  # noqa: F821
    """The model in the file ``value``, or the shipped model of that name (``ala2``)."""
    from .datasets import resolve
    from .generator import BoltzmannGenerator

    return BoltzmannGenerator.load(resolve(value, "model"))


def _cmd_evaluate(args) -> int:
    import torch

    from .analysis.evaluate import evaluate
    from .data import ReferenceData
    from .datasets import resolve
    from .generator import Samples

    temperatures = args.temperature or [None] * len(args.reference)
    if len(temperatures) != len(args.reference):
        raise ValueError(f"--temperature gives {len(temperatures)} temperatures for {len(args.reference)} "
                         "--reference files: give one per reference, in the same order")
    torch.set_num_threads(args.threads)
    model = _load_model(args.model).to(resolve_device(args.device, "--device")) if args.model else None
    system = model.system if model is not None else None
    samples = []
    for path in args.samples:
        s = Samples.load(path, system=system, top=args.top)
        for t in sorted(set(s.temperature.tolist())):  # split mixed-temperature files
            samples.append(s.select(s.temperature == t))
    references = {}
    for value, temperature in zip(args.reference, temperatures):
        path = resolve(value, "reference")
        r = ReferenceData.load(path, system=system, top=args.top, temperature=temperature)
        if r.temperature in references:
            raise ValueError(f"two references at {r.temperature:g} K ({value} and an earlier one): give one per temperature")
        references[r.temperature] = r
    result = evaluate(samples, references, args.out, model=model, training_temperature=args.training_temperature)
    print(f"wrote {result.files.report_md} and {result.files.metrics_json}")
    return 0


def _cmd_run(args) -> int:
    from .workflow import run_workflow

    run_workflow(args.workflow, out_dir=args.out, device=args.device)
    return 0


def _cmd_train(args) -> int:
    import yaml

    if not Path(args.config).is_file():
        raise FileNotFoundError(f"configuration file not found: {args.config}")
    sections = yaml.safe_load(Path(args.config).read_text()) or {}
    if isinstance(sections, dict) and ("system" in sections or "data" in sections):
        from .workflow import run_workflow  # a molecular workflow: its stages resume by themselves

        run_workflow(args.config, out_dir=args.out, device=args.device)
        return 0
    if args.device not in (None, "cpu"):  # trade_md.testsystems builds its models on the CPU
        raise ValueError(f"--device {args.device}: toy problems train on the CPU; --device applies to molecular "
                         "workflows (a configuration with a system or data section)")
    from .config import load_yaml
    from .testsystems import ToyRunConfig, train_from_config

    from .distributed import World

    main_rank = World.from_env().is_main  # under torchrun, rank 0 checks the folder and prints
    folder = args.out if args.out is not None else load_yaml(ToyRunConfig, args.config).run.out_dir
    if main_rank and folder is not None and (Path(folder) / "last.pt").exists() and not args.resume:
        raise FileExistsError(f"{folder} already holds a training run; add --resume to continue it, "
                              "or give another output folder with --out")
    result = train_from_config(args.config, resume=args.resume, out_dir=args.out)
    if not main_rank:
        return 0
    print(result.summary())
    for m in result.metrics:
        print(m)
    return 0


def _version_line() -> str:
    """trade_md's version with the versions of the engines it runs on."""
    from .provenance import current_versions

    v = {k: value or "not installed" for k, value in current_versions().items()}
    return f"trade-md {v['trade_md']} (torch {v['torch']}, OpenMM {v['openmm']}, mdtraj {v['mdtraj']})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trade-md", description=__doc__)
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="reference MD (Langevin) or parallel tempering; resumable")
    _add_system_args(p)
    p.add_argument("--temperature", type=_checked(validators.temperature),
                   help="temperature in K (plain Langevin MD)")
    p.add_argument("--temperatures", type=_temperature_list,
                   help="comma-separated temperatures in K: parallel tempering, one output file per temperature")
    p.add_argument("--out", required=True,
                   help="output HDF5 file (parallel tempering: one file OUT_<T>K.h5 per temperature)")
    _add_simulation_args(p)
    p.add_argument("--platform", help="OpenMM platform (default: automatic)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("sample", help="draw Boltzmann samples from a trained model")
    p.add_argument("--model", required=True, help="model file written by training (.pt), or a shipped model (ala2)")
    p.add_argument("--temperature", type=_temperature_list, required=True,
                   help="temperature in K, or a comma-separated list (n samples at each)")
    p.add_argument("--n", "--n-samples", dest="n", type=_positive_int, default=10000,
                   help="samples per temperature (under torchrun write --n-samples: torchrun takes --n for its own)")
    p.add_argument("--out", required=True,
                   help="output file: .h5 (mdtraj HDF5 with everything), or .dcd, .xtc, .trr, .nc, .pdb "
                        "(frames, plus per-frame log weights, energies and log-densities in OUT_STEM.weights.csv)")
    p.add_argument("--resample", type=_positive_int,
                   help="write N unweighted frames drawn by importance weight instead of the weighted samples")
    p.add_argument("--batch-size", type=_positive_int, default=4096, help="samples per batch (bounds memory)")
    p.add_argument("--no-energies", action="store_true", help="skip OpenMM energies and importance weights")
    p.add_argument("--seed", type=int, default=0, help="random seed of the samples (default: 0)")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads")
    p.add_argument("--device", type=_device, default="auto",
                   help="where the model samples: auto (CUDA if present), cpu, cuda, cuda:N (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("evaluate", help="compare samples with MD: report.md, metrics.json, PNGs")
    p.add_argument("--samples", nargs="+", required=True,
                   help="sample files from 'trade-md sample' (HDF5, or DCD/XTC/... with their .weights.csv)")
    p.add_argument("--reference", nargs="+", required=True,
                   help="MD trajectories, one per temperature: trade_md HDF5, a shipped name (ala2_pt_300K), "
                        "or DCD, XTC, TRR, NetCDF, PDB, HDF5 from any MD program")
    p.add_argument("--top", help="topology (PDB) of references and samples in formats without one (DCD, XTC, ...)")
    p.add_argument("--temperature", type=_temperature_list,
                   help="comma-separated temperatures in K of the --reference files, one per file, in order "
                        "(needed for files that do not record it)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--model", help="model file or shipped model name (ala2), to report the NLL of the MD frames "
                                   "and to compute the energies of references that hold none")
    p.add_argument("--training-temperature", type=_checked(validators.temperature), help="marked in the plots (K)")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads")
    p.add_argument("--device", type=_device, default="auto",
                   help="where the --model runs: auto (CUDA if present), cpu, cuda, cuda:N (default: %(default)s)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("info", help="what a model file records: system, T0, trained range, data, versions")
    p.add_argument("model", help="model file (.pt) or shipped model name (ala2)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train from a YAML configuration (toy problem or molecular workflow)")
    p.add_argument("--config", required=True, help="YAML configuration (unknown keys are errors)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--out", help="output folder (default: from the configuration)")
    p.add_argument("--device", type=_device, help="where a molecular workflow's model trains: auto, cpu, cuda, "
                                                  "cuda:N (default: the workflow's device, itself auto by default; "
                                                  "toy problems train on the cpu only)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("run", help="run or resume a complete workflow (simulate/train/sample/evaluate)")
    p.add_argument("workflow", help="workflow YAML file, e.g. workflows/ala2_quick.yaml")
    p.add_argument("--out", help="output folder (default: out_dir of the workflow)")
    p.add_argument("--device", type=_device, help="where the model trains and samples: auto, cpu, cuda, cuda:N "
                                                  "(default: the workflow's device, itself auto by default)")
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``trade-md`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: every command resumes or restarts cleanly
        resume = " with --resume" if args.command == "train" and not args.resume else ""
        print(f"interrupted; rerun the same command{resume} to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # ConfigError is a ValueError; OSError: missing, existing, unwritable files
        print(f"trade-md {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
