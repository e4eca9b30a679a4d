"""Evaluate generated samples against MD references: metrics, plots and a report.

``evaluate(samples, references, out_dir)`` matches each sample set to the
reference at its temperature and computes, for every residue with both phi
and psi (named like ``"ALA2"``), Ramachandran divergences on fixed bins with
the reference's own noise floor and the alpha_L/C7ax-vs-rest free-energy
difference, judged "within noise" or not (:mod:`.residues`); the JS of the
joint basin populations of all residues; energy-distribution distances (also
on the central 99 % of the MD energies, with the outlier fraction); Kish ESS;
and (given the model) the NLL of the MD frames.  It then writes PNG figures,
``metrics.json`` and ``report.md`` (opening with the verdict table of
:mod:`.summary`).

Layout of the metrics of one temperature (``Evaluation.metrics["600 K"]``)
-------------------------------------------------------------------------
- ``residues``: ``{"ALA2": {...}}``, :func:`.residues.residue_metrics` per residue;
- ``joint_basins``: :func:`.residues.joint_basin_metrics`;
- ``within_noise``: every residue (and, for peptides, the joint measure) is;
- ``js``, ``js_floor``, ``kl_md_model(_floor)``, ``js_reweighted``,
  ``kl_md_model_reweighted``: divergences of all residues' (phi, psi) pairs
  pooled in one histogram (for one residue: that residue's);
- ``dF_alphaL_md``, ``dF_alphaL_model``, ``dF_alphaL_reweighted``: only for
  one-residue molecules (alanine dipeptide), equal to the residue's;
- energies (kJ/mol): ``energy_w1_model``, ``energy_w1_reweighted``,
  ``energy_overlap_model``, ``fraction_nonfinite_energy``,
  ``energy_central99_model`` and ``energy_central99_reweighted``
  (:class:`.energies.CentralEnergyDistance`);
- ``peptide_bonds``: ``{"ACE1-ALA2": {"cis_md", "cis_model", "cis_reweighted"}}``, the fraction of
  frames with a cis bond (``|omega| < 90`` degrees), each ``{"value", "stderr"}`` from 20 contiguous
  blocks; not part of the verdict (MD at one temperature rarely isomerizes, so a model trained on it
  may lack cis states that a parallel-tempering reference has);
- ``ess``, ``relative_ess``, ``n_samples``, ``n_reference``; ``pareto_k`` (None when too few weights
  are non-zero) and ``pareto_k_limit``: the reweighted estimates are reliable when k <= limit
  (:func:`trade_md.weights.pareto_k`);
- ``nll_md``: mean ``-log p`` of the reference frames inside the model's support,
  with the fraction ``outside_support`` (log p = -inf) reported, not dropped silently.

A report folder is replaced whole: everything is written into a temporary
folder beside it, which then takes its place, so no figure of an earlier
report survives next to a new one.  A folder that holds anything other than
an earlier report (``report.md``, ``metrics.json``, ``*.png``) is refused.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..data import ReferenceData
from ..generator import BoltzmannGenerator, Samples
from ..trajectory import check_same_molecule
from . import metrics as M
from . import plots
from .observables import ResidueTorsions, peptide_bonds, residue_torsions
from .report import ReportFiles, write_report
from .residues import joint_basin_metrics, per_residue_metrics
from .summary import summary_markdown

__all__ = ["evaluate", "Evaluation", "temperature_metrics"]

#: Files of a report folder; a folder holding anything else is not replaced.
REPORT_FILE_PATTERN = re.compile(r"^(report\.md|metrics\.json|[^/]+\.png)$")


@dataclass
class Evaluation:
    """Result of :func:`evaluate`: metrics per temperature and the files written."""

    metrics: dict
    files: Optional[ReportFiles]


def _key(t: float) -> str:
    return f"{t:g} K"


def _single_temperature(s: Samples) -> float:
    temps = np.unique(s.temperature)
    if len(temps) != 1:
        raise ValueError(f"each sample set must be at one temperature; got {len(temps)} different ones")
    return float(temps[0])


def _pooled(phi: np.ndarray, psi: np.ndarray, weights: Optional[np.ndarray]):
    """Pool all residues' (phi, psi) pairs; weights repeated per residue."""
    n_res = phi.shape[1]
    w = None if weights is None else np.repeat(weights, n_res)
    return phi.reshape(-1), psi.reshape(-1), w


