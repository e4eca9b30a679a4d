"""Temperature transfer from T0 MD: TRADE against baselines, per residue (shared by the peptide benchmarks).

``benchmarks/ala2_transfer.py`` (alanine dipeptide) and ``benchmarks/ala4_transfer.py``
(Ace-Ala3-Nme) are thin entry points to :func:`main`; this module holds the
method loop, the metrics per temperature, the tables, the figure and the JSON.

Methods (each trained on the same T0 MD frames of the workflow, with the same
flow and the same number of steps):

==============  ==============================================================
TRADE           ``transfer.method = trade_grid``
NLL-only        ``transfer.method = nll`` (the conditional flow sees data at T0 only)
reweighting     the NLL-only model sampled at T0, importance-weighted to T:
                ``log w = -U(x) / (k_B T) - log p(x | T0)``
backward KL     ``transfer.method = reverse_kl`` over the range (+ NLL at T0)
==============  ==============================================================

Each method is trained by :func:`trade_md.workflow.run` with the workflow's
settings except: ``optim.steps = --steps``; a curriculum scaled to it
(``warmup_steps = ramp_steps = widen_steps = max(1, steps // 6)``);
``sample.temperatures`` = the benchmark's temperatures (K); ``sample.n = --n``;
no evaluation stage (the benchmark evaluates).  Every method's folder
(``OUT/<method>``) is a workflow output folder, so a rerun of the same command
skips what is done (training, samples) and resumes an interrupted training.
The reweighting samples are kept in ``OUT/reweighting`` with a record of the
model file they were drawn from (remade when it changes).

Metrics per method and temperature are those of
:func:`trade_md.analysis.evaluate.temperature_metrics` against the MD
reference of that temperature (``evaluate.references`` of the workflow;
parallel tempering, independent of the training data): relative Kish ESS; the
NLL of the MD frames (nats); per residue the Ramachandran Jensen-Shannon
divergence (nats) of the importance-reweighted samples against the MD
reference's own noise floor, and ``dF = F(alpha_L/C7ax) - F(rest)`` (kT) of the
reweighted samples and of MD with bootstrap errors, judged by the rule of
:mod:`trade_md.analysis.residues`; for peptides the JS of the joint basin
populations of all residues with its floor.

Outputs in ``OUT``: ``results.md`` (two tables), ``results.json`` (the settings
and every metric), ``results.png`` (per residue dF and JS vs temperature per
method, relative ESS and the joint-basin JS).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trade_md._io import atomic_path, atomic_write_text
from trade_md.analysis.evaluate import temperature_metrics
from trade_md.config import load_yaml
from trade_md.data import ReferenceData
from trade_md.generator import BoltzmannGenerator, Samples
from trade_md.system import MolecularSystem
from trade_md.trajectory import file_sha256
from trade_md.units import reduced_energy
from trade_md.workflow import WorkflowConfig, build_system, run

#: Trained methods: table name -> ``transfer.method`` (also the name of the method's folder).
METHODS: Dict[str, str] = {"TRADE": "trade_grid", "NLL-only": "nll", "backward KL": "reverse_kl"}
#: Name of the reweighting baseline and the trained method whose model it reweights.
REWEIGHTING, REWEIGHTED_METHOD = "reweighting", "NLL-only"
#: Seed of the reweighting samples at temperature T (K): ``REWEIGHTING_SEED + round(T)``.
REWEIGHTING_SEED: int = 1000

Rows = Dict[Tuple[str, float], dict]


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` made.

    Attributes
    ----------
    rows : dict ``(method name, T in K) -> metrics`` of :func:`temperature_metrics`,
        in the order TRADE, NLL-only, reweighting, backward KL and by temperature
    folders : dict method name -> its workflow output folder
    system : the molecule
    out : the benchmark's output folder
    settings : workflow, steps, n, temperatures (K) and T0 (K)
    """

    rows: Rows
    folders: Dict[str, Path]
    system: MolecularSystem
    out: Path
    settings: dict


