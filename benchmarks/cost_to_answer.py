"""Cost to answer: CPU seconds to the 300 K free energy of alanine dipeptide's alpha_L/C7ax basin.

The question: dF = F(alpha_L/C7ax) - F(rest) at 300 K (basin 0 <= phi < 2.1 rad,
``trade_md.analysis.observables``) to a block-bootstrap standard error <= 0.2 kT
and a bias <= 0.3 kT against the shipped parallel-tempering reference
(``ala2_pt_300K``, 3.86 +- 0.21 kT).  Three approaches, each an "arm":

  md      plain 300 K Langevin MD in chunks of --md-chunk-ns (each chunk a
          ``trade_md.simulate`` run started from the last frame of the one
          before, locally minimized, new velocities, --md-rest-equilibration-ps);
          after every chunk dF and its standard error from all frames so far;
          stops at SE <= target or at --md-cap-ns.  Cost: process CPU time of
          the simulating calls (this process).
  speed   the CPU cost per ns of 600 K MD (a short ``simulate`` run), which
          prices trade_md's training data; and, from the prefixes of the
          600 K training-data file, what plain MD at 600 K needs (analysis only).
  pt      parallel tempering as in data/README.md: the CPU cost per ns of a
          short run of ``trade_md.tempering.parallel_tempering`` (measured), times
          the length after which the prefixes of the shipped 10 ns references
          reach SE <= target (analysis of existing files, not re-run).
  trade   trade_md: ``trade_md.workflow.run`` of --workflow (README quick
          recipe) with ``data.max_frames`` = the first N ns of the 600 K data,
          for each N of --trade-ns; first sampling 300 K only (CPU = training +
          one sample set), then the other --temperatures (CPU of the extra sets).
          Cost = N ns of 600 K MD (priced by the speed arm) + those CPU times.

Every free energy comes from ``trade_md.analysis.residues.basin_free_energy``
(MD frames: blocks of --block-ps; flow samples: importance weights, blocks of 1),
ESS and the verdicts from ``trade_md.analysis.evaluate.temperature_metrics``.
Every part is cached in the output folder (default runs/cost_to_answer); a
rerun skips what is done and continues what is not (MD chunks, training).

    nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/cost_to_answer.py --arms speed,pt,trade,md
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import math
import os
import platform as _platform
import time
from pathlib import Path

import numpy as np

from trade_md import datasets
from trade_md.analysis.evaluate import temperature_metrics
from trade_md.analysis.observables import BASIN_ALPHA_L_C7AX, assign_basins, ramachandran
from trade_md.analysis.residues import basin_free_energy
from trade_md.config import load_yaml
from trade_md.data import ReferenceData
from trade_md.generator import Samples
from trade_md.simulate import simulate
from trade_md.tempering import parallel_tempering
from trade_md.workflow import WorkflowConfig, build_system, run as run_workflow

ARMS = ("speed", "pt", "trade", "md")
PT_TEMPERATURES = (300.0, 370.0, 450.0, 530.0, 600.0, 700.0, 830.0, 1000.0)
#: The shipped PT run (data/README.md): 8 x 10.1 ns in 68 CPU-minutes, 100 ps equilibration.
PT_DOCUMENTED = {"cpu_s": 68 * 60.0, "ns_per_temperature": 10.1, "equilibration_ns": 0.1}


# ------------------------------------------------------------------ helpers
def _read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def _load() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def torsions(data: ReferenceData) -> tuple[np.ndarray, np.ndarray]:
    """phi, psi (radians) of the one residue of alanine dipeptide."""
    phi, psi = ramachandran(data.xyz, data.topology)
    return phi[:, 0], psi[:, 0]


def free_energy(phi, psi, block: int, weights=None) -> dict:
    """dF(alpha_L/C7ax - rest) in kT with its bootstrap SE (inf: a replicate with an empty side; None: empty)."""
    out = basin_free_energy(phi, psi, weights, block_size=max(1, min(block, len(phi))))
    return {"value": out["value"], "stderr": out["stderr"] if out["value"] is not None else math.inf}


def visits(phi, psi) -> int:
    """Entries into alpha_L/C7ax (a frame inside after one outside; the first frame counts if inside)."""
    inside = assign_basins(phi, psi) == BASIN_ALPHA_L_C7AX
    return int(inside[0]) + int(np.sum(inside[1:] & ~inside[:-1]))


def needed_by_scaling(length: float, stderr: float, target: float) -> float:
    """Length at which SE ~ 1/sqrt(length) reaches ``target`` (inf when SE is not finite)."""
    return length * (stderr / target) ** 2 if math.isfinite(stderr) else math.inf


def se_reached(df: dict, target_se: float) -> bool:
    """The stopping rule a user can apply: a finite estimate with SE <= target."""
    return df["value"] is not None and df["stderr"] <= target_se


#: Independent visits of the basin that an MD estimate of its population needs for 0.2 kT (relative error
#: ~1/sqrt(n)); the block SE alone is blind to visits longer than a block.
MIN_VISITS = 25


def md_answered(seg: dict, target_se: float) -> bool:
    """The stopping rule of plain MD: SE <= target and at least :data:`MIN_VISITS` visits of the basin.

    With the SE alone, 14 ns of 300 K MD with one visit gave 1.22 +- 0.20 kT against 3.86 (1 Dec 2026).
    """
    return se_reached(seg["dF"], target_se) and seg["visits"] >= MIN_VISITS


def bias_ok(df: dict, reference: float, max_bias: float):
    """|dF - reference| <= max_bias (None without an estimate)."""
    return None if df["value"] is None else bool(abs(df["value"] - reference) <= max_bias)


def references(temperatures, block_ps: float) -> dict:
    """{T: (ReferenceData, dF)} of the shipped PT references (dF with blocks of ``block_ps``)."""
    out = {}
    for t in temperatures:
        data = ReferenceData.load(datasets.path(f"ala2_pt_{t:g}K"))
        block = max(1, round(block_ps / _interval_ps(data)))
        out[float(t)] = (data, free_energy(*torsions(data), block))
    return out


# ------------------------------------------------------------------ arms
def md_arm(system, out: Path, args, ref_df: float, log) -> dict:
    """Plain MD at args.md_temperature in chunks until :func:`md_answered` or the cap; cached per chunk."""
    folder = out / f"md_{args.md_temperature:g}K"
    settings = {"temperature": args.md_temperature, "chunk_ns": args.md_chunk_ns, "seed": args.seed,
                "report_interval_ps": args.report_interval_ps, "equilibration_ps": args.md_equilibration_ps,
                "rest_equilibration_ps": args.md_rest_equilibration_ps, "platform": args.platform}
    record = _read(folder / "segments.json") or {"settings": settings, "segments": []}
    if record["settings"] != settings:
        raise SystemExit(f"{folder} holds MD chunks made with other settings {record['settings']}; "
                         "use another --out or delete the folder")
    segs, block = record["segments"], max(1, round(args.block_ps / args.report_interval_ps))
    folder.mkdir(parents=True, exist_ok=True)
    phi_parts, psi_parts = [], []
    for k in range(len(segs)):
        phi, psi = torsions(ReferenceData.load(folder / f"seg_{k:03d}.h5"))
        phi_parts.append(phi)
        psi_parts.append(psi)
    while True:
        last = segs[-1] if segs else None
        if last and md_answered(last, args.target_se):
            break
        if last and last["ns"] >= args.md_cap_ns - 1e-9:
            break
        if last and _past_deadline(args, last.get("wall_s", 0.0)):
            log(f"md: the next chunk would end after the deadline {args.deadline}: stopping at {last['ns']:g} ns")
            record["stopped_by_deadline"] = True
            break
        k = len(segs)
        path = folder / f"seg_{k:03d}.h5"
        start = system
        if k > 0:  # continue from the last frame of the previous chunk
            start = copy.copy(system)
            start.reference_xyz = ReferenceData.load(folder / f"seg_{k - 1:03d}.h5").xyz[-1].astype(np.float64)
        resumed = path.with_name(path.name + ".partial").exists()
        cpu0, wall0, load = time.process_time(), time.perf_counter(), _load()
        if path.exists():  # finished by a process that stopped before recording it
            data, cpu = ReferenceData.load(path), None
        else:
            data = simulate(start, args.md_temperature, args.md_chunk_ns, seed=args.seed + k, out=path,
                            report_interval_ps=args.report_interval_ps, platform=args.platform, progress=False,
                            equilibration_ps=args.md_equilibration_ps if k == 0 else args.md_rest_equilibration_ps)
            cpu = time.process_time() - cpu0
        phi, psi = torsions(data)
        phi_parts.append(phi)
        psi_parts.append(psi)
        phi, psi = np.concatenate(phi_parts), np.concatenate(psi_parts)
        known = [s["cpu_s"] for s in segs if s["cpu_s"] is not None] + ([cpu] if cpu is not None else [])
        per_chunk = float(np.mean(known)) if known else math.nan
        ns = (k + 1) * args.md_chunk_ns
        seg = {"chunk": k, "cpu_s": cpu, "wall_s": time.perf_counter() - wall0, "resumed": resumed,
               "load_before": load, "ns": ns,
               "cum_cpu_s": sum(s["cpu_s"] if s["cpu_s"] is not None else per_chunk for s in segs)
               + (cpu if cpu is not None else per_chunk),
               "dF": free_energy(phi, psi, block), "dF_1ns_blocks": free_energy(phi, psi, round(1000 / args.report_interval_ps)),
               "visits": visits(phi, psi), "fraction_alphaL": float(np.mean(assign_basins(phi, psi) == BASIN_ALPHA_L_C7AX))}
        segs.append(seg)
        _write(folder / "segments.json", record)
        log(f"md {args.md_temperature:g} K: {ns:g} ns, {seg['cum_cpu_s']:.0f} CPU-s, dF {seg['dF']['value']} "
            f"+- {seg['dF']['stderr']:.3g} kT, {seg['visits']} alpha_L visits")
    last = segs[-1]
    total_cpu = last["cum_cpu_s"]
    result = {"settings": settings, "curve": [{"ns": s["ns"], "cpu_s": s["cum_cpu_s"], "dF": s["dF"]["value"],
                                               "stderr": s["dF"]["stderr"], "visits": s["visits"]} for s in segs],
              "ns": last["ns"], "cpu_s": total_cpu, "cpu_s_per_ns": total_cpu / last["ns"], "dF": last["dF"],
              "dF_1ns_blocks": last["dF_1ns_blocks"], "visits": last["visits"],
              "fraction_alphaL": last["fraction_alphaL"], "reference_dF": ref_df,
              "reached": md_answered(last, args.target_se), "se_reached": se_reached(last["dF"], args.target_se),
              "bias_ok": bias_ok(last["dF"], ref_df, args.max_bias),
              "cap_ns": args.md_cap_ns, "stopped_by_deadline": record.get("stopped_by_deadline", False),
              "any_chunk_resumed_or_unrecorded": any(s["resumed"] or s["cpu_s"] is None for s in segs)}
    if not result["reached"]:
        by_se = needed_by_scaling(last["ns"], last["dF"]["stderr"], args.target_se)
        # ~1/sqrt(n) relative error of a population seen in n independent visits: 0.2 kT needs ~MIN_VISITS;
        # with no visit seen, the 95 % upper bound of the rate (3 visits per run length) gives a lower bound.
        # Both are needed: the block SE is blind to correlations longer than a block (a ns-long visit),
        # so the estimate is the larger of the two.
        by_visits = MIN_VISITS * last["ns"] / (last["visits"] or 3)
        result["extrapolated_ns_by_se_scaling"] = by_se
        result["extrapolated_ns_by_visits"] = by_visits
        best = max(by_se, by_visits) if math.isfinite(by_se) else by_visits
        result["extrapolated_by"] = ("SE ~ 1/sqrt(t)" if best == by_se else
                                     f"{MIN_VISITS} visits at the observed rate ({last['visits']} in {last['ns']:g} ns)"
                                     if last["visits"] else f"no visit: {MIN_VISITS} visits at the 95 % upper rate")
        result["extrapolated_ns"] = best
        result["extrapolated_cpu_s"] = best * result["cpu_s_per_ns"]
        if last["visits"]:
            # the rate implied by the reference population p and the mean dwell time d seen here:
            # one visit per d (1 - p) / p + d ns
            p_ref = 1.0 / (1.0 + math.exp(ref_df))
            dwell = last["fraction_alphaL"] * last["ns"] / last["visits"]
            by_dwell = MIN_VISITS * dwell / p_ref
            result["mean_dwell_ns"] = dwell
            result["extrapolated_ns_by_reference_population_and_dwell"] = by_dwell
            result["extrapolated_cpu_s_by_reference_population_and_dwell"] = by_dwell * result["cpu_s_per_ns"]
    return result


def speed_arm(system, out: Path, args, ref600: float, log) -> dict:
    """CPU cost per ns of 600 K MD (measured) and the prefix curve of the 600 K training data (analysis)."""
    folder = out / "md_speed_600K"
    cached = _read(folder / "speed.json")
    if cached is None:
        folder.mkdir(parents=True, exist_ok=True)
        cpu0, load = time.process_time(), _load()
        simulate(system, 600.0, args.speed_ns, seed=args.seed, out=folder / "md.h5", overwrite=True,
                 report_interval_ps=args.report_interval_ps, platform=args.platform, progress=False,
                 equilibration_ps=0.0)
        cpu = time.process_time() - cpu0
        cached = {"ns": args.speed_ns, "cpu_s": cpu, "cpu_s_per_ns": cpu / args.speed_ns, "load_before": load,
                  "ns_per_cpu_day": args.speed_ns / cpu * 86400.0}
        _write(folder / "speed.json", cached)
    log(f"speed: 600 K MD {cached['cpu_s_per_ns']:.1f} CPU-s per ns ({cached['ns_per_cpu_day']:.0f} ns per CPU-day)")
    data = ReferenceData.load(args.trade_data)
    step = max(1, round(args.prefix_step_ns * 1000 / _interval_ps(data)))
    phi, psi = torsions(data)
    block = max(1, round(args.block_ps / _interval_ps(data)))
    curve = _prefix_curve(phi, psi, step, block, _interval_ps(data), cached["cpu_s_per_ns"], 0.0)
    return {"measured": cached, "md600_file": str(args.trade_data), "md600_reference_dF": ref600,
            "md600_curve": curve, "md600_answer": _first_answer(curve, ref600, args)}


def _past_deadline(args, seconds: float) -> bool:
    """True when ``seconds`` from now is past ``args.deadline`` (UTC HH:MM today; None: no deadline)."""
    if not args.deadline:
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    hour, minute = (int(x) for x in args.deadline.split(":"))
    return now + datetime.timedelta(seconds=seconds) > now.replace(hour=hour, minute=minute, second=0, microsecond=0)


def _interval_ps(data: ReferenceData) -> float:
    return float(data.time[1] - data.time[0]) if len(data) > 1 else 1.0


def _prefix_curve(phi, psi, step: int, block: int, interval_ps: float, cpu_per_ns: float, extra_ns: float) -> list:
    """dF and SE of the first n frames, n = step, 2 step, ..., with the CPU cost of (n frames + extra_ns)."""
    curve = []
    for n in list(range(step, len(phi) + 1, step)) or [len(phi)]:
        ns = n * interval_ps / 1000.0
        df = free_energy(phi[:n], psi[:n], block)
        curve.append({"ns": ns, "cpu_s": (ns + extra_ns) * cpu_per_ns, "dF": df["value"], "stderr": df["stderr"]})
    return curve


def _first_answer(curve: list, ref: float, args) -> dict:
    """First prefix with SE <= target (and whether its bias is within the limit); else an SE-scaling extrapolation."""
    for point in curve:
        df = {"value": point["dF"], "stderr": point["stderr"]}
        if se_reached(df, args.target_se):
            return dict(point, reached=True, bias_ok=bias_ok(df, ref, args.max_bias))
    last = curve[-1]
    ns = needed_by_scaling(last["ns"], last["stderr"], args.target_se)
    per_ns = last["cpu_s"] / last["ns"] if last["ns"] else math.nan
    return dict(last, reached=False, bias_ok=bias_ok({"value": last["dF"]}, ref, args.max_bias),
                extrapolated_ns=ns, extrapolated_cpu_s=ns * per_ns)


def pt_arm(system, out: Path, args, refs: dict, log) -> dict:
    """PT cost per ns (short run, measured) x the prefix length at which each shipped reference answers."""
    folder = out / "pt_short"
    cached = _read(folder / "cost.json")
    if cached is None:
        cpu0, load = time.process_time(), _load()
        parallel_tempering(system, args.pt_temperatures, args.pt_short_ns, seed=args.seed, out=folder / "run",
                           equilibration_ps=args.pt_equilibration_ps, report_interval_ps=args.report_interval_ps,
                           platform=args.platform, progress=False, overwrite=True)
        cpu = time.process_time() - cpu0
        ns = args.pt_short_ns + args.pt_equilibration_ps / 1000.0
        cached = {"temperatures": list(args.pt_temperatures), "ns_per_temperature": ns, "cpu_s": cpu,
                  "cpu_s_per_ns": cpu / ns, "load_before": load,
                  "aggregate_ns_per_cpu_day": ns * len(args.pt_temperatures) / cpu * 86400.0}
        _write(folder / "cost.json", cached)
    documented = PT_DOCUMENTED["cpu_s"] / (PT_DOCUMENTED["ns_per_temperature"])
    log(f"pt: {cached['cpu_s_per_ns']:.0f} CPU-s per ns of all {len(cached['temperatures'])} replicas "
        f"(documented run: {documented:.0f})")
    per_t = {}
    for t, (data, df) in refs.items():
        phi, psi = torsions(data)
        step = max(1, round(args.prefix_step_ns * 1000 / _interval_ps(data)))
        block = max(1, round(args.block_ps / _interval_ps(data)))
        curve = _prefix_curve(phi, psi, step, block, _interval_ps(data), cached["cpu_s_per_ns"],
                              PT_DOCUMENTED["equilibration_ns"])
        per_t[f"{t:g}"] = {"curve": curve, "answer": _first_answer(curve, df["value"], args)}
    return {"measured": cached, "documented_cpu_s_per_ns": documented, "per_temperature": per_t}


def trade_arm(system, base: WorkflowConfig, out: Path, args, refs: dict, speed: dict, log) -> dict:
    """trade_md workflows on the first N ns of the 600 K data; CPU of training + sampling; metrics per T."""
    data_file = Path(args.trade_data)
    probe = ReferenceData.load(data_file)
    interval, available = _interval_ps(probe), len(probe)
    del probe
    answer_t = args.md_temperature
    temps = tuple(sorted(set(args.temperatures) | {answer_t}))
    results, wall_estimate = {}, args.trade_wall_estimate_s
    for n_ns in args.trade_ns:
        folder = out / f"trade_{n_ns:g}ns"
        frames = int(round(n_ns * 1000 / interval))
        if frames > available:
            raise SystemExit(f"{data_file} holds {available} frames ({available * interval / 1000:g} ns), "
                             f"fewer than the {n_ns:g} ns asked")
        cfg = dataclasses.replace(
            base, out_dir=str(folder / "workflow"),
            data=dataclasses.replace(base.data, train=str(data_file), max_frames=frames),
            sample=dataclasses.replace(base.sample, temperatures=(answer_t,), n=args.samples),
            evaluate=dataclasses.replace(base.evaluate, references={}),
            run=dataclasses.replace(base.run, progress=False))
        cost = _read(folder / "cost.json") or {}
        if "train_and_sample_answer" not in cost and _past_deadline(args, wall_estimate):
            log(f"trade {n_ns:g} ns: skipped, a training would end after the deadline {args.deadline}")
            continue
        for phase, phase_temps in (("train_and_sample_answer", (answer_t,)), ("sample_others", temps)):
            if phase in cost:
                continue
            started = folder / f"{phase}.started"
            resumed = started.exists()
            started.parent.mkdir(parents=True, exist_ok=True)
            started.write_text(datetime.datetime.now(datetime.timezone.utc).isoformat())
            log(f"trade {n_ns:g} ns: {phase} ({frames} frames, sampling {', '.join(f'{t:g}' for t in phase_temps)} K)")
            cpu0, wall0, load = time.process_time(), time.perf_counter(), _load()
            run_workflow(dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, temperatures=phase_temps)),
                         log=lambda msg: log(f"  {msg}"))
            cost[phase] = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                           "load_before": load, "resumed_after_interruption": resumed}
            _write(folder / "cost.json", cost)
            started.unlink()
            if phase == "train_and_sample_answer":
                wall_estimate = max(wall_estimate, cost[phase]["wall_s"])
        metrics = _read(folder / "metrics.json") or {}
        for t in temps:
            key = f"{t:g}"
            if key in metrics or t not in refs:
                continue
            s = Samples.load(folder / "workflow" / f"samples_{key}K.h5", system=system)
            m = temperature_metrics(s, refs[t][0])
            res = next(iter(m["residues"].values()))
            metrics[key] = {"dF": res["dF_alphaL_reweighted"], "dF_md": res["dF_alphaL_md"],
                            "relative_ess": m["relative_ess"], "js_reweighted": res["js_reweighted"],
                            "js_floor": res["js_floor"], "within_noise": res["within_noise"],
                            "verdict": res["verdict"]}
            _write(folder / "metrics.json", metrics)
        data_cpu = (n_ns + 0.1) * speed["cpu_s_per_ns"]  # + 100 ps equilibration, as in data/README.md
        a = cost["train_and_sample_answer"]["cpu_s"]
        b = cost["sample_others"]["cpu_s"]
        per_sample = b / max(1, (len(temps) - 1) * args.samples)
        m300 = metrics.get(f"{answer_t:g}")
        entry = {"frames": frames, "cpu_s_data": data_cpu, "cpu_s_train_and_sample": a, "cpu_s_other_samples": b,
                 "cost": cost, "metrics": metrics, "cpu_s_answer": data_cpu + a, "cpu_s_all_temperatures": data_cpu + a + b}
        if m300 is not None and m300["dF"].get("value") is not None:
            ref = refs[answer_t][1]["value"]
            se = m300["dF"]["stderr"]
            entry["reached"] = se_reached(m300["dF"], args.target_se)
            entry["bias_ok"] = bias_ok(m300["dF"], ref, args.max_bias)
            entry["bias"] = m300["dF"]["value"] - ref
            if se > args.target_se and math.isfinite(se):
                more = args.samples * ((se / args.target_se) ** 2 - 1)
                entry["extrapolated_samples_for_target_se"] = args.samples + more
                entry["extrapolated_cpu_s_answer"] = data_cpu + a + more * per_sample
        results[f"{n_ns:g}"] = entry
        log(f"trade {n_ns:g} ns: answer {entry['cpu_s_answer']:.0f} CPU-s (data {data_cpu:.0f} + training and "
            f"sampling {a:.0f}); dF 300 K {m300 and m300['dF']}, ESS {m300 and m300['relative_ess']}")
    return results


# ------------------------------------------------------------------ summary
def _fmt_df(df) -> str:
    if df is None or df.get("value") is None:
        return "no visit"
    return f"{df['value']:.2f} ± {df['stderr']:.2f}"


def _cpu(s) -> str:
    return "n/a" if s is None or not math.isfinite(s) else f"{s:,.0f}"


def _bias_text(ok, args) -> str:
    return "no estimate" if ok is None else (f"|bias| <= {args.max_bias}" if ok else f"|bias| > {args.max_bias}")


def summarize(results: dict, args) -> list[str]:
    """The results.md lines: the 300 K answer per approach, and all temperatures at once."""
    ref = results["references"]
    t_ans = f"{args.md_temperature:g}"
    r300 = ref[t_ans]
    lines = [f"# Cost to answer: dF(alpha_L/C7ax - rest) at {t_ans} K to SE <= {args.target_se} kT, "
             f"|bias| <= {args.max_bias} kT", "",
             f"Date {results['date']}; machine: {results['machine']['cpus']} CPUs, {results['machine']['platform']}; "
             f"load averages before each measured part are in results.json.",
             f"Reference: ala2_pt_{t_ans}K, dF = {_fmt_df(r300)} kT (blocks of {args.block_ps:g} ps).", "",
             "| approach | cost: how known | simulated / data | CPU-s | dF [kT] | bias [kT] | SE target reached; bias |",
             "|---|---|---|---|---|---|---|"]
    md = results.get("md")
    if md:
        df = md["dF"]
        bias = "n/a" if df["value"] is None else f"{df['value'] - md['reference_dF']:+.2f}"
        if md["reached"]:
            status = f"yes; {_bias_text(md['bias_ok'], args)}"
        else:
            sign = "≥" if md["visits"] == 0 else "≈"
            se_note = (f"SE {md['dF']['stderr']:.2f} reached but {md['visits']} of {MIN_VISITS} visits; "
                       if md.get("se_reached") else "")
            status = (f"not reached within {md['ns']:g} ns ({_cpu(md['cpu_s'])} CPU-s; {se_note}"
                      f"{_bias_text(md['bias_ok'], args)}); extrapolated "
                      f"{sign} {md['extrapolated_ns']:,.0f} ns, {sign} {_cpu(md['extrapolated_cpu_s'])} CPU-s "
                      f"({md['extrapolated_by']})")
            if "extrapolated_ns_by_reference_population_and_dwell" in md:
                status += (f"; ≈ {md['extrapolated_ns_by_reference_population_and_dwell']:,.0f} ns, "
                           f"{_cpu(md['extrapolated_cpu_s_by_reference_population_and_dwell'])} CPU-s from the "
                           f"reference population and the mean dwell {md['mean_dwell_ns']:.2g} ns")
        lines.append(f"| plain MD {t_ans} K | measured (process CPU time) | {md['ns']:g} ns, {md['visits']} visits "
                     f"| {_cpu(md['cpu_s'])} | {_fmt_df(df)} | {bias} | {status} |")
    pt = results.get("pt")
    if pt and t_ans in pt["per_temperature"]:
        a = pt["per_temperature"][t_ans]["answer"]
        bias = "n/a" if a["dF"] is None else f"{a['dF'] - r300['value']:+.2f}"
        per_ns = pt["measured"]["cpu_s_per_ns"]
        if a["reached"]:
            ns, status = a["ns"], f"yes, after {a['ns']:g} ns; {_bias_text(a['bias_ok'], args)}"
        else:
            ns = a["extrapolated_ns"]
            status = f"not within the {a['ns']:g} ns shipped; extrapolated ≈ {ns:.1f} ns"
        lines.append(f"| PT, {len(pt['measured']['temperatures'])} replicas | derived: measured {per_ns:.0f} CPU-s "
                     f"per ns (short run) x (prefix + 0.1 ns equilibration) | first {a['ns']:g} ns of the shipped run "
                     f"| {_cpu((ns + 0.1) * per_ns)} | {a['dF']:.2f} ± {a['stderr']:.2f} | {bias} | {status} |")
        lines.append(f"| PT, documented speed | derived: 68 CPU-min / 10.1 ns (data/README.md) x (prefix + 0.1 ns) | as above "
                     f"| {_cpu((ns + 0.1) * pt['documented_cpu_s_per_ns'])} | | | |")
    for n_ns, e in (results.get("trade") or {}).items():
        m = e["metrics"].get(t_ans, {})
        bias = f"{e['bias']:+.2f}" if "bias" in e else "n/a"
        status = (f"yes; {_bias_text(e.get('bias_ok'), args)}" if e.get("reached")
                  else f"no; {_bias_text(e.get('bias_ok'), args)}")
        if "extrapolated_cpu_s_answer" in e:
            status += (f" (SE: {e['extrapolated_samples_for_target_se']:,.0f} samples needed, "
                       f"≈ {_cpu(e['extrapolated_cpu_s_answer'])} CPU-s)")
        lines.append(f"| trade_md, {n_ns} ns of 600 K data | data derived (measured 600 K MD CPU-s/ns x ns), "
                     f"training + sampling measured | {n_ns} ns ({e['frames']} frames), {args.samples} samples, "
                     f"ESS {m.get('relative_ess', float('nan')):.1%} | {_cpu(e['cpu_s_answer'])} "
                     f"(data {_cpu(e['cpu_s_data'])} + {_cpu(e['cpu_s_train_and_sample'])}) | {_fmt_df(m.get('dF'))} "
                     f"| {bias} | {status} |")
    header = ["T [K]", "reference dF", "PT prefix to answer [ns]"] + [
        f"trade_md {n} ns: dF, ESS, verdict" for n in (results.get("trade") or {})]
    lines += ["", "## All reference temperatures at once", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t, r in ref.items():
        cells = []
        if pt and t in pt["per_temperature"]:
            a = pt["per_temperature"][t]["answer"]
            cells.append(f"{a['ns']:g}" if a["reached"] else f"> {a['ns']:g} (≈ {a['extrapolated_ns']:.1f})")
        else:
            cells.append("n/a")
        for e in (results.get("trade") or {}).values():
            m = e["metrics"].get(t)
            cells.append("n/a" if m is None else
                         f"{_fmt_df(m['dF'])}, {m['relative_ess']:.1%}, {m['verdict']}")
        lines.append(f"| {t} | {_fmt_df(r)} | " + " | ".join(cells) + " |")
    lines.append("")
    if pt:
        needed = [a["answer"]["ns"] if a["answer"]["reached"] else a["answer"]["extrapolated_ns"]
                  for a in pt["per_temperature"].values()]
        longest = max(needed)
        lines.append(f"PT answers every temperature once its slowest one does: {longest:.1f} ns, "
                     f"{_cpu((longest + 0.1) * pt['measured']['cpu_s_per_ns'])} CPU-s (measured speed).")
    for n_ns, e in (results.get("trade") or {}).items():
        lines.append(f"trade_md {n_ns} ns: one training + {len(e['metrics'])} sample sets, "
                     f"{_cpu(e['cpu_s_all_temperatures'])} CPU-s (data {_cpu(e['cpu_s_data'])}, training and 300 K "
                     f"samples {_cpu(e['cpu_s_train_and_sample'])}, other sample sets {_cpu(e['cpu_s_other_samples'])}).")
    sp = results.get("speed")
    if sp:
        a = sp["md600_answer"]
        ns = a["ns"] if a["reached"] else a["extrapolated_ns"]
        lines.append(f"Plain MD needs one run per temperature: at 600 K the prefixes of {sp['md600_file']} answer after "
                     f"{ns:g} ns{'' if a['reached'] else ' (extrapolated)'} = {_cpu(ns * sp['measured']['cpu_s_per_ns'])} "
                     f"CPU-s (measured 600 K speed {sp['measured']['cpu_s_per_ns']:.1f} CPU-s/ns); "
                     "450, 700 and 1000 K plain MD were not measured.")
    return lines


def plot(results: dict, args, path: Path) -> None:
    """SE of dF (left) and |dF - reference| (right) against CPU seconds, per approach, at the answer temperature."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ceiling = 3.0
    t_ans = f"{args.md_temperature:g}"
    ref = results["references"][t_ans]["value"]
    fig, (ax_se, ax_bias) = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)

    def curve(points, label, style):
        x = np.array([p["cpu_s"] for p in points], dtype=float)
        y = np.array([p["stderr"] if p["dF"] is not None else math.inf for p in points], dtype=float)
        b = np.array([max(abs(p["dF"] - ref), 0.01) if p["dF"] is not None else math.inf for p in points],
                     dtype=float)  # floored at 0.01 kT for the log axis
        for ax, values in ((ax_se, y), (ax_bias, b)):
            finite = np.isfinite(values)
            line, = ax.plot(x[finite], values[finite], style, label=label)
            if (~finite).any():
                ax.plot(x[~finite], np.full((~finite).sum(), ceiling), "x", color=line.get_color())

    if results.get("md"):
        curve(results["md"]["curve"], f"plain MD {t_ans} K (measured)", "o-")
    if results.get("pt") and t_ans in results["pt"]["per_temperature"]:
        curve(results["pt"]["per_temperature"][t_ans]["curve"],
              f"PT, {t_ans} K prefixes x measured CPU/ns (bias: against itself)", "s-")
    for n_ns, e in (results.get("trade") or {}).items():
        m = e["metrics"].get(t_ans)
        if m is not None and m["dF"].get("value") is not None:
            se = m["dF"]["stderr"] if math.isfinite(m["dF"]["stderr"]) else ceiling
            line, = ax_se.plot([e["cpu_s_answer"]], [se], "D", label=f"trade_md, {n_ns} ns of 600 K data")
            ax_bias.plot([e["cpu_s_answer"]], [max(abs(m["dF"]["value"] - ref), 0.01)], "D", color=line.get_color())
    ax_se.axhline(args.target_se, color="k", ls="--", lw=1, label=f"target SE {args.target_se} kT")
    ax_bias.axhline(args.max_bias, color="k", ls=":", lw=1, label=f"bias limit {args.max_bias} kT")
    for ax in (ax_se, ax_bias):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("CPU seconds (this machine)")
    ax_se.set_ylabel(f"SE of dF(alpha_L/C7ax) at {t_ans} K [kT]")
    ax_bias.set_ylabel(f"|dF - reference {ref:.2f}| [kT]")
    ax_se.set_title(f"block-bootstrap SE (x at {ceiling:g}: infinite, too few visits)", fontsize=10)
    ax_bias.set_title("bias against the PT reference (x: no estimate; floored at 0.01)", fontsize=10)
    ax_se.legend(fontsize=7)
    ax_bias.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ main
