"""Per-residue and joint-basin metrics of a peptide, and the verdict rule.

Functions take the backbone torsions of samples and reference as
``(N, n_residues)`` arrays in radians (from
:func:`~trade_md.analysis.observables.residue_torsions`) and return plain
dicts of numbers (JSON-ready, the layout of ``metrics.json``).

Verdict rule
------------
A comparison (one temperature, one residue) is **within noise** when both hold:

1. ``JS <= JS_floor + JS_TOLERANCE`` (:data:`JS_TOLERANCE` = 0.02 nats), where
   JS is the Ramachandran Jensen-Shannon divergence between the model
   (reweighted when importance weights exist) and MD on fixed 30 x 30 bins on
   ``[-pi, pi)^2``, and ``JS_floor`` the same divergence between the two
   interleaved halves of the MD reference
   (:func:`~trade_md.analysis.metrics.interleaved_halves`);
2. ``|dF_model - dF_MD| <= DF_TOLERANCE + N_SIGMA * sigma``
   (:data:`DF_TOLERANCE` = 0.3 kT, :data:`N_SIGMA` = 2), where
   ``dF = F(alpha_L/C7ax) - F(rest)`` in kT (basin ``0 <= phi < 2.1`` rad) and
   ``sigma = sqrt(sigma_model^2 + sigma_MD^2)`` combines the bootstrap
   standard errors.

Otherwise it is **outside noise by** the excess of each failed criterion:
``JS - (JS_floor + 0.02)`` nats and ``|dF_model - dF_MD| - (0.3 + 2 sigma)`` kT.
Criterion 2 is not judged when the basin (or the rest) is empty in both model
and MD, or when it is empty in one and the other's error is infinite; it fails
when the basin is empty in one of them only.  The joint-basin measure is
judged by criterion 1 alone, with its own floor.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from . import metrics as M
from .observables import BASIN_ALPHA_L_C7AX, BASINS, assign_basins

__all__ = [
    "JS_TOLERANCE",
    "DF_TOLERANCE",
    "N_SIGMA",
    "Verdict",
    "judge",
    "compare_free_energies",
    "basin_free_energy",
    "residue_metrics",
    "per_residue_metrics",
    "joint_basin_metrics",
]

#: Allowed excess of a JS divergence over its noise floor, nats.
JS_TOLERANCE: float = 0.02
#: Allowed free-energy difference between model and MD beyond the errors, kT.
DF_TOLERANCE: float = 0.3
#: Number of combined standard errors allowed on top of :data:`DF_TOLERANCE`.
N_SIGMA: float = 2.0


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`judge`.

    ``js_excess`` (nats) and ``df_excess`` (kT) are how far each measure lies
    beyond its allowance (negative: inside); ``df_excess`` is ``None`` when
    the free energy is not judged and ``inf`` when a basin is empty on one
    side only.  ``text`` is ``"within noise"`` or ``"outside noise by ..."``.
    """

    within_noise: bool
    js_excess: float
    df_excess: Optional[float]
    text: str

    def to_dict(self) -> dict:
        """Plain ``dict`` of the fields (JSON-ready)."""
        return asdict(self)


def judge(js: float, js_floor: float, df_excess: Optional[float] = None) -> Verdict:
    """Apply the verdict rule of the module docstring.

    Parameters
    ----------
    js, js_floor : float
        Divergence and its noise floor, nats.
    df_excess : float, optional
        ``"excess"`` of :func:`compare_free_energies` (kT); ``None``: not judged.

    Returns
    -------
    Verdict
    """
    js_excess = float(js) - (float(js_floor) + JS_TOLERANCE)
    failed = []
    if js_excess > 0:
        failed.append(f"JS {js_excess:.3g} nats")
    if df_excess is not None and df_excess > 0:
        failed.append("ΔF (basin empty on one side only)" if math.isinf(df_excess) else f"ΔF {df_excess:.3g} kT")
    text = "within noise" if not failed else "outside noise by " + ", ".join(failed)
    return Verdict(not failed, js_excess, df_excess, text)


def basin_free_energy(phi: np.ndarray, psi: np.ndarray, weights: Optional[np.ndarray] = None,
                      block_size: int = 1) -> dict:
    """``F(alpha_L/C7ax) - F(rest)`` of one residue, in kT, with its bootstrap error.

    Parameters
    ----------
    phi, psi : np.ndarray, shape (N,), radians
    weights : np.ndarray, shape (N,), optional
        Non-negative sample weights; ``None``: equal.
    block_size : int
        Frames per bootstrap block (1 for independent samples).

    Returns
    -------
    dict ``{"value": kT, "stderr": kT}``; both ``None`` with a ``"note"`` when
    one side holds no weight (reported instead of failing the evaluation).
    """
    codes = (assign_basins(phi, psi) == BASIN_ALPHA_L_C7AX).astype(np.int64)
    try:
        df = M.free_energy_difference(codes, weights, a=1, b=0, block_size=block_size)
    except ValueError as err:  # "basin 1 (alpha_L/C7ax) or 0 (the rest) has no samples with positive weight"
        return {"value": None, "stderr": None, "note": str(err)}
    return {"value": df.value, "stderr": df.stderr}