# ------------------------------------------------------------------ training
def method_config(base: WorkflowConfig, method: str, steps: int, temperatures: Sequence[float],
                  out: Path) -> WorkflowConfig:
    """The workflow of one method: ``base`` with ``method``, ``steps`` and the scaled curriculum.

    Parameters
    ----------
    base : WorkflowConfig
        The benchmark's workflow (flow, data, sample.n already set).
    method : str
        ``transfer.method`` (a registered training method).
    steps : int
        ``optim.steps``; warm-up, ramp and widening take ``max(1, steps // 6)`` steps each.
    temperatures : sequence of float, K
        Sampling temperatures.
    out : Path
        The method's output folder.
    """
    warm = max(1, steps // 6)
    return dataclasses.replace(
        base, out_dir=str(out),
        transfer=dataclasses.replace(base.transfer, method=method, warmup_steps=warm, ramp_steps=warm,
                                     widen_steps=warm),
        optim=dataclasses.replace(base.optim, steps=steps),
        sample=dataclasses.replace(base.sample, temperatures=tuple(temperatures)),
        evaluate=dataclasses.replace(base.evaluate, references={}),
    )


def train_method(base: WorkflowConfig, method: str, steps: int, temperatures: Sequence[float], out: Path,
                 log: Callable[[str], None] = print) -> Path:
    """Train (or resume, or skip when done) one method and sample it; returns its folder.

    ``OUT/timings.json`` gets ``wall_s_total`` (s) of the first call that
    trained, besides the workflow's own ``train_s`` and ``sample_<T>K_s``.
    """
    start = time.perf_counter()
    run(method_config(base, method, steps, temperatures, out), log=log)
    timings = out / "timings.json"
    data = json.loads(timings.read_text()) if timings.exists() else {}
    data.setdefault("wall_s_total", time.perf_counter() - start)
    atomic_write_text(timings, json.dumps(data, indent=2))
    return out


# ------------------------------------------------------------------ reweighting baseline
def reweighted_from_t0(model: BoltzmannGenerator, temperature: float, n: int, t0: float) -> Samples:
    """``n`` samples of ``model`` at ``t0`` (K) with importance weights to ``temperature`` (K).

    ``log w = -U(x) / (k_B T) - log p(x | T0)`` (U in kJ/mol); the returned
    samples carry ``temperature`` so that they are compared with the MD at T.
    """
    s = model.sample(n, t0)
    log_w = -reduced_energy(s.energies, temperature) - s.log_prob
    return Samples(s.xyz, s.log_prob, np.full(len(s), temperature), s.topology, s.energies, log_w,
                   dict(s.metadata, proposal_temperature=t0))


def reweighting_samples(model_path: Path, system: MolecularSystem, temperatures: Sequence[float], n: int,
                        folder: Path, log: Callable[[str], None] = print) -> Dict[float, Samples]:
    """The reweighting baseline's samples per temperature (K), kept in ``folder`` and reused.

    ``folder/made_from.json`` records the SHA-256 of the model file and ``n``;
    files made from another model or ``n`` are remade.
    """
    folder.mkdir(parents=True, exist_ok=True)
    made_from = {"model_sha256": file_sha256(model_path), "n": int(n)}
    record = folder / "made_from.json"
    old = json.loads(record.read_text()) if record.exists() else None
    if old != made_from:
        for stale in folder.glob("samples_*K.h5"):
            stale.unlink()
        atomic_write_text(record, json.dumps(made_from, indent=2))
    model = None
    sets = {}
    for t in temperatures:
        path = folder / f"samples_{t:g}K.h5"
        if path.exists():
            sets[t] = Samples.load(path, system=system)
            continue
        if model is None:
            model = BoltzmannGenerator.load(model_path, system=system)
        log(f"reweighting: {n} samples at {model.reference_temperature:g} K weighted to {t:g} K -> {path}")
        torch.manual_seed(REWEIGHTING_SEED + int(round(t)))
        with torch.no_grad():
            s = reweighted_from_t0(model, t, n, model.reference_temperature)
        s.save(path, overwrite=True)
        sets[t] = s
    return sets


# ------------------------------------------------------------------ evaluation
def load_references(base: WorkflowConfig, system: MolecularSystem, temperatures: Sequence[float],
                    workflow: str = "the workflow") -> Dict[float, ReferenceData]:
    """The MD reference of every temperature (K) from ``base.evaluate.references``.

    Raises
    ------
    FileNotFoundError
        Naming every temperature without a reference entry or file.
    ValueError
        If a file holds data at another temperature.
    """
    paths = {float(t): Path(p) for t, p in base.evaluate.references.items()}
    missing = [f"{t:g} K ({'no entry in evaluate.references' if t not in paths else paths[t]})"
               for t in temperatures if t not in paths or not paths[t].is_file()]
    if missing:
        raise FileNotFoundError(f"no MD reference in {workflow} for {', '.join(missing)}")
    refs = {}
    for t in temperatures:
        ref = ReferenceData.load(paths[t], system=system)
        if abs(ref.temperature - t) > 1e-6:
            raise ValueError(f"{paths[t]} holds data at {ref.temperature:g} K, not {t:g} K")
        refs[t] = ref
    return refs


def evaluate_methods(folders: Mapping[str, Path], system: MolecularSystem, references: Mapping[float, ReferenceData],
                     reweighting: Mapping[float, Samples]) -> Rows:
    """:func:`temperature_metrics` of every method at every reference temperature.

    The reweighting rows share the NLL-only model, so their ``nll_md`` is that
    model's (computed once, in the NLL-only rows).
    """
    rows: Rows = {}
    for name, folder in folders.items():
        model = BoltzmannGenerator.load(folder / "model.pt", system=system)
        for t, ref in references.items():
            s = Samples.load(folder / f"samples_{t:g}K.h5", system=system)
            rows[(name, t)] = temperature_metrics(s, ref, model)
        if name == REWEIGHTED_METHOD:
            for t, ref in references.items():
                metrics = temperature_metrics(reweighting[t], ref)
                metrics["nll_md"] = rows[(name, t)].get("nll_md")
                rows[(REWEIGHTING, t)] = metrics
    return rows


def _judged(entry: Mapping) -> Tuple[float, float, Optional[dict]]:
    """(JS, its floor, dF) of what the verdict judged: reweighted samples when they have weights."""
    if "js_reweighted" in entry:
        return entry["js_reweighted"], entry["js_reweighted_floor"], entry.get("dF_alphaL_reweighted")
    return entry["js"], entry["js_floor"], entry.get("dF_alphaL_model")


# ------------------------------------------------------------------ tables
def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}g}"


