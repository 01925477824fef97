"""Distribution metrics against scipy / numpy / loops, with hypothesis property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import entropy as scipy_entropy

from distjudge.metrics import (
    bootstrap_scores,
    entropy,
    expected_calibration_error,
    js_divergence,
    kl_divergence,
    majority_correct,
    score,
    total_variation,
)

LOG2 = math.log(2)


@st.composite
def distribution_pairs(draw, zeros_in_q: bool = False):
    """[N, C] arrays p (exact zeros allowed) and q, C from 2 to 10, rows summing to 1."""
    c = draw(st.integers(2, 10))
    n = draw(st.integers(1, 6))

    def rows(allow_zero: bool):
        # no subnormal weights: scipy's reference itself overflows on them
        weights = st.floats(1e-6, 1.0)
        if allow_zero:
            weights = st.one_of(st.just(0.0), weights)
        row = st.lists(weights, min_size=c, max_size=c).filter(lambda r: sum(r) > 1e-3)
        arr = np.array(draw(st.lists(row, min_size=n, max_size=n)), dtype=np.float64)
        return arr / arr.sum(axis=1, keepdims=True)

    return rows(True), rows(zeros_in_q)


def counts_distribution(rng, n, c, annotators=5):
    counts = rng.multinomial(annotators, rng.dirichlet(np.ones(c)), size=n).astype(float)
    return counts / counts.sum(axis=1, keepdims=True)


# -- against reference implementations ----------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(distribution_pairs())
def test_kl_matches_scipy_rel_entr(pq):
    p, q = pq
    np.testing.assert_allclose(kl_divergence(p, q), rel_entr(p, q).sum(-1), rtol=1e-9, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(distribution_pairs(zeros_in_q=True))
def test_jsd_matches_scipy_jensenshannon_squared(pq):
    p, q = pq
    reference = np.array([jensenshannon(a, b) ** 2 for a, b in zip(p, q)])  # natural log
    np.testing.assert_allclose(js_divergence(p, q), reference, rtol=1e-7, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(distribution_pairs(zeros_in_q=True))
def test_total_variation_and_entropy_match_numpy_and_scipy(pq):
    p, q = pq
    np.testing.assert_allclose(total_variation(p, q), 0.5 * np.abs(p - q).sum(-1), atol=1e-15)
    np.testing.assert_allclose(entropy(p), scipy_entropy(p, axis=-1), rtol=1e-12, atol=1e-14)


# -- properties ---------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(distribution_pairs(zeros_in_q=True))
def test_divergence_properties(pq):
    p, q = pq
    kl = kl_divergence(p, q)
    assert np.all(np.isfinite(kl)), "q = 0 where p > 0 must give a large finite KL, not inf"
    assert np.all(kl >= -1e-12)
    assert np.all(np.abs(kl_divergence(p, p)) <= 1e-12)
    assert np.all(np.abs(kl_divergence(q, q)) <= 1e-12)
    jsd, jsd_swapped = js_divergence(p, q), js_divergence(q, p)
    np.testing.assert_allclose(jsd, jsd_swapped, rtol=1e-12, atol=1e-15)
    assert np.all(jsd >= -1e-12) and np.all(jsd <= LOG2 + 1e-12)
    assert np.all(np.abs(js_divergence(p, p)) <= 1e-12)
    tv = total_variation(p, q)
    assert np.all(tv >= 0) and np.all(tv <= 1 + 1e-12)
    np.testing.assert_allclose(tv, total_variation(q, p))
    h = entropy(p)
    assert np.all(h >= -1e-12) and np.all(h <= np.log(p.shape[1]) + 1e-12)
    # Pinsker: TV <= sqrt(KL / 2)
    assert np.all(tv <= np.sqrt(np.maximum(kl, 0) / 2) + 1e-9)


def test_zero_log_zero_and_disjoint_supports():
    p = np.array([[1.0, 0.0, 0.0]])
    q = np.array([[0.5, 0.5, 0.0]])
    assert kl_divergence(p, q)[0] == pytest.approx(math.log(2))
    assert entropy(p)[0] == 0.0
    disjoint = np.array([[0.0, 1.0, 0.0]])
    assert js_divergence(p, disjoint)[0] == pytest.approx(LOG2)
    assert total_variation(p, disjoint)[0] == pytest.approx(1.0)
    assert kl_divergence(p, disjoint)[0] > 20  # floored, large and finite


# -- accuracy with ties -------------------------------------------------------------------------

def test_majority_correct_counts_any_tied_label():
    p = np.array([
        [0.5, 0.5, 0.0],       # tie between 0 and 1
        [0.5, 0.5, 0.0],
        [0.5, 0.5, 0.0],
        [1 / 3, 1 / 3, 1 / 3],  # everyone tied: any prediction is a majority label
        [2 / 7, 3 / 7, 2 / 7],
        [3 / 7, 3 / 7, 1 / 7],  # counts 3, 3, 1
    ])
    q = np.array([
        [0.6, 0.3, 0.1],
        [0.1, 0.6, 0.3],
        [0.1, 0.3, 0.6],
        [0.1, 0.2, 0.7],
        [0.5, 0.4, 0.1],
        [0.2, 0.7, 0.1],
    ])
    np.testing.assert_array_equal(majority_correct(p, q), [1, 1, 0, 1, 0, 1])


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 6), st.integers(1, 9), st.integers(0, 10_000))
def test_majority_correct_equals_a_loop_over_counts(c, annotators, seed):
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(annotators, np.ones(c) / c, size=20)
    p = counts / counts.sum(axis=1, keepdims=True)
    q = rng.dirichlet(np.ones(c), size=20)
    expected = [float(counts[i, q[i].argmax()] == counts[i].max()) for i in range(20)]
    np.testing.assert_array_equal(majority_correct(p, q), expected)


# -- ECE ----------------------------------------------------------------------------------------

def ece_loop(p, q, bins=10):
    """Straightforward ECE: equal-width bins over max q, |Σ conf − Σ correct| / N per bin."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        conf_sum = correct_sum = 0.0
        for i in range(len(q)):
            conf = float(max(q[i]))
            top = max(p[i])
            in_bin = lo <= conf < hi or (b == bins - 1 and conf == hi)
            if in_bin:
                conf_sum += conf
                correct_sum += float(abs(p[i][int(np.argmax(q[i]))] - top) <= 1e-12)
        total += abs(conf_sum - correct_sum)
    return total / len(q)