def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/cost_to_answer")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, run in this order; of {ARMS}")
    p.add_argument("--target-se", type=float, default=0.2, help="kT")
    p.add_argument("--max-bias", type=float, default=0.3, help="kT, against the PT reference")
    p.add_argument("--block-ps", type=float, default=100.0, help="bootstrap block of MD frames, ps")
    p.add_argument("--report-interval-ps", type=float, default=1.0, help="frame interval of our MD and PT runs")
    p.add_argument("--platform", default="Reference")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--temperatures", type=_floats, default=(300.0, 450.0, 600.0, 700.0, 1000.0),
                   help="reference temperatures (shipped ala2_pt_<T>K files)")
    p.add_argument("--prefix-step-ns", type=float, default=0.5, help="prefix step of the PT and 600 K MD curves")
    p.add_argument("--md-temperature", type=float, default=300.0, help="the temperature of the question")
    p.add_argument("--md-chunk-ns", type=float, default=2.0)
    p.add_argument("--md-cap-ns", type=float, default=40.0, help="plain MD stops here if not answered")
    p.add_argument("--md-equilibration-ps", type=float, default=100.0, help="before the first chunk")
    p.add_argument("--md-rest-equilibration-ps", type=float, default=10.0, help="before later chunks")
    p.add_argument("--speed-ns", type=float, default=1.0, help="600 K MD run that prices the training data")
    p.add_argument("--pt-temperatures", type=_floats, default=PT_TEMPERATURES)
    p.add_argument("--pt-short-ns", type=float, default=0.2)
    p.add_argument("--pt-equilibration-ps", type=float, default=20.0)
    p.add_argument("--workflow", default="workflows/ala2_quick.yaml")
    p.add_argument("--trade-data", default=None, help="600 K MD file (default: the workflow's data.train)")
    p.add_argument("--trade-ns", type=_floats, default=(25.0, 100.0, 50.0, 10.0), help="ns of 600 K data, in order")
    p.add_argument("--samples", type=int, default=10000, help="flow samples per temperature")
    p.add_argument("--deadline", default=None, help="UTC HH:MM: start no MD chunk or training that would end later")
    p.add_argument("--trade-wall-estimate-s", type=float, default=900.0,
                   help="wall seconds a training takes, for --deadline (raised to the longest one seen)")
    args = p.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        p.error(f"unknown arms {unknown}; choose from {ARMS}")
    return args


