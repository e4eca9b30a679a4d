"""Per-residue evaluation of a peptide (Ace-Ala3-Nme), the verdict rule, and report folders."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trade_md.analysis import metrics
from trade_md.analysis.evaluate import evaluate
from trade_md.analysis.observables import BASIN_ALPHA_L_C7AX, assign_basins, residue_torsions
from trade_md.analysis.residues import (
    DF_TOLERANCE,
    JS_TOLERANCE,
    N_SIGMA,
    compare_free_energies,
    joint_basin_metrics,
    judge,
    per_residue_metrics,
)
from trade_md.data import ReferenceData
from trade_md.generator import Samples

TEMPERATURE = 600.0


@pytest.fixture(scope="module")
def peptide():
    from trade_md.system import MolecularSystem

    return MolecularSystem.from_sequence("AAA")


@pytest.fixture(scope="module")
def md(peptide):
    """400 frames of 600 K Langevin MD of Ace-Ala3-Nme (Reference platform, about 2 s) as ReferenceData."""
    import openmm

    from trade_md.energy import OpenMMEnergy

    integ = openmm.LangevinMiddleIntegrator(TEMPERATURE, 5.0, 0.002)
    integ.setRandomNumberSeed(11)
    ctx = openmm.Context(peptide.openmm_system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(peptide.reference_xyz)
    ctx.setVelocitiesToTemperature(TEMPERATURE, 11)
    integ.step(200)
    frames = []
    for _ in range(400):
        integ.step(10)
        frames.append(ctx.getState(getPositions=True).getPositions(asNumpy=True)._value)
    xyz = np.asarray(frames, dtype=np.float32)
    energies = OpenMMEnergy(peptide).energy(xyz.astype(np.float64))
    return ReferenceData(xyz, energies, TEMPERATURE, np.arange(len(xyz)) * 0.02, peptide.topology)


@pytest.fixture(scope="module")
def report(md, tmp_path_factory):
    """evaluate(MD as samples, MD) into a folder that held an earlier report; (Evaluation, folder)."""
    out = tmp_path_factory.mktemp("eval") / "report"
    out.mkdir()
    (out / "report.md").write_text("# old report\n")
    (out / "metrics.json").write_text("{}")
    (out / "ramachandran_999K.png").write_bytes(b"\x89PNG old")
    return evaluate(_as_samples(md), md, out), out


def _as_samples(ref: ReferenceData, log_weights=None) -> Samples:
    n = len(ref)
    lw = np.zeros(n) if log_weights is None else log_weights
    return Samples(ref.xyz, np.zeros(n), np.full(n, ref.temperature), ref.topology, energies=ref.energies,
                   log_weights=lw)


# ----------------------------------------------------------------------------- residues of a peptide
def test_residue_torsions_name_every_residue_with_phi_and_psi(md):
    torsions = residue_torsions(md.xyz, md.topology)
    assert torsions.names == ("ALA2", "ALA3", "ALA4")  # ACE1 and NME5 lack phi or psi
    assert len(torsions) == 3 and torsions.phi.shape == torsions.psi.shape == (len(md), 3)
    assert np.all(np.abs(torsions.phi) <= np.pi)


def test_reference_against_itself_is_within_noise_everywhere(report):
    result, out = report
    section = result.metrics["600 K"]
    assert list(section["residues"]) == ["ALA2", "ALA3", "ALA4"]
    for name, res in section["residues"].items():
        assert res["js_reweighted"] == pytest.approx(0.0, abs=1e-12), name
        assert res["verdict"] == "within noise" and res["within_noise"], name
        if res["dF_alphaL_vs_md"]["value"] is not None:  # basin visited in 8 ps of MD
            assert res["dF_alphaL_vs_md"]["value"] == pytest.approx(0.0, abs=1e-12)
    joint = section["joint_basins"]
    assert joint["n_residues"] == 3 and joint["n_states"] == 27
    assert joint["js_reweighted"] == pytest.approx(0.0, abs=1e-12) and joint["verdict"] == "within noise"
    assert section["within_noise"] is True
    # one-residue keys are not made up for a peptide; pooled divergences and energies are there
    assert "dF_alphaL_md" not in section and {"js", "js_floor", "energy_central99_model"} <= set(section)

    for name in ("ALA2", "ALA3", "ALA4"):
        for kind in ("ramachandran", "phi"):
            assert (out / f"{kind}_{name}_600K.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "ramachandran_600K.png").exists()
    text = (out / "report.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# trade_md evaluation" and lines[2] == "## Summary"
    assert lines[4].startswith("| T | residue | JS [nats] | JS floor [nats] | ΔF model [kT] | ΔF MD [kT]")
    rows = [line for line in lines[6:10]]
    assert [r.split(" | ")[1] for r in rows] == ["ALA2", "ALA3", "ALA4", "joint (27 states)"]
    assert all(r.rstrip(" |").endswith("within noise") for r in rows)
    assert f"JS <= JS floor + {JS_TOLERANCE:g} nats" in text and f"{DF_TOLERANCE:g} kT + {N_SIGMA:g}σ" in text
    assert "![Ramachandran ALA3 600 K](ramachandran_ALA3_600K.png)" in text
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["600 K"]["residues"]["ALA3"]["verdict"] == "within noise"
    # peptide bonds: all trans in 8 ps of MD from the built structure; model = MD, so the shares agree
    bonds = section["peptide_bonds"]
    assert list(bonds) == ["ACE1-ALA2", "ALA2-ALA3", "ALA3-ALA4", "ALA4-NME5"]
    for entry in bonds.values():
        assert entry["cis_md"]["value"] == entry["cis_model"]["value"] == entry["cis_reweighted"]["value"] == 0.0
    assert "| 600 K | ALA2-ALA3 | 0.00 ± 0.00 % | 0.00 ± 0.00 % | 0.00 ± 0.00 % |" in lines
    assert "(|ω| < 90°)" in text


def _dihedral(p0, p1, p2, p3):
    """IUPAC dihedral of four (N, 3) point arrays, radians (independent of mdtraj)."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - (b0 * b1).sum(1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(1, keepdims=True) * b1
    return np.arctan2((np.cross(b1, v) * w).sum(1), (v * w).sum(1))