def _pm(d: Optional[Mapping]) -> str:
    """``value ± stderr`` of a free energy (kT), or the note of an empty basin."""
    if not d or d.get("value") is None:
        return "empty basin" if d and d.get("note") else "—"
    return f"{d['value']:.2f} ± {d['stderr']:.2f}"


def _verdict(section: Mapping) -> str:
    if section["within_noise"]:
        return "within noise"
    failed = [name for name, r in section["residues"].items() if not r["within_noise"]]
    if len(section["residues"]) > 1 and not section["joint_basins"]["within_noise"]:
        failed.append("joint")
    return "outside noise: " + ", ".join(failed)


def overview_table(rows: Rows) -> str:
    """Markdown: one row per method and temperature (relative ESS, NLL of MD, joint-basin JS, verdict)."""
    lines = ["| method | T [K] | relative ESS | NLL of MD frames [nats] | joint-basin JS [nats] (floor) | verdict |",
             "|---|---|---|---|---|---|"]
    for (name, t), m in rows.items():
        nll = m.get("nll_md")
        nll_text = "—" if not nll or nll.get("value") is None or not math.isfinite(nll["value"]) \
            else f"{nll['value']:.2f} ± {nll['stderr']:.2f}"
        joint = m["joint_basins"]
        if joint["n_residues"] > 1:
            js, floor, _ = _judged(joint)
            joint_text = f"{_num(js)} ({_num(floor)})"
        else:
            joint_text = "— (one residue)"
        ess = m.get("relative_ess")
        lines.append(f"| {name} | {t:g} | {'—' if ess is None else f'{100 * ess:.3g} %'} | {nll_text} | "
                     f"{joint_text} | {_verdict(m)} |")
    return "\n".join(lines)


