"""The at-a-glance summary that opens ``report.md``: one verdict per temperature and residue.

:func:`summary_markdown` reads the metrics that
:func:`~trade_md.analysis.evaluate.evaluate` computes (``{"600 K": {...}}``,
each with ``residues``, ``joint_basins``, ``relative_ess`` and the
``energy_central99_*`` entries) and writes two Markdown tables with the rule
of :mod:`~trade_md.analysis.residues` spelled out.
"""
from __future__ import annotations

import math
from typing import Any, List, Mapping, Optional

from .energies import CENTRAL_MASS
from .residues import DF_TOLERANCE, JS_TOLERANCE, N_SIGMA

__all__ = ["rule_text", "summary_markdown"]


def rule_text() -> str:
    """The verdict rule in words (Markdown), with the constants in use."""
    pct = f"{100 * CENTRAL_MASS:g} %"
    return (
        f"**Verdict rule.** A row is **within noise** when (1) JS <= JS floor + {JS_TOLERANCE:g} nats and (2) "
        f"|ΔF model − ΔF MD| <= {DF_TOLERANCE:g} kT + {N_SIGMA:g}σ; otherwise it is **outside noise by** the excess "
        f"of each failed criterion: JS − (floor + {JS_TOLERANCE:g}) in nats, |ΔF diff| − ({DF_TOLERANCE:g} kT + "
        f"{N_SIGMA:g}σ) in kT.\n"
        "JS is the Ramachandran Jensen-Shannon divergence (nats) between the model, reweighted by its importance "
        "weights when it has them, and MD, on fixed 30 × 30 bins on [−π, π)²; its floor is the same divergence "
        "between the even and the odd blocks (of contiguous frames) of the MD reference.  "
        "ΔF = F(alpha_L/C7ax) − F(rest) in kT, the basin being 0 <= φ < 2.1 rad; σ = √(σ_model² + σ_MD²) combines "
        "their block-bootstrap standard errors; ΔF is not judged (—) when the basin is empty in both, and fails "
        "when it is empty in one only.  "
        "The *joint* row (peptides) compares the populations of the 3^n joint basin states of all n residues "
        "and is judged by (1) alone, with its own floor.  Relative ESS = Kish ESS / N of the importance weights.  "
        "Pareto k̂ is the shape of a generalized Pareto distribution fitted to the largest weights; reweighted "
        "estimates from N samples are reliable when k̂ <= min(1 − 1/log10 N, 0.7) (Vehtari et al., JMLR 2024), "
        "and above that limit neither they nor the ESS can be trusted.\n"
        f"Energies: W1 is computed on the central {pct} of the MD energy range; samples outside it (clashes, "
        f"non-finite energies) are counted as outliers instead (MD itself has {100 * (1 - CENTRAL_MASS):g} % "
        "outside).  The plain W1 over all samples is in the sections below.\n"
        "Peptide bonds: the share of frames whose bond is cis (|ω| < 90°), ± its standard error from 20 "
        "contiguous blocks; not judged. MD at one temperature rarely crosses the cis/trans barrier, so a model "
        "trained on it can lack the cis states a parallel-tempering reference has: that share is then missing "
        "from every reweighted estimate, whatever the ESS."
    )


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _signed(value: Any) -> str:
    return "—" if value is None else f"{value:+.3g}"


def _pct(value: Optional[float]) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.3g} %"


def _js_pair(entry: Mapping[str, Any]) -> tuple:
    if "js_reweighted" in entry:
        return entry["js_reweighted"], entry["js_reweighted_floor"]
    return entry["js"], entry["js_floor"]


def _rows(temperature: str, section: Mapping[str, Any]) -> List[str]:
    rows = []
    ess = _pct(section.get("relative_ess"))
    for name, res in section.get("residues", {}).items():
        js, floor = _js_pair(res)
        model_key = "dF_alphaL_reweighted" if res.get("judged") == "reweighted" else "dF_alphaL_model"
        cmp_ = res["dF_alphaL_vs_md"]
        rows.append(
            f"| {temperature} | {name} | {_num(js)} | {_num(floor)} | {_num(res[model_key].get('value'))} | "
            f"{_num(res['dF_alphaL_md'].get('value'))} | {_signed(cmp_.get('value'))} | {_num(cmp_.get('stderr'))} | "
            f"{_num(cmp_.get('n_sigma'), 2)} | {ess} | {res['verdict']} |"
        )
    joint = section.get("joint_basins")
    if joint and joint.get("n_residues", 1) > 1:
        js, floor = _js_pair(joint)
        rows.append(f"| {temperature} | joint ({joint['n_states']} states) | {_num(js)} | {_num(floor)} | — | — | — | "
                    f"— | — | {ess} | {joint['verdict']} |")
    return rows