def test_peptide_bonds_match_a_direct_dihedral_and_find_cis_frames(md):
    from trade_md.analysis.observables import CIS_LIMIT, peptide_bonds

    top = md.topology
    atom = {(a.residue.name, a.name): a.index for a in top.atoms if a.residue.name in ("ACE", "NME")}
    ala = [{a.name: a.index for a in r.atoms} for r in top.residues if r.name == "ALA"]
    xyz = md.xyz.astype(np.float64).copy()
    # make frame 0 cis at the ACE1-ALA2 bond: rotate the ACE atoms by pi about the C-N axis
    c, n = xyz[0, atom["ACE", "C"]], xyz[0, ala[0]["N"]]
    k = (n - c) / np.linalg.norm(n - c)
    ace = [a.index for a in top.residue(0).atoms if a.name != "C"]
    rel = xyz[0, ace] - c
    xyz[0, ace] = c + 2 * (rel @ k)[:, None] * k - rel  # rotation by pi: v -> 2 (v.k) k - v
    bonds = peptide_bonds(xyz, top)
    quads = [(atom["ACE", "CH3"], atom["ACE", "C"], ala[0]["N"], ala[0]["CA"]),
             (ala[0]["CA"], ala[0]["C"], ala[1]["N"], ala[1]["CA"]),
             (ala[1]["CA"], ala[1]["C"], ala[2]["N"], ala[2]["CA"]),
             (ala[2]["CA"], ala[2]["C"], atom["NME", "N"], atom["NME", "C"])]
    expected = np.stack([_dihedral(*(xyz[:, i] for i in q)) for q in quads], axis=1)
    diff = np.angle(np.exp(1j * (bonds.omega - expected)))
    assert np.abs(diff).max() < 1e-5
    cis = bonds.cis()
    assert cis[0, 0] and not cis[1:, 0].any() and not cis[:, 1:].any()
    assert np.array_equal(cis, np.abs(expected) < CIS_LIMIT)


def test_block_mean_is_the_weighted_mean_with_a_block_error():
    rng = np.random.default_rng(3)
    x = rng.normal(size=20000)
    w = rng.uniform(0.5, 1.5, size=20000)
    plain, weighted = metrics.block_mean(x), metrics.block_mean(x, w, n_blocks=20)
    assert plain["value"] == pytest.approx(x.mean(), abs=1e-12)
    assert weighted["value"] == pytest.approx(np.average(x, weights=w), abs=1e-12)
    # iid data: the block error estimates std/sqrt(N) (19 degrees of freedom: within 40 %)
    assert plain["stderr"] == pytest.approx(1 / np.sqrt(20000), rel=0.4)
    for bad in (np.full(20000, -1.0), np.zeros(20000), np.ones(3)):
        with pytest.raises(ValueError, match="weights"):
            metrics.block_mean(x, bad)


def test_shifted_phi_of_one_residue_is_flagged_for_that_residue_only(md):
    t = residue_torsions(md.xyz, md.topology)
    phi = t.phi.copy()
    phi[:, 1] = metrics.wrap_angles(phi[:, 1] + np.pi)  # ALA3 moved into the other half of the map
    weights = np.full(len(md), 1.0 / len(md))
    result = per_residue_metrics(t.names, phi, t.psi, t.phi, t.psi, weights, n_blocks=20, ref_block_size=4)
    assert result["ALA2"]["verdict"] == "within noise"
    assert result["ALA4"]["verdict"] == "within noise"
    assert result["ALA3"]["verdict"].startswith("outside noise by JS")
    assert not result["ALA3"]["within_noise"] and result["ALA3"]["js_reweighted"] > 0.3
    joint = joint_basin_metrics(phi, t.psi, t.phi, t.psi, weights, n_blocks=20)
    assert joint["verdict"].startswith("outside noise by JS")