def temperature_metrics(samples: Samples, reference: ReferenceData,
                        model: Optional[BoltzmannGenerator] = None, n_blocks: int = 20) -> dict:
    """Metrics of one sample set against the MD reference at the same temperature.

    Returns a dict of plain numbers (layout in the module docstring):
    divergences in nats (with ``_floor`` noise floors), energy distances in
    kJ/mol, ESS, free energies in k_B T.
    """
    check_same_molecule(reference.topology, samples.topology, what="the samples")
    return _metrics(samples, reference, residue_torsions(samples.xyz, samples.topology),
                    residue_torsions(reference.xyz, reference.topology), model, n_blocks)


def _metrics(samples: Samples, reference: ReferenceData, s_tors: ResidueTorsions, r_tors: ResidueTorsions,
             model: Optional[BoltzmannGenerator], n_blocks: int) -> dict:
    """:func:`temperature_metrics` given the torsions of samples and reference."""
    s_phi, s_psi = s_tors.phi, s_tors.psi
    r_phi, r_psi = r_tors.phi, r_tors.psi
    if len(reference) < 4:
        raise ValueError(f"the {reference.temperature:g} K reference has {len(reference)} frames; need at least 4")
    n_blocks = min(n_blocks, max(2, len(reference) // 5))  # short references: fewer, longer blocks
    block = max(1, len(reference) // 100)
    w = M.self_normalized_weights(samples.log_weights) if samples.log_weights is not None else None
    residues = per_residue_metrics(r_tors.names, s_phi, s_psi, r_phi, r_psi, w, n_blocks=n_blocks,
                                   ref_block_size=block)
    joint = joint_basin_metrics(s_phi, s_psi, r_phi, r_psi, w, n_blocks=n_blocks)
    out: dict = {"n_samples": len(samples), "n_reference": len(reference)}
    sp, ss, _ = _pooled(s_phi, s_psi, None)
    rp, rs, _ = _pooled(r_phi, r_psi, None)
    raw = M.ramachandran_divergences(sp, ss, rp, rs, n_blocks=n_blocks)
    out.update({"js": raw.js, "js_floor": raw.js_floor, "kl_md_model": raw.kl_ref_sample,
                "kl_md_model_floor": raw.kl_ref_sample_floor})
    single = next(iter(residues.values())) if len(residues) == 1 else None
    if single is not None:
        out["dF_alphaL_md"] = single["dF_alphaL_md"]
    if samples.energies is not None:
        finite_e = np.isfinite(samples.energies)
        out["fraction_nonfinite_energy"] = float(1 - finite_e.mean())
        out["energy_w1_model"] = M.wasserstein_1d(samples.energies[finite_e], reference.energies)
        out["energy_overlap_model"] = M.histogram_overlap(samples.energies[finite_e], reference.energies)
        out["energy_central99_model"] = M.central_energy_distance(samples.energies, reference.energies).to_dict()
    if w is not None:
        lw = samples.log_weights
        out["ess"] = M.kish_ess(lw)
        out["relative_ess"] = M.relative_ess(lw)
        out["pareto_k"] = M.pareto_k_or_none(lw)
        out["pareto_k_limit"] = M.pareto_k_limit(len(lw))
        sp_w, ss_w, w_pooled = _pooled(s_phi, s_psi, w)
        rw = M.ramachandran_divergences(sp_w, ss_w, rp, rs, sample_weights=w_pooled, n_blocks=n_blocks)
        out.update({"js_reweighted": rw.js, "kl_md_model_reweighted": rw.kl_ref_sample})
        if samples.energies is not None:
            good = w > 0
            out["energy_w1_reweighted"] = M.wasserstein_1d(samples.energies[good], reference.energies,
                                                           weights_a=w[good])
            out["energy_central99_reweighted"] = M.central_energy_distance(
                samples.energies, reference.energies, w).to_dict()
        if single is not None:
            out["dF_alphaL_reweighted"] = single["dF_alphaL_reweighted"]
    if single is not None:
        out["dF_alphaL_model"] = single["dF_alphaL_model"]
    if model is not None:
        with torch.no_grad():
            p = next(model.parameters())
            lps = [model.log_prob(torch.as_tensor(reference.xyz[i:i + 2048], dtype=p.dtype, device=p.device),
                                  reference.temperature).cpu().numpy() for i in range(0, len(reference), 2048)]
        log_p = np.concatenate(lps)
        if np.isnan(log_p).any():
            raise ValueError(f"the model's log-density of the {reference.temperature:g} K reference is NaN "
                             f"for {int(np.isnan(log_p).sum())} frames")
        inside = np.isfinite(log_p)  # -inf: a frame outside the model's support (e.g. its coordinate windows)
        if inside.sum() >= 2 * block:
            nll = M.nll(log_p[inside], block_size=block)  # takes log p, returns mean -log p
            value, stderr = nll.mean, nll.stderr
        else:
            value = stderr = float("nan")
        out["nll_md"] = {"value": value, "stderr": stderr, "outside_support": float(1.0 - inside.mean())}
    out["residues"] = residues
    out["joint_basins"] = joint
    out["peptide_bonds"] = _peptide_bond_metrics(samples, reference, w, n_blocks)
    out["within_noise"] = all(r["within_noise"] for r in residues.values()) and (
        len(residues) == 1 or joint["within_noise"])
    return out


def _peptide_bond_metrics(samples: Samples, reference: ReferenceData, w: Optional[np.ndarray],
                          n_blocks: int) -> dict:
    """cis fraction of every peptide bond: MD, model, model reweighted (see the module docstring)."""
    s_bonds, r_bonds = peptide_bonds(samples.xyz, samples.topology), peptide_bonds(reference.xyz, reference.topology)
    s_all, r_all = s_bonds.cis(), r_bonds.cis()
    out = {}
    for k, name in enumerate(r_bonds.names):
        s_cis, r_cis = s_all[:, k], r_all[:, k]
        entry = {"cis_md": M.block_mean(r_cis, n_blocks=n_blocks), "cis_model": M.block_mean(s_cis, n_blocks=n_blocks)}
        if w is not None:
            entry["cis_reweighted"] = M.block_mean(s_cis, w, n_blocks=n_blocks)
        out[name] = entry
    return out


def _prepare(sample_list: List[Samples], refs: Dict[float, ReferenceData]) -> list:
    """Check every input; ``(T, samples, reference, sample torsions, reference torsions)`` per set."""
    prepared, seen = [], set()
    for s in sample_list:
        if len(s) == 0:
            raise ValueError("a sample set is empty")
        t = _single_temperature(s)
        match = [rt for rt in refs if abs(rt - t) < 1e-6]
        if not match:
            raise ValueError(f"no reference at {t:g} K; references are at {sorted(refs)} K")
        if _key(t) in seen:
            raise ValueError(f"two sample sets at {t:g} K; pass one per temperature")
        seen.add(_key(t))
        ref = refs[match[0]]
        check_same_molecule(ref.topology, s.topology, what="the samples")
        # computed once for metrics and figures
        prepared.append((t, s, ref, residue_torsions(s.xyz, s.topology), residue_torsions(ref.xyz, ref.topology)))
    return prepared


def _check_report_folder(out: Path) -> None:
    """Refuse an existing path that is not a folder of report files (nothing is written)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not (p.is_file() and REPORT_FILE_PATTERN.match(p.name)))
        if foreign:
            raise FileExistsError(
                f"{out} holds files that are not part of an evaluation report ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); it would be replaced whole: choose another folder")


def _replace_folder(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` in the place of ``out`` (which may exist)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)  # put the earlier report back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def evaluate(samples: Sequence[Samples] | Samples, references: Mapping[float, ReferenceData] | ReferenceData,
             out_dir: Optional[str | Path] = None, model: Optional[BoltzmannGenerator] = None,
             training_temperature: Optional[float] = None) -> Evaluation:
    """Compare sample sets with MD references at the same temperatures.

    Parameters
    ----------
    samples : one Samples or several (each at a single temperature, K; one set per temperature)
    references : ReferenceData or a mapping temperature (K) -> ReferenceData
    out_dir : report folder (report.md, metrics.json, PNGs), created after the
        inputs are checked; an earlier report there is replaced whole, a
        folder holding other files is refused (FileExistsError); None: metrics only
    model : the generator, to report the NLL of the MD frames
    training_temperature : marked in the versus-temperature plot (K)
    """
    sample_list = [samples] if isinstance(samples, Samples) else list(samples)
    if not sample_list:
        raise ValueError("no samples to evaluate")
    if isinstance(references, ReferenceData):
        references = {references.temperature: references}
    refs = {float(t): r for t, r in references.items()}
    for r in refs.values():
        if len(r) == 0:
            raise ValueError("a reference data set is empty")
    out = Path(out_dir) if out_dir is not None else None
    prepared = _prepare(sample_list, refs)
    if out is not None:
        _check_report_folder(out)
    results = {_key(t): _metrics(s, ref, s_t, r_t, model, n_blocks=20) for t, s, ref, s_t, r_t in prepared}
    if out is None:
        return Evaluation(results, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        figures: dict = {}
        for t, s, ref, s_t, r_t in prepared:
            figures.update(_figures(tmp, s, ref, t, s_t, r_t))
        if len(results) > 1:
            figures["metrics vs temperature"] = _versus_temperature(tmp, results, training_temperature)
        write_report(tmp, results, figures, preamble=summary_markdown(results))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a report folder is not
        _replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Evaluation(results, ReportFiles(metrics_json=out / "metrics.json", report_md=out / "report.md"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _versus_temperature(folder: Path, results: dict, training_temperature: Optional[float]) -> Path:
    temps = sorted(float(k.split()[0]) for k in results)
    rows = [results[_key(t)] for t in temps]
    series = {"JS(MD, model) [nats]": [r["js"] for r in rows]}
    floors = {"JS(MD, model) [nats]": [r["js_floor"] for r in rows]}
    if all("js_reweighted" in r for r in rows):
        series["JS(MD, reweighted) [nats]"] = [r["js_reweighted"] for r in rows]
    ess = [r.get("relative_ess", np.nan) for r in rows]
    return plots.plot_metrics_vs_temperature(folder / "metrics_vs_temperature.png", temps, series, floors, ess,
                                             training_temperature=training_temperature)


def _figures(out: Path, s: Samples, ref: ReferenceData, t: float, s_tors: ResidueTorsions,
             r_tors: ResidueTorsions) -> Dict[str, Path]:
    """Ramachandran and phi plots per residue, energy histograms; file names of one-residue
    molecules carry no residue (``ramachandran_600K.png``), those of peptides do."""
    w = M.self_normalized_weights(s.log_weights) if s.log_weights is not None else None
    tag = f"{t:g}K"
    figs: Dict[str, Path] = {}
    for i, name in enumerate(r_tors.names):
        stem = tag if len(r_tors) == 1 else f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)}_{tag}"
        label, title = (f"{t:g} K", f"{name}, {t:g} K")
        figs[f"Ramachandran {name} {label}"] = plots.plot_ramachandran(
            out / f"ramachandran_{stem}.png", s_tors.phi[:, i], s_tors.psi[:, i], r_tors.phi[:, i],
            r_tors.psi[:, i], sample_weights=w, labels=("model", "MD"), title=title)
        figs[f"phi marginal {name} {label}"] = plots.plot_phi_marginal(
            out / f"phi_{stem}.png", s_tors.phi[:, i], r_tors.phi[:, i], sample_weights=w, title=title)
    if s.energies is not None:
        finite = np.isfinite(s.energies)
        figs[f"energies {t:g} K"] = plots.plot_energy_histograms(
            out / f"energies_{tag}.png", s.energies[finite], ref.energies,
            sample_weights=None if w is None else w[finite], title=f"{t:g} K")
    return figs