def _energy_row(temperature: str, section: Mapping[str, Any]) -> Optional[str]:
    model = section.get("energy_central99_model")
    if model is None:
        return None
    reweighted = section.get("energy_central99_reweighted") or {}
    return (f"| {temperature} | {_num(model['low'], 5)} … {_num(model['high'], 5)} | {_num(model['w1'])} | "
            f"{_num(reweighted.get('w1'))} | {_pct(model['outlier_fraction'])} | "
            f"{_pct(reweighted.get('outlier_fraction'))} |")


def _weights_row(temperature: str, section: Mapping[str, Any]) -> Optional[str]:
    if "relative_ess" not in section:
        return None
    k, limit = section.get("pareto_k"), section.get("pareto_k_limit")
    if k is None:
        verdict = "— (too few distinct non-zero weights for a tail fit)"
    elif k <= limit:
        verdict = "reliable"
    else:
        verdict = "**not reliable**: reweighted estimates (and the ESS) may be far off"
    return (f"| {temperature} | {_pct(section['relative_ess'])} | {_num(section.get('ess'), 4)} | {_num(k, 2)} | "
            f"{_num(limit, 2)} | {verdict} |")


def _share(entry: Optional[Mapping[str, Any]]) -> str:
    if not entry:
        return "—"
    return f"{100 * entry['value']:.2f} ± {100 * entry['stderr']:.2f} %"


def _bond_rows(temperature: str, section: Mapping[str, Any]) -> List[str]:
    return [f"| {temperature} | {name} | {_share(e.get('cis_md'))} | {_share(e.get('cis_model'))} | "
            f"{_share(e.get('cis_reweighted'))} |" for name, e in (section.get("peptide_bonds") or {}).items()]


def summary_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The summary section of ``report.md`` (Markdown, without the title).

    Parameters
    ----------
    results : mapping temperature key (``"600 K"``) -> metrics of that temperature
        As computed by :func:`~trade_md.analysis.evaluate.evaluate`.

    Returns
    -------
    str: a ``## Summary`` heading, the verdict table (one row per temperature
    and residue, plus a joint row for peptides), the importance-weight table (ESS and Pareto k-hat), the
    energy table, the peptide-bond (cis) table and the rule.
    """
    lines = ["## Summary", "",
             "| T | residue | JS [nats] | JS floor [nats] | ΔF model [kT] | ΔF MD [kT] | ΔF diff [kT] | σ [kT] | "
             "diff/σ | relative ESS | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    energy, bonds, weights = [], [], []
    for temperature, section in results.items():
        if not isinstance(section, Mapping):
            continue
        lines += _rows(temperature, section)
        row = _energy_row(temperature, section)
        if row is not None:
            energy.append(row)
        bonds += _bond_rows(temperature, section)
        row = _weights_row(temperature, section)
        if row is not None:
            weights.append(row)
    lines.append("")
    if weights:
        lines += ["| T | relative ESS | Kish ESS | Pareto k̂ | k̂ limit | importance weights |",
                  "|---|---|---|---|---|---|"] + weights + [""]
    if energy:
        pct = f"{100 * CENTRAL_MASS:g} %"
        lines += [f"| T | MD central {pct} range [kJ/mol] | energy W1 model [kJ/mol] | energy W1 reweighted "
                  "[kJ/mol] | outliers model | outliers reweighted |", "|---|---|---|---|---|---|"] + energy + [""]
    if bonds:
        lines += ["| T | peptide bond | cis MD | cis model | cis reweighted |", "|---|---|---|---|---|"] + bonds + [""]
    lines += [rule_text(), ""]
    return "\n".join(lines)