def compare_free_energies(model: dict, md: dict) -> dict:
    """Difference of two :func:`basin_free_energy` results and its excess over the allowance.

    Returns
    -------
    dict with ``value`` (model - MD, kT, or ``None``), ``stderr`` (combined
    ``sqrt(s_model^2 + s_MD^2)``, kT), ``n_sigma`` (``|value| / stderr``) and
    ``excess`` (kT, see :class:`Verdict`; ``None`` when not judged), plus a
    ``note`` when a side is empty.
    """
    m, r = model.get("value"), md.get("value")
    if m is not None and r is not None:
        diff = float(m) - float(r)
        stderr = math.hypot(float(model["stderr"]), float(md["stderr"]))
        n_sigma = abs(diff) / stderr if stderr > 0 else math.inf
        return {"value": diff, "stderr": stderr, "n_sigma": n_sigma,
                "excess": abs(diff) - (DF_TOLERANCE + N_SIGMA * stderr)}
    if m is None and r is None:
        return {"value": None, "stderr": None, "n_sigma": None, "excess": None, "note": "empty basin in model and MD"}
    empty, other = ("model", md) if m is None else ("MD", model)
    excess = math.inf if math.isfinite(float(other["stderr"])) else None
    return {"value": None, "stderr": None, "n_sigma": None, "excess": excess, "note": f"empty basin in {empty} only"}


def _check_pair(phi: np.ndarray, psi: np.ndarray, name: str) -> tuple:
    phi, psi = np.asarray(phi, dtype=np.float64), np.asarray(psi, dtype=np.float64)
    if phi.ndim != 2 or phi.shape != psi.shape or phi.shape[0] == 0 or phi.shape[1] == 0:
        raise ValueError(f"{name} phi and psi must have the same shape (N, n_residues), got {phi.shape} and {psi.shape}")
    return phi, psi


def residue_metrics(sample_phi: np.ndarray, sample_psi: np.ndarray, ref_phi: np.ndarray, ref_psi: np.ndarray,
                    sample_weights: Optional[np.ndarray] = None, *, n_blocks: int = 20,
                    ref_block_size: int = 1) -> dict:
    """Ramachandran divergences and basin free energy of one residue, with the verdict.

    Parameters
    ----------
    sample_phi, sample_psi : np.ndarray, shape (N_s,), radians
        Model samples.
    ref_phi, ref_psi : np.ndarray, shape (N_r,), radians
        MD frames in trajectory order (for the noise floors and block errors).
    sample_weights : np.ndarray, shape (N_s,), optional
        Importance weights; if given, ``*_reweighted`` entries are added and
        judged instead of the raw model.
    n_blocks : int
        Blocks of the noise floors (:func:`~trade_md.analysis.metrics.interleaved_halves`).
    ref_block_size : int
        Frames per bootstrap block of the MD free energy.

    Returns
    -------
    dict: ``js``, ``kl_md_model`` (nats) with ``_floor``\\ s; with weights
    ``js_reweighted``, ``kl_md_model_reweighted`` and their floors (the
    reference's, the same as the raw ones); ``dF_alphaL_md``,
    ``dF_alphaL_model``, [``dF_alphaL_reweighted``], ``dF_alphaL_vs_md``
    (:func:`compare_free_energies` of the judged model), ``judged``
    (``"reweighted"`` or ``"model"``), ``within_noise`` and ``verdict``.
    """
    raw = M.ramachandran_divergences(sample_phi, sample_psi, ref_phi, ref_psi, n_blocks=n_blocks)
    out = {"js": raw.js, "js_floor": raw.js_floor,
           "kl_md_model": raw.kl_ref_sample, "kl_md_model_floor": raw.kl_ref_sample_floor}
    md = basin_free_energy(ref_phi, ref_psi, block_size=ref_block_size)
    model = basin_free_energy(sample_phi, sample_psi)
    out.update({"dF_alphaL_md": md, "dF_alphaL_model": model})
    js, judged = raw.js, "model"
    if sample_weights is not None:
        js = M.js_divergence(sample_phi, sample_psi, ref_phi, ref_psi, sample_weights)
        kl = M.kl_divergence(ref_phi, ref_psi, sample_phi, sample_psi, None, sample_weights)
        out.update({"js_reweighted": js, "js_reweighted_floor": raw.js_floor,
                    "kl_md_model_reweighted": kl, "kl_md_model_reweighted_floor": raw.kl_ref_sample_floor})
        model = basin_free_energy(sample_phi, sample_psi, sample_weights)
        out["dF_alphaL_reweighted"] = model
        judged = "reweighted"
    comparison = compare_free_energies(model, md)
    verdict = judge(js, raw.js_floor, comparison["excess"])
    out.update({"dF_alphaL_vs_md": comparison, "judged": judged,
                "within_noise": verdict.within_noise, "verdict": verdict.text})
    return out