def main(argv=None, log=print) -> dict:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_yaml(WorkflowConfig, args.workflow)
    if args.trade_data is None:
        args.trade_data = base.data.train
    system = build_system(base.system)
    refs = references(sorted(set(args.temperatures) | {args.md_temperature, 600.0}), args.block_ps)
    results = _read(out / "results.json") or {}
    results.update({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                    "machine": {"cpus": os.cpu_count(), "platform": _platform.platform(), "load_at_end": None},
                    "settings": {k: v for k, v in vars(args).items()},
                    "references": {f"{t:g}": df for t, (_, df) in refs.items() if t in args.temperatures
                                   or t == args.md_temperature}})
    ref_ans = refs[args.md_temperature][1]["value"]
    for arm in args.arms:
        log(f"== {arm}")
        if arm == "speed":
            results["speed"] = speed_arm(system, out, args, refs[600.0][1]["value"], log)
        elif arm == "pt":
            results["pt"] = pt_arm(system, out, args, {t: refs[t] for t in args.temperatures}, log)
        elif arm == "md":
            results["md"] = md_arm(system, out, args, ref_ans, log)
        elif arm == "trade":
            if "speed" not in results:
                results["speed"] = speed_arm(system, out, args, refs[600.0][1]["value"], log)
            results["trade"] = {**(results.get("trade") or {}),
                                **trade_arm(system, base, out, args, refs, results["speed"]["measured"], log)}
        _write(out / "results.json", results)
    results["machine"]["load_at_end"] = _load()
    _write(out / "results.json", results)
    lines = summarize(results, args)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(results, args, out / "se_vs_cpu.png")
    log("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