@pytest.mark.parametrize("seed", range(5))
def test_ece_matches_a_loop(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 8))
    p = counts_distribution(rng, 200, c)
    q = rng.dirichlet(np.full(c, 0.5), size=200)
    assert expected_calibration_error(p, q) == pytest.approx(ece_loop(p, q), abs=1e-12)
    assert expected_calibration_error(p, q, bins=4) == pytest.approx(ece_loop(p, q, 4), abs=1e-12)


def test_ece_hand_cases():
    p = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    confident_right = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(p, confident_right) == pytest.approx(0.0)
    confident_wrong = 1 - confident_right
    assert expected_calibration_error(p, confident_wrong) == pytest.approx(1.0)
    # 75% confident and right 3 times out of 4: perfectly calibrated in its bin
    q = np.array([[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.25]])
    assert expected_calibration_error(p, q) == pytest.approx(0.0)


# -- score and bootstrap ------------------------------------------------------------------------

def test_score_averages_row_metrics():
    rng = np.random.default_rng(3)
    p, q = counts_distribution(rng, 50, 3), rng.dirichlet(np.ones(3), size=50)
    s = score(p, q)
    assert s["kl"] == pytest.approx(kl_divergence(p, q).mean())
    assert s["jsd"] == pytest.approx(js_divergence(p, q).mean())
    assert s["tv"] == pytest.approx(total_variation(p, q).mean())
    assert s["accuracy"] == pytest.approx(majority_correct(p, q).mean())
    assert s["ece"] == pytest.approx(expected_calibration_error(p, q))


@pytest.mark.parametrize("seed", range(3))
def test_bootstrap_cis_contain_the_value_and_are_reproducible(seed):
    rng = np.random.default_rng(100 + seed)
    p = counts_distribution(rng, 80, 3, annotators=100)
    q = 0.7 * p + 0.3 * rng.dirichlet(np.ones(3), size=80)
    first = bootstrap_scores(p, q, n_boot=300, seed=7)
    again = bootstrap_scores(p, q, n_boot=300, seed=7)
    other = bootstrap_scores(p, q, n_boot=300, seed=8)
    assert first == again
    assert first != other
    point = score(p, q)
    for name, s in first.items():
        assert s["value"] == pytest.approx(point[name])
        assert s["low"] <= s["value"] <= s["high"], (name, s)
        assert s["low"] < s["high"] or name == "accuracy"


def test_bootstrap_of_a_constant_metric_is_a_point():
    p = np.array([[1.0, 0.0]] * 10)
    s = bootstrap_scores(p, p, n_boot=50, seed=0)
    assert s["kl"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert s["accuracy"] == {"value": 1.0, "low": 1.0, "high": 1.0}