def residue_table(rows: Rows) -> str:
    """Markdown: one row per method, temperature and residue (JS vs floor, dF vs MD, verdict)."""
    lines = ["| method | T [K] | residue | JS [nats] | JS floor [nats] | ΔF αL reweighted [kT] | ΔF αL MD [kT] | "
             "diff/σ | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for (name, t), m in rows.items():
        for residue, r in m["residues"].items():
            js, floor, df = _judged(r)
            lines.append(f"| {name} | {t:g} | {residue} | {_num(js)} | {_num(floor)} | {_pm(df)} | "
                         f"{_pm(r['dF_alphaL_md'])} | {_num(r['dF_alphaL_vs_md'].get('n_sigma'), 2)} | "
                         f"{r['verdict']} |")
    return "\n".join(lines)


def results_markdown(result: BenchmarkResult, title: str) -> str:
    """``results.md``: settings, the two tables and how to read them."""
    s = result.settings
    temps = ", ".join(f"{t:g}" for t in s["temperatures_K"])
    return "\n".join([
        f"# {title}", "",
        f"Workflow `{s['workflow']}`, {s['steps']} training steps per method, {s['n']} samples per temperature, "
        f"trained on MD at {s['T0_K']:g} K; temperatures {temps} K.  JS and ΔF are of the importance-reweighted "
        "samples (for reweighting: the NLL-only model's samples at T0 weighted to T), judged by the rule of "
        "trade_md.analysis.residues (JS <= floor + 0.02 nats; |ΔF diff| <= 0.3 kT + 2σ); the floor is the JS "
        "between halves of the MD reference.  ΔF = F(alpha_L/C7ax) − F(rest) in kT with bootstrap errors.", "",
        "## Per method and temperature", "", overview_table(result.rows), "",
        "## Per residue", "", residue_table(result.rows), "",
    ])


# ------------------------------------------------------------------ figure
def plot_results(rows: Rows, path: Path, training_temperature: Optional[float] = None) -> Path:
    """PNG: per residue dF (reweighted, with MD) and JS (with the MD floor) vs temperature per method,
    and the relative ESS and joint-basin JS (peptides) in a last column."""
    methods = list(dict.fromkeys(name for name, _ in rows))
    temps = sorted({t for _, t in rows})
    first = rows[(methods[0], temps[0])]
    residues = list(first["residues"])
    ncols = len(residues) + 1
    fig = Figure(figsize=(3.8 * ncols, 7.0), layout="constrained")
    axes = fig.subplots(2, ncols, squeeze=False)
    x = np.asarray(temps, dtype=float)
    step = 0.012 * (x.max() - x.min() if len(x) > 1 else x[0])  # small offsets: error bars side by side

    def value(d, key="value"):
        return np.nan if not d or d.get(key) is None else float(d[key])

    for j, res in enumerate(residues):
        top, bottom = axes[0, j], axes[1, j]
        for k, name in enumerate(methods):
            offset = (k - (len(methods) - 1) / 2) * step
            judged = [_judged(rows[(name, t)]["residues"][res]) for t in temps]
            top.errorbar(x + offset, [value(d) for _, _, d in judged], [value(d, "stderr") for _, _, d in judged],
                         marker="o", capsize=2, color=f"C{k}", label=name)
            bottom.plot(x, [js for js, _, _ in judged], "o-", color=f"C{k}", label=name)
        md = [rows[(methods[0], t)]["residues"][res]["dF_alphaL_md"] for t in temps]
        top.errorbar(x, [value(d) for d in md], [value(d, "stderr") for d in md], marker="s", capsize=3,
                     color="black", label="MD reference")
        floor = [_judged(rows[(methods[0], t)]["residues"][res])[1] for t in temps]
        bottom.plot(x, floor, "k--", label="MD noise floor")
        top.set_title(f"{res}: F(αL/C7ax) − F(rest)")
        top.set_ylabel("ΔF [kT]")
        bottom.set_title(f"{res}: Ramachandran JS")
        bottom.set_ylabel("JS [nats]")
    ess_ax, joint_ax = axes[0, -1], axes[1, -1]
    for k, name in enumerate(methods):
        ess = [100.0 * rows[(name, t)].get("relative_ess", np.nan) for t in temps]
        ess_ax.plot(x, ess, "o-", color=f"C{k}", label=name)
    finite = [v for line in ess_ax.get_lines() for v in line.get_ydata() if np.isfinite(v) and v > 0]
    if finite and max(finite) > 10 * min(finite):
        ess_ax.set_yscale("log")
    ess_ax.set_title("relative Kish ESS")
    ess_ax.set_ylabel("ESS / N [%]")
    if first["joint_basins"]["n_residues"] > 1:
        for k, name in enumerate(methods):
            joint_ax.plot(x, [_judged(rows[(name, t)]["joint_basins"])[0] for t in temps], "o-", color=f"C{k}",
                          label=name)
        joint_ax.plot(x, [_judged(rows[(methods[0], t)]["joint_basins"])[1] for t in temps], "k--",
                      label="MD noise floor")
        joint_ax.set_title(f"joint basins ({first['joint_basins']['n_states']} states): JS")
        joint_ax.set_ylabel("JS [nats]")
    else:
        joint_ax.axis("off")
    for ax in axes.ravel():
        if not ax.axison:
            continue
        if training_temperature is not None:
            ax.axvline(training_temperature, color="gray", linestyle=":")
        ax.set_xlabel("temperature [K]")
    axes[0, 0].legend(fontsize="small")
    axes[1, 0].legend(fontsize="small")
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


# ------------------------------------------------------------------ the whole benchmark
def load_base(workflow: str | Path, n: int) -> WorkflowConfig:
    """The workflow of the YAML file with ``sample.n = n`` and no progress bars."""
    base = load_yaml(WorkflowConfig, workflow)
    return dataclasses.replace(base, sample=dataclasses.replace(base.sample, n=int(n)),
                               run=dataclasses.replace(base.run, progress=False))


def run_benchmark(base: WorkflowConfig, temperatures: Sequence[float], steps: int, out: str | Path,
                  workflow: str = "the workflow", log: Callable[[str], None] = print) -> BenchmarkResult:
    """Train every method (resuming), make the reweighting samples and evaluate all at every temperature.

    Parameters
    ----------
    base : WorkflowConfig
        From :func:`load_base`.
    temperatures : sequence of float, K
        Sampling and evaluation temperatures; each needs an MD reference in
        ``base.evaluate.references`` (checked after training, so methods can be
        trained before the references exist).
    steps : int
        Training steps per method.
    out : folder of the benchmark (one subfolder per method)
    workflow : name of the workflow (for messages and ``results.json``)
    log : where progress lines go

    Raises
    ------
    FileNotFoundError
        When a reference is missing (after training and sampling, which are kept).
    """
    temperatures = tuple(float(t) for t in temperatures)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    system = build_system(base.system)
    absent = [f"{t:g} K" for t in temperatures
              if t not in base.evaluate.references or not Path(base.evaluate.references[t]).is_file()]
    if absent:
        log(f"no MD reference yet for {', '.join(absent)}: training and sampling go ahead; the evaluation "
            "waits for the references")
    folders = {name: train_method(base, method, steps, temperatures, out / method, log=log)
               for name, method in METHODS.items()}
    try:
        references = load_references(base, system, temperatures, workflow)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; the methods are trained and sampled in {out}: rerun the same command "
                                "when the references exist") from err
    model_path = folders[REWEIGHTED_METHOD] / "model.pt"
    reweighting = reweighting_samples(model_path, system, temperatures, base.sample.n, out / "reweighting", log=log)
    t0 = BoltzmannGenerator.load(model_path, system=system).reference_temperature
    rows = evaluate_methods(folders, system, references, reweighting)
    settings = {"workflow": str(workflow), "steps": int(steps), "n": int(base.sample.n),
                "temperatures_K": list(temperatures), "T0_K": float(t0)}
    return BenchmarkResult(rows, folders, system, out, settings)


