"""Evaluate generated samples against MD references: metrics, plots and a report.

``evaluate(samples, references, out_dir)`` matches each sample set to the
reference at its temperature, computes Ramachandran divergences on fixed bins
(with the reference's own noise floor), energy-distribution distances, Kish
ESS, the alpha_L/C7ax-vs-rest free-energy difference, and (given the model)
the NLL of the MD frames; then writes PNG figures, ``metrics.json`` and
``report.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..data import ReferenceData
from ..generator import BoltzmannGenerator, Samples
from ..trajectory import check_same_molecule
from . import metrics as M
from . import plots
from .observables import BASIN_ALPHA_L_C7AX, assign_basins, ramachandran
from .report import ReportFiles, write_report

__all__ = ["evaluate", "Evaluation", "temperature_metrics"]


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


def _free_energy(codes: np.ndarray, weights: Optional[np.ndarray] = None, block_size: int = 1) -> dict:
    """alpha_L/C7ax (code 1) minus the rest (code 0) in k_B T, or None values if a side is empty."""
    try:
        df = M.free_energy_difference(codes, weights, a=1, b=0, block_size=block_size)
    except ValueError as err:  # an empty basin: report it instead of failing the whole evaluation
        return {"value": None, "stderr": None, "note": str(err)}
    return {"value": df.value, "stderr": df.stderr}


def temperature_metrics(samples: Samples, reference: ReferenceData,
                        model: Optional[BoltzmannGenerator] = None, n_blocks: int = 20) -> dict:
    """Metrics of one sample set against the MD reference at the same temperature.

    Returns a dict of plain numbers: divergences in nats (with ``_floor``
    noise floors), energy distances in kJ/mol, ESS, free energies in k_B T.
    """
    check_same_molecule(reference.topology, samples.topology, what="the samples")
    return _metrics(samples, reference, ramachandran(samples.xyz, samples.topology),
                    ramachandran(reference.xyz, reference.topology), model, n_blocks)


def _metrics(samples: Samples, reference: ReferenceData, sample_angles: tuple, reference_angles: tuple,
             model: Optional[BoltzmannGenerator], n_blocks: int) -> dict:
    """:func:`temperature_metrics` given the (phi, psi) arrays of samples and reference (radians)."""
    s_phi, s_psi = sample_angles
    r_phi, r_psi = reference_angles
    sp, ss, _ = _pooled(s_phi, s_psi, None)
    rp, rs, _ = _pooled(r_phi, r_psi, None)
    if len(reference) < 4:
        raise ValueError(f"the {reference.temperature:g} K reference has {len(reference)} frames; need at least 4")
    n_blocks = min(n_blocks, max(2, len(reference) // 5))  # short references: fewer, longer blocks
    out: dict = {"n_samples": len(samples), "n_reference": len(reference)}
    raw = M.ramachandran_divergences(sp, ss, rp, rs, n_blocks=n_blocks)
    out.update({"js": raw.js, "js_floor": raw.js_floor, "kl_md_model": raw.kl_ref_sample,
                "kl_md_model_floor": raw.kl_ref_sample_floor})
    r_codes = (assign_basins(r_phi[:, 0], r_psi[:, 0]) == BASIN_ALPHA_L_C7AX).astype(int)
    block = max(1, len(reference) // 100)
    out["dF_alphaL_md"] = _free_energy(r_codes, block_size=block)
    s_codes = (assign_basins(s_phi[:, 0], s_psi[:, 0]) == BASIN_ALPHA_L_C7AX).astype(int)
    finite_e = np.isfinite(samples.energies) if samples.energies is not None else np.ones(len(samples), bool)
    if samples.energies is not None:
        out["fraction_nonfinite_energy"] = float(1 - finite_e.mean())
        e = samples.energies[finite_e]
        out["energy_w1_model"] = M.wasserstein_1d(e, reference.energies)
        out["energy_overlap_model"] = M.histogram_overlap(samples.energies[finite_e], reference.energies)
    if samples.log_weights is not None:
        lw = samples.log_weights
        w = M.self_normalized_weights(lw)
        out["ess"] = M.kish_ess(lw)
        out["relative_ess"] = M.relative_ess(lw)
        sp_w, ss_w, w_pooled = _pooled(s_phi, s_psi, w)
        rw = M.ramachandran_divergences(sp_w, ss_w, rp, rs, sample_weights=w_pooled, n_blocks=n_blocks)
        out.update({"js_reweighted": rw.js, "kl_md_model_reweighted": rw.kl_ref_sample})
        good = w > 0
        out["energy_w1_reweighted"] = M.wasserstein_1d(samples.energies[good], reference.energies, weights_a=w[good])
        out["dF_alphaL_reweighted"] = _free_energy(s_codes, w)
    out["dF_alphaL_model"] = _free_energy(s_codes)
    if model is not None:
        with torch.no_grad():
            p = next(model.parameters())
            lps = [model.log_prob(torch.as_tensor(reference.xyz[i:i + 2048], dtype=p.dtype, device=p.device),
                                  reference.temperature).cpu().numpy() for i in range(0, len(reference), 2048)]
        nll = M.nll(np.concatenate(lps), block_size=block)  # takes log p, returns mean -log p
        out["nll_md"] = {"value": nll.mean, "stderr": nll.stderr}
    return out


def evaluate(samples: Sequence[Samples] | Samples, references: Mapping[float, ReferenceData] | ReferenceData,
             out_dir: Optional[str | Path] = None, model: Optional[BoltzmannGenerator] = None,
             training_temperature: Optional[float] = None) -> Evaluation:
    """Compare sample sets with MD references at the same temperatures.

    Parameters
    ----------
    samples : one Samples or several (each at a single temperature, K)
    references : ReferenceData or a mapping temperature (K) -> ReferenceData
    out_dir : folder for report.md, metrics.json and PNGs (created); None: metrics only
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
    results: dict = {}
    figures: dict = {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for s in sample_list:
        if len(s) == 0:
            raise ValueError("a sample set is empty")
        t = _single_temperature(s)
        match = [rt for rt in refs if abs(rt - t) < 1e-6]
        if not match:
            raise ValueError(f"no reference at {t:g} K; references are at {sorted(refs)} K")
        ref = refs[match[0]]
        check_same_molecule(ref.topology, s.topology, what="the samples")
        s_angles = ramachandran(s.xyz, s.topology)  # computed once for metrics and figures
        r_angles = ramachandran(ref.xyz, ref.topology)
        results[_key(t)] = _metrics(s, ref, s_angles, r_angles, model, n_blocks=20)
        if out is not None:
            figures.update(_figures(out, s, ref, t, s_angles, r_angles))
    if out is not None and len(results) > 1:
        temps = sorted(float(k.split()[0]) for k in results)
        rows = [results[_key(t)] for t in temps]
        series = {"JS(MD, model) [nats]": [r["js"] for r in rows]}
        floors = {"JS(MD, model) [nats]": [r["js_floor"] for r in rows]}
        if all("js_reweighted" in r for r in rows):
            series["JS(MD, reweighted) [nats]"] = [r["js_reweighted"] for r in rows]
        ess = [r.get("relative_ess", np.nan) for r in rows]
        figures["metrics vs temperature"] = plots.plot_metrics_vs_temperature(
            out / "metrics_vs_temperature.png", temps, series, floors, ess, training_temperature=training_temperature)
    files = write_report(out, results, figures) if out is not None else None
    return Evaluation(results, files)


def _figures(out: Path, s: Samples, ref: ReferenceData, t: float, sample_angles: tuple,
             reference_angles: tuple) -> dict:
    s_phi, s_psi = sample_angles
    r_phi, r_psi = reference_angles
    w = M.self_normalized_weights(s.log_weights) if s.log_weights is not None else None
    tag = f"{t:g}K"
    figs = {
        f"Ramachandran {t:g} K": plots.plot_ramachandran(
            out / f"ramachandran_{tag}.png", s_phi[:, 0], s_psi[:, 0], r_phi[:, 0], r_psi[:, 0],
            sample_weights=w, labels=("model", "MD"), title=f"{t:g} K"),
        f"phi marginal {t:g} K": plots.plot_phi_marginal(
            out / f"phi_{tag}.png", s_phi[:, 0], r_phi[:, 0], sample_weights=w, title=f"{t:g} K"),
    }
    if s.energies is not None:
        finite = np.isfinite(s.energies)
        figs[f"energies {t:g} K"] = plots.plot_energy_histograms(
            out / f"energies_{tag}.png", s.energies[finite], ref.energies,
            sample_weights=None if w is None else w[finite], title=f"{t:g} K")
    return figs
