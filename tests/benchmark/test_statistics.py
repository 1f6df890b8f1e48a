"""The benchmark's statistics agree with scipy called directly, and the verdict rules are strict."""

import math

import numpy as np
import pytest
from scipy import stats

from nnunetv2_vismae.benchmark import statistics as st

RNG = np.random.default_rng(7)
A = RNG.uniform(0.5, 0.9, 15)
B = A - RNG.normal(0.03, 0.05, 15)


def test_mean_ci_is_scipys_seeded_bca_bootstrap():
    estimate = st.mean_ci(A)
    direct = stats.bootstrap(
        (A,),
        np.mean,
        confidence_level=0.95,
        n_resamples=st.BOOTSTRAP_RESAMPLES,
        method="BCa",
        rng=np.random.default_rng(st.BOOTSTRAP_SEED),
    ).confidence_interval
    assert estimate.n == 15 and estimate.mean == pytest.approx(A.mean())
    assert (estimate.low, estimate.high) == pytest.approx((direct.low, direct.high))
    assert estimate.low < A.mean() < estimate.high
    assert st.mean_ci(A) == estimate  # seeded: the same report twice


def test_paired_difference_ci_wilcoxon_and_improved_cases_match_scipy():
    a = {f"c{i}": v for i, v in enumerate(A)}
    b = {f"c{i}": v for i, v in enumerate(B)}
    b["only_in_b"] = 0.1  # unpaired cases are left out
    comparison = st.paired(a, b)
    differences = A - B
    assert comparison.n == 15 and comparison.improved == int((differences > 0).sum())
    assert comparison.difference == st.mean_ci(differences)
    assert comparison.p_value == pytest.approx(stats.wilcoxon(differences).pvalue)


def test_nan_cases_are_left_out_and_small_samples_get_no_interval():
    assert st.mean_ci([0.5, math.nan]) == st.Estimate(0.5, None, None, 1)
    assert st.mean_ci([]).n == 0 and st.mean_ci([]).text() == "–"
    assert st.paired({"a": 0.5}, {"a": 0.4}).p_value is None
    assert st.paired({"a": 0.5, "b": math.nan}, {"a": 0.4, "b": 0.3}).n == 1


def test_a_tie_is_neither_a_win_nor_a_loss_and_an_inferior_arm_is_never_non_inferior():
    tie = st.paired({c: 0.7 for c in "abcdef"}, {c: 0.7 for c in "abcdef"})
    assert tie.difference == st.Estimate(0.0, 0.0, 0.0, 6) and tie.p_value == 1.0 and tie.improved == 0
    assert not st.better(tie) and not st.worse(tie) and st.non_inferior(tie, 0.02)
    inferior = st.paired({f"c{i}": v - 0.1 for i, v in enumerate(A)}, {f"c{i}": v for i, v in enumerate(A)})
    assert not st.non_inferior(inferior, 0.02) and st.worse(inferior)
    slightly_lower = st.paired({f"c{i}": v - 0.005 for i, v in enumerate(A)}, {f"c{i}": v for i, v in enumerate(A)})
    assert st.non_inferior(slightly_lower, 0.02) and not st.non_inferior(slightly_lower, 0.001)
    one_case = st.paired({"a": 0.9}, {"a": 0.1})
    assert not st.better(one_case) and not st.non_inferior(one_case, 0.02)  # no interval, no claim


def test_estimate_text_shows_the_interval_and_the_sign():
    assert st.Estimate(0.0412, -0.0081, 0.089, 12).text(signed=True) == "+0.041 [-0.008, +0.089]"
    assert st.Estimate(0.5, 0.45, 0.55, 12).text() == "0.500 [0.450, 0.550]"
    assert st.Estimate(0.5, None, None, 1).text() == "0.500"