def write_results(result: BenchmarkResult, title: str, extra_markdown: str = "",
                  extra_json: Optional[dict] = None) -> str:
    """Write ``results.md``, ``results.json`` and ``results.png`` into ``result.out``; returns the Markdown."""
    text = results_markdown(result, title) + (f"\n{extra_markdown}\n" if extra_markdown else "")
    atomic_write_text(result.out / "results.md", text)
    payload = {"settings": result.settings, "rows": {f"{k[0]}@{k[1]:g}": v for k, v in result.rows.items()},
               **(extra_json or {})}
    atomic_write_text(result.out / "results.json", json.dumps(payload, indent=2, default=float))
    plot_results(result.rows, result.out / "results.png", training_temperature=result.settings["T0_K"])
    return text


def build_parser(description: str, workflow: str, out: str, steps: int, n: int = 10000) -> argparse.ArgumentParser:
    """The benchmark's command line: ``--workflow``, ``--steps``, ``--n``, ``--out`` with these defaults."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", default=workflow, help="workflow YAML (flow, data, references)")
    parser.add_argument("--steps", type=int, default=steps, help="training steps per method (equal budget)")
    parser.add_argument("--n", type=int, default=n, help="samples per temperature and method")
    parser.add_argument("--out", default=out, help="output folder (one subfolder per method)")
    return parser


def main(argv: Optional[Sequence[str]] = None, *, description: str, title: str, workflow: str, out: str,
         temperatures: Sequence[float], steps: int,
         extra_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None,
         epilogue: Optional[Callable[[argparse.Namespace, BenchmarkResult], Tuple[str, dict]]] = None) -> int:
    """Entry point of a benchmark script: parse, run, write and print the results.

    ``extra_arguments`` adds options to the parser; ``epilogue(args, result)``
    returns Markdown appended to ``results.md`` and entries added to
    ``results.json``.  Returns the exit status (1 when a reference is missing).
    """
    parser = build_parser(description, workflow, out, steps)
    if extra_arguments is not None:
        extra_arguments(parser)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.n < 1:
        parser.error("--steps and --n must be >= 1")
    torch.set_num_threads(1)
    base = load_base(args.workflow, args.n)
    try:
        result = run_benchmark(base, temperatures, args.steps, args.out, workflow=args.workflow)
    except FileNotFoundError as err:
        print(f"benchmark: {err}")
        return 1
    extra_md, extra_json = epilogue(args, result) if epilogue is not None else ("", {})
    print(write_results(result, title, extra_md, extra_json))
    return 0