def test_basin_population_error_alone_is_flagged_by_free_energy(rng):
    """Doubling the weight of ALA2's alpha_L/C7ax frames moves its dF by -ln 2 = -0.69 kT (beyond
    0.3 kT + 2 sigma with 20 000 frames) while its Ramachandran JS stays within the floor + 0.02."""
    n = 20_000
    in_alpha_l = rng.random((n, 2)) < 0.2
    phi = metrics.wrap_angles(np.where(in_alpha_l, rng.normal(1.0, 0.3, (n, 2)), rng.normal(-1.8, 0.4, (n, 2))))
    psi = metrics.wrap_angles(rng.normal(1.5, 0.5, (n, 2)))
    weights = np.where(assign_basins(phi[:, 0], psi[:, 0]) == BASIN_ALPHA_L_C7AX, 2.0, 1.0)
    result = per_residue_metrics(["ALA2", "ALA3"], phi, psi, phi, psi, weights)
    moved = result["ALA2"]
    assert moved["dF_alphaL_reweighted"]["value"] - moved["dF_alphaL_md"]["value"] == pytest.approx(-math.log(2))
    assert moved["js_reweighted"] <= moved["js_floor"] + JS_TOLERANCE
    assert moved["verdict"].startswith("outside noise by ΔF") and "JS" not in moved["verdict"]
    assert moved["dF_alphaL_vs_md"]["n_sigma"] > 10
    assert result["ALA3"]["verdict"] == "within noise"


def test_per_residue_metrics_check_names_and_shapes(md):
    t = residue_torsions(md.xyz, md.topology)
    with pytest.raises(ValueError, match="3 unique residue names"):
        per_residue_metrics(["A", "A", "B"], t.phi, t.psi, t.phi, t.psi)
    with pytest.raises(ValueError, match="same shape"):
        per_residue_metrics(t.names, t.phi[:, :2], t.psi, t.phi, t.psi)


# ----------------------------------------------------------------------------- the verdict rule
def test_free_energy_comparison_and_verdict_follow_the_stated_rule():
    close = compare_free_energies({"value": 1.0, "stderr": 0.1}, {"value": 0.8, "stderr": 0.1})
    assert close["value"] == pytest.approx(0.2)
    assert close["stderr"] == pytest.approx(math.sqrt(0.02))
    assert close["n_sigma"] == pytest.approx(0.2 / math.sqrt(0.02))
    assert close["excess"] == pytest.approx(0.2 - (0.3 + 2 * math.sqrt(0.02)))
    assert judge(0.03, 0.01, close["excess"]).text == "within noise"  # 0.03 <= 0.01 + 0.02

    far = compare_free_energies({"value": 2.0, "stderr": 0.1}, {"value": 0.5, "stderr": 0.1})
    verdict = judge(0.05, 0.01, far["excess"])
    assert not verdict.within_noise
    assert verdict.js_excess == pytest.approx(0.02)
    assert verdict.text == f"outside noise by JS 0.02 nats, ΔF {1.5 - 0.3 - 2 * math.sqrt(0.02):.3g} kT"

    one_empty = compare_free_energies({"value": None, "stderr": None}, {"value": 3.0, "stderr": 0.5})
    assert one_empty["excess"] == math.inf and "model only" in one_empty["note"]
    assert judge(0.0, 0.0, one_empty["excess"]).text == "outside noise by ΔF (basin empty on one side only)"
    both_empty = compare_free_energies({"value": None, "stderr": None}, {"value": None, "stderr": None})
    assert both_empty["excess"] is None and judge(0.0, 0.0, both_empty["excess"]).within_noise
    unsure = compare_free_energies({"value": None, "stderr": None}, {"value": 3.0, "stderr": math.inf})
    assert unsure["excess"] is None  # the MD error is unbounded: not judged


# ----------------------------------------------------------------------------- report folders
def test_evaluate_replaces_an_earlier_report_whole(report):
    result, out = report
    assert result.files.report_md == out / "report.md"
    assert not (out / "ramachandran_999K.png").exists()
    assert (out / "report.md").read_text().startswith("# trade_md evaluation\n\n## Summary")
    assert set(json.loads((out / "metrics.json").read_text())) == {"600 K"}
    assert [p.name for p in out.parent.iterdir()] == ["report"]  # no temporary folder left beside it


def test_evaluate_refuses_a_folder_with_other_files(md, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "report.md").write_text("# old report\n")
    with pytest.raises(FileExistsError, match="notes.txt"):
        evaluate(_as_samples(md), md, out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.md").read_text() == "# old report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_evaluate_checks_inputs_before_creating_the_folder(md, tmp_path):
    cold = Samples(md.xyz[:10], np.zeros(10), np.full(10, 300.0), md.topology)
    with pytest.raises(ValueError, match="no reference at 300 K"):
        evaluate(cold, md, tmp_path / "new" / "report")
    with pytest.raises(ValueError, match="two sample sets at 600 K"):
        evaluate([_as_samples(md), _as_samples(md)], md, tmp_path / "new" / "report")
    assert not (tmp_path / "new").exists()