def per_residue_metrics(names: Sequence[str], sample_phi: np.ndarray, sample_psi: np.ndarray,
                        ref_phi: np.ndarray, ref_psi: np.ndarray, sample_weights: Optional[np.ndarray] = None,
                        *, n_blocks: int = 20, ref_block_size: int = 1) -> dict:
    """:func:`residue_metrics` of every residue.

    Parameters
    ----------
    names : sequence of str, length R
        Residue labels (``"ALA2"``), the keys of the result.
    sample_phi, sample_psi : np.ndarray, shape (N_s, R), radians
    ref_phi, ref_psi : np.ndarray, shape (N_r, R), radians
    sample_weights, n_blocks, ref_block_size
        As in :func:`residue_metrics`.

    Returns
    -------
    dict residue name -> dict of :func:`residue_metrics`, in residue order.
    """
    sample_phi, sample_psi = _check_pair(sample_phi, sample_psi, "sample")
    ref_phi, ref_psi = _check_pair(ref_phi, ref_psi, "reference")
    names = list(names)
    if not (len(names) == sample_phi.shape[1] == ref_phi.shape[1]) or len(set(names)) != len(names):
        raise ValueError(f"need {sample_phi.shape[1]} unique residue names for {sample_phi.shape[1]} sample and "
                         f"{ref_phi.shape[1]} reference columns, got {names}")
    return {name: residue_metrics(sample_phi[:, i], sample_psi[:, i], ref_phi[:, i], ref_psi[:, i], sample_weights,
                                  n_blocks=n_blocks, ref_block_size=ref_block_size)
            for i, name in enumerate(names)}


def joint_basin_metrics(sample_phi: np.ndarray, sample_psi: np.ndarray, ref_phi: np.ndarray, ref_psi: np.ndarray,
                        sample_weights: Optional[np.ndarray] = None, *, n_blocks: int = 20) -> dict:
    """JS of the populations of the joint basin states of all residues, with its noise floor.

    Every frame gets one of ``3 ** n_residues`` labels
    (:func:`~trade_md.analysis.metrics.joint_basin_labels` of
    :func:`~trade_md.analysis.observables.assign_basins` per residue).

    Parameters
    ----------
    sample_phi, sample_psi : np.ndarray, shape (N_s, R), radians
    ref_phi, ref_psi : np.ndarray, shape (N_r, R), radians, trajectory order
    sample_weights : np.ndarray, shape (N_s,), optional
        Importance weights; if given, ``js_reweighted`` is added and judged.
    n_blocks : int
        Blocks of the noise floor.

    Returns
    -------
    dict: ``n_residues``, ``n_states`` (3^R), ``n_states_occupied``, ``js``,
    ``js_floor`` (nats), [``js_reweighted``, ``js_reweighted_floor``],
    ``within_noise`` and ``verdict`` (criterion 1 of the rule).
    """
    sample_phi, sample_psi = _check_pair(sample_phi, sample_psi, "sample")
    ref_phi, ref_psi = _check_pair(ref_phi, ref_psi, "reference")
    if sample_phi.shape[1] != ref_phi.shape[1]:
        raise ValueError(f"samples have {sample_phi.shape[1]} residues but the reference has {ref_phi.shape[1]}")
    n_res = sample_phi.shape[1]
    s_labels = M.joint_basin_labels(assign_basins(sample_phi, sample_psi), len(BASINS))
    r_labels = M.joint_basin_labels(assign_basins(ref_phi, ref_psi), len(BASINS))
    raw = M.basin_divergence(s_labels, r_labels, n_blocks=n_blocks)
    out = {"n_residues": n_res, "n_states": len(BASINS) ** n_res, "n_states_occupied": raw.n_states_occupied,
           "js": raw.js, "js_floor": raw.js_floor}
    js = raw.js
    if sample_weights is not None:
        js = M.basin_divergence(s_labels, r_labels, sample_weights, n_blocks=n_blocks).js
        out.update({"js_reweighted": js, "js_reweighted_floor": raw.js_floor})
    verdict = judge(js, raw.js_floor)
    out.update({"within_noise": verdict.within_noise, "verdict": verdict.text})
    return out
