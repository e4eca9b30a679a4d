"""The Pareto k-hat diagnostic of importance weights: exact tails, an independent fit, invariances, bad input."""

import numpy as np
import pytest
from scipy.stats import genpareto

from trade_md.analysis.summary import summary_markdown
from trade_md.weights import pareto_k, pareto_k_limit, pareto_k_note, pareto_k_or_none


def pareto_log_weights(k: float, n: int, seed: int) -> np.ndarray:
    """log w with w = U^-k, U uniform: a Pareto tail whose generalized-Pareto shape is exactly k."""
    return -k * np.log(np.random.default_rng(seed).random(n))


@pytest.mark.parametrize("k", [0.3, 0.7, 1.0])
def test_pareto_k_recovers_the_shape_of_an_exact_pareto_tail(k):
    # 400,000 draws: tail of 1,898 weights, standard error of the fit about (1 + k) / sqrt(1898) <= 0.046;
    # 0.12 is 2.6 standard errors at k = 1 and more below it
    for seed in (1, 2, 3):
        assert pareto_k(pareto_log_weights(k, 400_000, seed)) == pytest.approx(k, abs=0.12)


def test_pareto_k_agrees_with_a_maximum_likelihood_fit_of_the_same_tail():
    lw = pareto_log_weights(0.6, 100_000, seed=4)
    m = int(min(np.ceil(0.2 * lw.size), np.ceil(3 * np.sqrt(lw.size))))
    top = np.exp(np.sort(lw)[-(m + 1):] - lw.max())
    mle, _, _ = genpareto.fit(top[1:] - top[0], floc=0)
    # the same tail and the same prior (10 pseudo-observations at 0.5); Zhang-Stephens vs MLE: 0.01
    assert pareto_k(lw) == pytest.approx((m * mle + 5) / (m + 10), abs=0.01)


def test_light_tails_give_a_small_k_and_heavy_ones_a_large_k():
    rng = np.random.default_rng(6)
    assert pareto_k(rng.normal(0.0, 0.1, 20_000)) < 0.2  # nearly equal weights
    assert pareto_k(pareto_log_weights(1.5, 20_000, seed=7)) > pareto_k_limit(20_000)


def test_pareto_k_ignores_the_scale_of_the_weights_and_zero_weights_stay_out_of_the_tail():
    lw = pareto_log_weights(0.5, 20_000, seed=8)
    assert pareto_k(lw + 1234.5) == pytest.approx(pareto_k(lw), abs=1e-9)
    with_clashes = lw.copy()
    with_clashes[:100] = -np.inf  # clashing samples: zero weight, never the largest
    assert np.isfinite(pareto_k(with_clashes))


def test_pareto_k_limit_follows_the_sample_size():
    assert pareto_k_limit(100) == pytest.approx(0.5)
    assert pareto_k_limit(1000) == pytest.approx(2 / 3)
    assert pareto_k_limit(10_000) == pytest.approx(0.7)


@pytest.mark.parametrize("log_weights, message", [
    (np.zeros(20), "at least 5 tail weights"),
    (np.r_[np.zeros(3), np.full(97, -np.inf)], "at least 5 tail weights"),
    (np.zeros(1000), "all equal"),
    (np.array([0.0, np.nan] * 50), "NaN"),
])
def test_pareto_k_bad_input_is_a_clear_error(log_weights, message):
    with pytest.raises(ValueError, match=message):
        pareto_k(log_weights)
    if message == "NaN":  # invalid weights are an error, not "no tail"
        with pytest.raises(ValueError, match=message):
            pareto_k_or_none(log_weights)
    else:
        assert pareto_k_or_none(log_weights) is None


def test_report_and_messages_say_whether_the_weights_can_be_trusted():
    heavy, light = pareto_log_weights(1.2, 10_000, seed=9), pareto_log_weights(0.2, 10_000, seed=9)
    assert "not reliable" in pareto_k_note(heavy) and "(reliable: <= 0.70)" in pareto_k_note(light)
    assert pareto_k_note(np.zeros(10)) == ""  # too few weights: no claim either way
    sections = {f"{T} K": {"relative_ess": 0.05, "ess": 500.0, "pareto_k": pareto_k(lw), "pareto_k_limit": 0.7}
                for T, lw in ((300, heavy), (600, light))}
    sections["700 K"] = {"relative_ess": 1.0, "ess": 400.0, "pareto_k": None, "pareto_k_limit": 0.57}
    rows = {line.split(" | ")[0]: line for line in summary_markdown(sections).splitlines()
            if line.startswith("| ") and "K |" in line}
    assert rows["| 300 K"].endswith("**not reliable**: reweighted estimates (and the ESS) may be far off |")
    assert rows["| 600 K"].endswith("| 0.7 | reliable |")
    assert "too few distinct non-zero weights" in rows["| 700 K"]


def test_samples_report_the_pareto_k_of_their_weights():
    import mdtraj

    from trade_md.generator import Samples

    top = mdtraj.Topology()
    top.add_atom("C1", mdtraj.element.carbon, top.add_residue("MOL", top.add_chain()))
    lw = pareto_log_weights(0.5, 2000, seed=10)
    samples = Samples(np.zeros((2000, 1, 3), np.float32), np.zeros(2000), np.full(2000, 300.0), top, log_weights=lw)
    assert samples.pareto_k() == pareto_k(lw)
    with pytest.raises(ValueError, match="no importance weights"):
        Samples(samples.xyz, samples.log_prob, samples.temperature, top).pareto_k()
