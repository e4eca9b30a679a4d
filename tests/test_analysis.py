"""Tests of trade_md.analysis: observables, metrics, plots and reports.

Statistical tests are seeded and bounded by stated tolerances or standard errors.
"""
from __future__ import annotations

import functools
import json
import math

import matplotlib.image
import mdtraj
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from trade_md.analysis import metrics, observables, plots, report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _gaussian_torsions(rng, mean, std, n):
    """(phi, psi) of an axis-aligned 2-D Gaussian, wrapped onto [-pi, pi)."""
    xy = metrics.wrap_angles(rng.normal(mean, std, size=(n, 2)))
    return xy[:, 0], xy[:, 1]


def _gaussian_kl(mean_p, std_p, mean_q, std_q):
    """Analytic KL(P || Q) in nats of axis-aligned Gaussians."""
    mean_p, std_p, mean_q, std_q = map(np.asarray, (mean_p, std_p, mean_q, std_q))
    return float(np.sum(np.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2) - 0.5))


def _dihedral(p0, p1, p2, p3):
    """Dihedral (radians, IUPAC sign) by the Blondel-Karplus formula, written out by hand."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    y = np.linalg.norm(b2) * np.dot(b1, np.cross(b2, b3))
    x = np.dot(np.cross(b1, b2), np.cross(b2, b3))
    return math.atan2(y, x)


@pytest.fixture(scope="module")
def alanine():
    from trade_md.system import MolecularSystem

    return MolecularSystem.alanine_dipeptide(minimize=False)


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image.std() > 0.01  # not a blank canvas
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- histograms
def test_histogram_uses_fixed_bins_and_wraps_pi():
    hist = metrics.histogram2d_torsions([-np.pi, np.pi, 0.0, np.pi - 1e-9], [-np.pi, -np.pi, 0.0, 3.0], bins=4)
    assert hist.shape == (4, 4)
    assert hist[0, 0] == pytest.approx(0.5)  # +pi is -pi
    assert hist[2, 2] == pytest.approx(0.25)  # 0 starts the third of four bins
    assert hist[3, 3] == pytest.approx(0.25)
    # the cells do not move with the data: a narrow sample stays in one cell
    narrow = metrics.histogram2d_torsions(np.full(10, 0.01), np.linspace(0.0, 0.1, 10), bins=30)
    assert narrow[15, 15] == pytest.approx(1.0)
    np.testing.assert_allclose(metrics.torsion_bin_edges(30)[[0, -1]], [-np.pi, np.pi])


def test_weighted_histogram_matches_resampled_points():
    rng = np.random.default_rng(0)
    phi, psi = _gaussian_torsions(rng, [0.0, 0.0], [1.2, 1.2], 200_000)
    weights = np.exp(0.8 * phi - 0.3 * psi**2)
    weighted = metrics.histogram2d_torsions(phi, psi, weights)
    picked = rng.choice(phi.size, size=200_000, p=weights / weights.sum())
    resampled = metrics.histogram2d_torsions(phi[picked], psi[picked])
    unweighted = metrics.histogram2d_torsions(phi, psi)
    assert 0.5 * np.abs(weighted - resampled).sum() < 0.03  # total variation
    assert 0.5 * np.abs(weighted - unweighted).sum() > 0.2  # the weights matter


# ----------------------------------------------------------------------------- divergences
def test_identical_samples_give_zero_kl_and_js():
    rng = np.random.default_rng(1)
    phi, psi = _gaussian_torsions(rng, [-1.0, 2.0], [0.7, 0.5], 5000)
    assert metrics.kl_divergence(phi, psi, phi, psi) == 0.0
    assert metrics.js_divergence(phi, psi, phi, psi) == 0.0
    hist = metrics.histogram2d_torsions(phi, psi)
    assert metrics.kl_divergence_histograms(hist, hist, pseudo_count=0.0) == 0.0


def test_kl_of_two_gaussians_matches_analytic_value():
    """Tolerance 0.04 nats: 30 bins of 0.21 rad against widths >= 0.45 rad and the
    1e-6 pseudo-count lower the binned KL by about 0.02 nats; with 2e5 points the
    sampling error is about 0.01 nats."""
    rng = np.random.default_rng(2)
    mean_p, std_p = [-1.0, 0.5], [0.5, 0.6]
    mean_q, std_q = [-0.6, 0.2], [0.6, 0.45]
    p_phi, p_psi = _gaussian_torsions(rng, mean_p, std_p, 200_000)
    q_phi, q_psi = _gaussian_torsions(rng, mean_q, std_q, 200_000)
    forward = metrics.kl_divergence(p_phi, p_psi, q_phi, q_psi)
    backward = metrics.kl_divergence(q_phi, q_psi, p_phi, p_psi)
    assert forward == pytest.approx(_gaussian_kl(mean_p, std_p, mean_q, std_q), abs=0.04)
    assert backward == pytest.approx(_gaussian_kl(mean_q, std_q, mean_p, std_p), abs=0.04)


def test_kl_pseudo_count_keeps_empty_bins_finite():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([1.0, 0.0, 0.0])
    assert metrics.kl_divergence_histograms(p, q, pseudo_count=0.0) == math.inf
    value = metrics.kl_divergence_histograms(p, q)
    assert math.isfinite(value) and value > 5.0  # about 0.5 * log(0.5 / 1e-6)


def test_js_is_symmetric_and_bounded_by_log2():
    rng = np.random.default_rng(3)
    a = _gaussian_torsions(rng, [-1.5, 2.5], [0.4, 0.4], 20_000)
    b = _gaussian_torsions(rng, [-1.0, -0.5], [0.6, 0.5], 10_000)
    js_ab, js_ba = metrics.js_divergence(*a, *b), metrics.js_divergence(*b, *a)
    assert js_ab == pytest.approx(js_ba, rel=1e-12)
    assert 0.0 < js_ab < math.log(2.0)
    disjoint = metrics.js_divergence([-2.0, -2.1], [1.0, 1.1], [1.0, 1.1], [-2.0, -2.1])
    assert disjoint == pytest.approx(math.log(2.0), rel=1e-12)


def test_noise_floor_of_iid_data_is_small_and_decreases_with_n():
    """For i.i.d. halves the KL floor is the finite-sample bias, about
    (occupied cells - 1) / (N / 2): about 0.006 nats for N = 2e5 and ~590 cells."""
    rng = np.random.default_rng(4)
    kl_floors, js_floors = [], []
    for n in (2_000, 20_000, 200_000):
        phi, psi = _gaussian_torsions(rng, [-1.2, 1.0], [0.6, 0.8], n)
        kl_floors.append(metrics.noise_floor(phi, psi, metrics.kl_divergence))
        js_floors.append(metrics.noise_floor(phi, psi, metrics.js_divergence))
    assert kl_floors[0] > kl_floors[1] > kl_floors[2]
    assert js_floors[0] > js_floors[1] > js_floors[2]
    assert kl_floors[2] < 0.01
    assert js_floors[2] < 0.003


def test_noise_floor_splits_in_interleaved_blocks():
    """Even-numbered blocks form one half, odd-numbered ones the other: with 4
    blocks of 1000 frames alternating between two basins the halves are disjoint
    (JS = log 2); with 2 blocks each half holds both basins equally."""
    rng = np.random.default_rng(5)
    phi = np.repeat([-1.5, 1.0, -1.5, 1.0], 1000)
    psi = rng.uniform(-0.5, 0.5, phi.size)
    four = metrics.noise_floor(phi, psi, metrics.js_divergence, n_blocks=4)
    two = metrics.noise_floor(phi, psi, metrics.js_divergence, n_blocks=2)
    assert four == pytest.approx(math.log(2.0))
    assert two < 0.01


def test_interleaved_halves_are_even_and_odd_blocks():
    half_a, half_b = metrics.interleaved_halves(10, 4)  # blocks [0 1 2] [3 4 5] [6 7] [8 9]
    np.testing.assert_array_equal(half_a, [0, 1, 2, 6, 7])
    np.testing.assert_array_equal(half_b, [3, 4, 5, 8, 9])
    with pytest.raises(ValueError, match="n_blocks must be >= 2"):
        metrics.interleaved_halves(10, 1)
    with pytest.raises(ValueError, match="exceeds the number of frames"):
        metrics.interleaved_halves(3, 4)


def test_joint_basin_labels_are_base_3_numbers():
    codes = np.array([[0, 1], [2, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(metrics.joint_basin_labels(codes), [3, 2, 4, 8])
    np.testing.assert_array_equal(metrics.joint_basin_labels(codes[:, :1]), [0, 2, 1, 2])
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 3\)"):
        metrics.joint_basin_labels(np.array([[0, 3]]))
    with pytest.raises(ValueError, match="shape"):
        metrics.joint_basin_labels(np.array([0, 1]))


def test_basin_divergence_matches_hand_computation():
    def js(p, q):
        p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
        m = (p + q) / 2
        return sum(0.5 * a * math.log(a / c) for a, c in zip(p, m) if a > 0) + sum(
            0.5 * b * math.log(b / c) for b, c in zip(q, m) if b > 0)

    sample = [0, 0, 4, 26]  # states 0, 4, 26 of 27; populations 1/2, 1/4, 1/4
    ref = [0, 4, 4, 4, 0, 0]  # in order; 2 blocks: [0 4 4] and [4 0 0]
    result = metrics.basin_divergence(sample, ref, n_blocks=2)
    # states in order 0, 4, 26
    assert result.js == pytest.approx(js([2, 1, 1], [3, 3, 0]), rel=1e-12)
    assert result.js_floor == pytest.approx(js([1, 2], [2, 1]), rel=1e-12)
    assert result.n_states_occupied == 3 and result.n_blocks == 2
    weighted = metrics.basin_divergence(sample, ref, [1.0, 1.0, 2.0, 0.0], n_blocks=2)
    assert weighted.js == pytest.approx(js([2, 2], [3, 3]), abs=1e-12)  # equal populations: 0
    assert weighted.js_floor == result.js_floor
    assert metrics.basin_divergence([1, 1], [7, 7], n_blocks=2).js == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="sample_labels must be integers"):
        metrics.basin_divergence([0.5], [0, 1])


def test_ramachandran_divergences_report_both_directions_and_floors():
    rng = np.random.default_rng(6)
    sample = _gaussian_torsions(rng, [-1.0, 0.5], [0.5, 0.6], 20_000)
    ref = _gaussian_torsions(rng, [-0.6, 0.2], [0.6, 0.45], 20_000)
    result = metrics.ramachandran_divergences(*sample, *ref, bins=20, n_blocks=10)
    assert result.kl_sample_ref == pytest.approx(metrics.kl_divergence(*sample, *ref, bins=20))
    assert result.kl_ref_sample == pytest.approx(metrics.kl_divergence(*ref, *sample, bins=20))
    assert result.js == pytest.approx(metrics.js_divergence(*sample, *ref, bins=20))
    kl20 = functools.partial(metrics.kl_divergence, bins=20)
    assert result.kl_sample_ref_floor == pytest.approx(metrics.noise_floor(*ref, kl20, n_blocks=10))
    assert result.js_floor < result.js
    as_dict = result.to_dict()
    assert as_dict["bins"] == 20 and set(as_dict) >= {"kl_sample_ref", "kl_sample_ref_floor", "js_floor"}


# ----------------------------------------------------------------------------- ESS
def test_kish_ess_of_equal_weights_is_n():
    assert metrics.kish_ess(np.zeros(1000)) == pytest.approx(1000.0, rel=1e-12)
    assert metrics.kish_ess(np.full(1000, 1234.5)) == pytest.approx(1000.0, rel=1e-12)  # stable in log space
    assert metrics.relative_ess(np.full(50, -7.0)) == pytest.approx(1.0, rel=1e-12)


def test_kish_ess_of_one_dominant_weight_is_about_one():
    log_weights = np.full(10_000, -40.0)
    log_weights[17] = 0.0
    assert metrics.kish_ess(log_weights) == pytest.approx(1.0, abs=1e-6)
    log_weights[100:5000] = -np.inf  # zero weights are allowed
    assert metrics.kish_ess(log_weights) == pytest.approx(1.0, abs=1e-6)
    two_groups = np.log(np.r_[np.ones(10), 3 * np.ones(10)])
    assert metrics.kish_ess(two_groups) == pytest.approx(40.0**2 / 100.0)


def test_self_normalized_weights_sum_to_one():
    w = metrics.self_normalized_weights(np.array([1000.0, 1000.0 + math.log(3.0), -np.inf]))
    np.testing.assert_allclose(w, [0.25, 0.75, 0.0])


# ----------------------------------------------------------------------------- energies
def test_wasserstein_matches_shift_and_scipy():
    rng = np.random.default_rng(7)
    a = rng.normal(-50.0, 10.0, 3000)
    assert metrics.wasserstein_1d(a, a + 2.5) == pytest.approx(2.5, rel=1e-9)
    b = rng.gamma(3.0, 5.0, 2000)
    wa, wb = rng.uniform(0.1, 1.0, a.size), rng.uniform(0.1, 1.0, b.size)
    assert metrics.wasserstein_1d(a, b, wa, wb) == pytest.approx(wasserstein_distance(a, b, wa, wb), rel=1e-9)
    assert metrics.wasserstein_1d(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-9)


def test_histogram_overlap():
    rng = np.random.default_rng(8)
    a = rng.normal(0.0, 1.0, 50_000)
    assert metrics.histogram_overlap(a, a) == pytest.approx(1.0)
    assert metrics.histogram_overlap(a + 100.0, a) == pytest.approx(0.0)
    # overlap of N(0,1) and N(1,1) is 2 * Phi(-1/2) = 0.617
    b = rng.normal(1.0, 1.0, 50_000)
    assert metrics.histogram_overlap(b, a, bins=60) == pytest.approx(0.617, abs=0.02)
    # samples beyond the range land in the overflow cell and lower the overlap
    clashing = np.concatenate([a[:25_000], np.full(25_000, 1e6)])
    assert metrics.histogram_overlap(clashing, a) == pytest.approx(0.5, abs=0.01)


# ----------------------------------------------------------------------------- free energies
def test_central_energy_distance_ignores_clashes_but_counts_them():
    rng = np.random.default_rng(13)
    reference = rng.normal(-50.0, 10.0, 20_000)
    bulk = rng.normal(-48.0, 10.0, 9_900)
    sample = np.concatenate([bulk, np.full(90, 1e8), np.full(10, np.inf)])
    result = metrics.central_energy_distance(sample, reference)
    low, high = np.percentile(reference, [0.5, 99.5])
    assert (result.low, result.high) == (pytest.approx(low), pytest.approx(high))
    inside = (bulk >= low) & (bulk <= high)
    assert result.outlier_fraction == pytest.approx((100 + np.sum(~inside)) / sample.size)
    core = reference[(reference >= low) & (reference <= high)]
    assert result.w1 == pytest.approx(wasserstein_distance(bulk[inside], core), rel=1e-9)
    assert 1.0 < result.w1 < 3.0  # the 2 kJ/mol shift, not the 1e8 clashes
    assert metrics.wasserstein_1d(sample[:-10], reference) > 1e5
    # weights: clashes with zero weight are no outliers
    weights = np.concatenate([np.ones(9_900), np.zeros(100)])
    weighted = metrics.central_energy_distance(sample, reference, weights)
    assert weighted.outlier_fraction == pytest.approx(np.mean(~inside))
    all_out = metrics.central_energy_distance(np.full(5, 1e8), reference)
    assert all_out.outlier_fraction == 1.0 and math.isnan(all_out.w1)


def test_basin_free_energy_of_synthetic_mixture():
    rng = np.random.default_rng(9)
    probs = np.array([0.6, 0.3, 0.1])
    codes = rng.choice(3, size=20_000, p=probs)
    result = metrics.free_energy_difference(codes, a=2, b=0, n_bootstrap=400, seed=1)
    exact = -math.log(probs[2] / probs[0])
    assert 0.0 < result.stderr < 0.1
    assert abs(result.value - exact) < 4 * result.stderr
    assert result.prob_a == pytest.approx(np.mean(codes == 2))
    # weighted: uniform proposal over the basins, importance weights p_k / (1/3)
    uniform = rng.integers(0, 3, size=20_000)
    weighted = metrics.free_energy_difference(uniform, probs[uniform] * 3, a=2, b=0, n_bootstrap=400, seed=1)
    assert abs(weighted.value - exact) < 4 * weighted.stderr
    # reproducible with the seed
    assert metrics.free_energy_difference(codes, a=2, b=0, n_bootstrap=400, seed=1) == result


def test_block_bootstrap_widens_errors_of_correlated_samples():
    rng = np.random.default_rng(10)
    codes = np.repeat(rng.choice(2, size=200, p=[0.7, 0.3]), 100)  # runs of 100 identical frames
    naive = metrics.free_energy_difference(codes, a=1, b=0, n_bootstrap=300, block_size=1)
    blocked = metrics.free_energy_difference(codes, a=1, b=0, n_bootstrap=300, block_size=100)
    assert blocked.value == naive.value
    assert blocked.stderr > 5 * naive.stderr


def test_nll_mean_and_block_stderr():
    rng = np.random.default_rng(11)
    log_prob = rng.normal(-20.0, 2.0, 10_000)
    result = metrics.nll(log_prob)
    assert result.mean == pytest.approx(20.0, abs=4 * 2.0 / 100)
    assert result.stderr == pytest.approx(2.0 / 100, rel=0.05)
    assert metrics.nll(log_prob, block_size=100).n == 10_000


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.histogram2d_torsions([0.1, 0.2], [0.1]), "phi has 2 values but psi has 1"),
        (lambda: metrics.histogram2d_torsions([0.1, 0.2], [0.1, 0.2], [1.0]), "weights has shape"),
        (lambda: metrics.histogram2d_torsions([0.1, 0.2], [0.1, 0.2], [1.0, -1.0]), "negative"),
        (lambda: metrics.histogram2d_torsions([0.1, 0.2], [0.1, 0.2], [1.0, np.nan]), "NaN"),
        (lambda: metrics.histogram2d_torsions([0.1, 0.2], [0.1, 0.2], [0.0, 0.0]), "sum to zero"),
        (lambda: metrics.histogram2d_torsions([], []), "empty"),
        (lambda: metrics.histogram2d_torsions([0.1, np.nan], [0.1, 0.2]), "phi contains NaN"),
        (lambda: metrics.histogram2d_torsions([0.1], [0.2], bins=0), "bins must be a positive integer"),
        (lambda: metrics.histogram2d_torsions([90.0], [0.2]), "radians"),
        (lambda: metrics.kl_divergence([0.1], [0.1], [0.2], [0.2], bins=-3), "bins"),
        (lambda: metrics.kl_divergence_histograms([1.0, 0.0], [0.5, 0.5], pseudo_count=-1.0), "pseudo_count"),
        (lambda: metrics.kish_ess([]), "empty"),
        (lambda: metrics.kish_ess([0.0, np.nan]), "NaN"),
        (lambda: metrics.kish_ess([-np.inf, -np.inf]), "all -inf"),
        (lambda: metrics.wasserstein_1d([1.0, 2.0], [1.0], [1.0], None), "weights_a has shape"),
        (lambda: metrics.noise_floor([0.1, 0.2], [0.1, 0.2], metrics.js_divergence, n_blocks=3), "n_blocks"),
        (lambda: metrics.free_energy_difference(np.array([0, 1, 1]), a=2, b=0), "basin 2 has no samples"),
        (lambda: metrics.free_energy_difference(np.array([0.0, 1.0]), a=1, b=0), "integers"),
        (lambda: metrics.free_energy_difference(np.array([0, 1]), [1.0, -1.0], a=1, b=0), "negative"),
        (lambda: metrics.nll([-1.0]), "at least 2 full blocks"),
        (lambda: observables.assign_basins([0.1, 0.2], [0.1]), "must match"),
    ],
)
def test_bad_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- observables
def test_hand_dihedral_formula_has_iupac_sign():
    t = 1.1
    points = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [math.cos(t), math.sin(t), 1.0]])
    assert _dihedral(*points) == pytest.approx(t)


def test_backbone_torsions_match_hand_computation(alanine):
    names = {(a.residue.name, a.name): a.index for a in alanine.topology.atoms}
    phi_atoms = [names["ACE", "C"], names["ALA", "N"], names["ALA", "CA"], names["ALA", "C"]]
    psi_atoms = [names["ALA", "N"], names["ALA", "CA"], names["ALA", "C"], names["NME", "N"]]
    rng = np.random.default_rng(12)
    xyz = alanine.reference_xyz[None] + rng.normal(0.0, 0.03, size=(5, alanine.n_atoms, 3))
    phi, psi = observables.ramachandran(xyz, alanine.topology)
    assert phi.shape == psi.shape == (5, 1)
    for frame in range(5):
        assert phi[frame, 0] == pytest.approx(_dihedral(*xyz[frame, phi_atoms]), abs=1e-5)
        assert psi[frame, 0] == pytest.approx(_dihedral(*xyz[frame, psi_atoms]), abs=1e-5)
    traj_phi, traj_psi = observables.backbone_torsions(mdtraj.Trajectory(xyz, alanine.topology))
    np.testing.assert_array_equal(traj_phi, phi)
    # the PDB structure is fully extended: phi = psi = pi, reported as -pi
    ext_phi, ext_psi = observables.ramachandran(alanine.reference_xyz[None], alanine.topology)
    assert np.all((ext_phi >= -np.pi) & (ext_phi < np.pi)) and np.all((ext_psi >= -np.pi) & (ext_psi < np.pi))
    assert abs(ext_phi[0, 0]) == pytest.approx(np.pi, abs=1e-5)


def test_residue_torsions_name_alanine_dipeptide_residue(alanine):
    xyz = alanine.reference_xyz[None] + np.zeros((3, 1, 1))
    torsions = observables.residue_torsions(xyz, alanine.topology)
    assert torsions.names == ("ALA2",) and len(torsions) == 1
    phi, psi = observables.ramachandran(xyz, alanine.topology)
    np.testing.assert_array_equal(torsions.phi, phi)
    np.testing.assert_array_equal(torsions.psi, psi)


def test_backbone_torsions_without_backbone_is_an_error():
    top = mdtraj.Topology()
    residue = top.add_residue("HOH", top.add_chain())
    oxygen = top.add_atom("O", mdtraj.element.oxygen, residue)
    for name in ("H1", "H2"):
        top.add_bond(oxygen, top.add_atom(name, mdtraj.element.hydrogen, residue))
    with pytest.raises(ValueError, match="no residue with both backbone phi and psi"):
        observables.ramachandran(np.zeros((1, 3, 3)), top)


def test_ramachandran_rejects_wrong_shape(alanine):
    with pytest.raises(ValueError, match=r"shape \(B, 22, 3\)"):
        observables.ramachandran(alanine.reference_xyz, alanine.topology)


def test_assign_basins_regions():
    phi = np.array([-1.4, -1.4, -2.6, -1.4, 1.0, 1.3, 2.8, -np.pi])
    psi = np.array([1.2, -0.7, 2.7, -2.9, 0.7, -1.2, 2.9, 0.0])
    expected = ["C7eq/beta", "alpha_R", "C7eq/beta", "C7eq/beta", "alpha_L/C7ax", "alpha_L/C7ax", "C7eq/beta", "alpha_R"]
    codes = observables.assign_basins(phi, psi)
    assert [observables.BASINS[c] for c in codes] == expected
    assert observables.assign_basins(phi[:, None], psi[:, None]).shape == (8, 1)


# ----------------------------------------------------------------------------- plots
def test_plots_write_png_images(tmp_path):
    rng = np.random.default_rng(13)
    sample = _gaussian_torsions(rng, [-1.2, 1.0], [0.5, 0.7], 3000)
    ref = _gaussian_torsions(rng, [-1.4, 0.8], [0.5, 0.6], 3000)
    weights = rng.uniform(0.1, 1.0, 3000)
    energy_model = np.concatenate([rng.normal(-40.0, 8.0, 2900), np.full(100, 1e5)])
    energy_md = rng.normal(-45.0, 7.0, 3000)
    written = [
        plots.plot_ramachandran(tmp_path / "rama.png", *sample, *ref, weights, title="300 K"),
        plots.plot_phi_marginal(tmp_path / "phi.png", sample[0], ref[0], weights),
        plots.plot_energy_histograms(tmp_path / "energy.png", energy_model, energy_md, weights),
        plots.plot_metrics_vs_temperature(
            tmp_path / "vs_t.png",
            [600.0, 300.0, 450.0],
            {"KL [nats]": [0.3, 0.1, np.inf], "JS [nats]": [0.05, 0.02, 0.03]},
            {"KL [nats]": [0.02, 0.01, 0.015]},
            relative_ess=[0.02, 0.3, 0.1],
            training_temperature=600.0,
        ),
    ]
    for path in written:
        _check_png(path)


def test_plot_bad_input(tmp_path):
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        plots.plot_ramachandran(tmp_path / "r.png", [0.1], [0.1], [0.2], [0.2], bins=0)
    with pytest.raises(ValueError, match="noise_floors has names that are not in metrics"):
        plots.plot_metrics_vs_temperature(tmp_path / "t.png", [300.0], {"KL": [0.1]}, {"JS": [0.1]})
    with pytest.raises(ValueError, match="there are 2 temperatures"):
        plots.plot_metrics_vs_temperature(tmp_path / "t.png", [300.0, 400.0], {"KL": [0.1]})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- report
def test_write_report_round_trips_json_and_writes_markdown(tmp_path):
    figure = plots.plot_phi_marginal(tmp_path / "phi.png", [0.1, -1.0, -1.2], [0.2, -1.1, -1.3])
    divergences = metrics.TorsionDivergences(0.2, 0.25, 0.05, 0.01, 0.012, 0.003, 30, 1e-6, 20)
    delta_f = metrics.FreeEnergyDifference(1.5, 0.1, 0.1, 0.6, 2, 0, 100, 1)
    data = {
        "n_samples": np.int64(10_000),
        "T=300 K": {
            "ramachandran": divergences,
            "delta_f_kT": delta_f,
            "relative_ess": np.float32(0.25),
            "w1_energy_kJ_per_mol": np.inf,
            "ess_per_batch": np.array([1.0, 2.0]),
        },
    }
    files = report.write_report(tmp_path / "report", data, {"phi marginal": figure})
    loaded = json.loads(files.metrics_json.read_text())
    assert loaded["n_samples"] == 10_000
    section = loaded["T=300 K"]
    assert section["ramachandran"] == divergences.to_dict()
    assert section["delta_f_kT"] == delta_f.to_dict()
    assert section["relative_ess"] == pytest.approx(0.25)
    assert section["w1_energy_kJ_per_mol"] is None  # strict JSON: inf -> null
    assert section["ess_per_batch"] == [1.0, 2.0]
    markdown = files.report_md.read_text()
    assert "| ramachandran.kl_sample_ref | 0.2 | 0.01 |" in markdown
    assert "| ramachandran.js | 0.05 | 0.003 |" in markdown
    assert "ramachandran.js_floor" not in markdown  # shown beside js, not as a row
    assert "| delta_f_kT | 1.5 ± 0.1 | — |" in markdown
    assert "| w1_energy_kJ_per_mol | inf | — |" in markdown
    assert "![phi marginal](../phi.png)" in markdown
    assert not [p for p in files.report_md.parent.iterdir() if p.name.endswith(".tmp")]


def test_write_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        report.write_report(tmp_path, {"a": 1.0}, {"fig": tmp_path / "missing.png"})
    with pytest.raises(TypeError, match="keys must be strings"):
        report.write_report(tmp_path, {"T": {300.0: 1.0}})
    with pytest.raises(TypeError, match="unsupported type"):
        report.write_report(tmp_path, {"a": object()})
    assert not (tmp_path / "metrics.json").exists()
