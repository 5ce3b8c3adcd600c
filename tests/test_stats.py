"""Intervals and paired tests of moco.scoring.stats against figures computed by hand on small made-up tables."""
from math import factorial

import pytest

from moco.scoring.stats import (ALL_EQUAL, TOO_FEW, adjust, benjamini_hochberg, bootstrap_ci, holm, mcnemar_exact,
                                mean_ci, paired_test, ratio_ci, strata_mean_ci, summarize)

# ten items, 0/1 scores: the method solves 8, the baseline 4; discordant pairs: 5 for the method, 1 against
METHOD = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
BASE = [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]


def test_mcnemar_exact_by_hand():
    m = mcnemar_exact(METHOD, BASE)
    assert (m.better, m.worse) == (5, 1)
    # two-sided exact binomial on 6 discordant pairs: 2 * P(X <= 1 | Bin(6, 1/2)) = 2 * (1 + 6) / 64
    assert m.p == pytest.approx(14 / 64)
    assert mcnemar_exact([1, 0], [1, 0]).p == 1.0  # no discordant pair: no evidence either way


def exact_bootstrap_p() -> float:
    """The bootstrap p-value with every resample enumerated: a resample of the 10 differences draws +1 with
    probability 5/10, -1 with 1/10, 0 with 4/10; the observed mean difference is 0.4 and the null-shifted
    two-sided p is P(|mean* - 0.4| >= 0.4) = P(mean* <= 0 or mean* >= 0.8), a multinomial sum."""
    p = 0.0
    for kp in range(11):
        for km in range(11 - kp):
            k0 = 10 - kp - km
            prob = factorial(10) / (factorial(kp) * factorial(km) * factorial(k0)) * 0.5 ** kp * 0.1 ** km * 0.4 ** k0
            mean = (kp - km) / 10
            if mean <= 1e-12 or mean >= 0.8 - 1e-12:
                p += prob
    return p


def test_paired_bootstrap_by_hand():
    r = paired_test([METHOD], [BASE], n_resamples=4000, seed=1)
    assert r.n == 10 and r.diff == pytest.approx(0.4)
    assert exact_bootstrap_p() == pytest.approx(0.0910, abs=1e-4)
    # Monte Carlo error of 4000 resamples at p = 0.09 is 0.0045
    assert r.p_bootstrap == pytest.approx(exact_bootstrap_p(), abs=0.02)
    assert r.ci.ok and r.ci.lo < 0.4 < r.ci.hi
    # one task of 0/1 scores: McNemar decides (the bootstrap is too liberal on ten items)
    assert r.test == "mcnemar" and r.p == pytest.approx(14 / 64)
    # the same items with seeds averaged (not 0/1 any more): the bootstrap decides
    r2 = paired_test([[x * 0.5 + 0.25 for x in METHOD]], [BASE], n_resamples=1000)
    assert r2.mcnemar is None and r2.test == "bootstrap" and r2.p == r2.p_bootstrap


def test_paired_test_strata_are_a_macro_average():
    r = paired_test([[1, 1, 0, 1], [0, 0]], [[0, 1, 0, 1], [0, 1]], n_resamples=500)
    # task 1: +0.25, task 2: -0.5 -> macro-average -0.125 (not the pooled -1/6)
    assert r.diff == pytest.approx(-0.125) and r.test == "bootstrap" and r.mcnemar.better == 1
    assert r.mcnemar.worse == 1


def test_paired_test_degenerate_cases():
    one = paired_test([[1.0]], [[0.0]])
    assert one.ci.note == TOO_FEW and one.p_bootstrap is None
    same = paired_test([[0.5, 0.7, 0.2]], [[0.5, 0.7, 0.2]])
    assert same.diff == 0 and same.p == 1.0 and not same.ci.ok
    # every item improved by the same amount: no bootstrap spread, the exact sign test decides (2 * 1/2^6)
    up = paired_test([[0.6] * 6], [[0.1] * 6])
    assert up.test == "sign" and up.p == pytest.approx(2 / 64)
    with pytest.raises(ValueError):
        paired_test([[1, 0]], [[1]])


def test_intervals_are_none_when_meaningless():
    assert bootstrap_ci([1.0]) is None and mean_ci([1.0]).note == TOO_FEW
    assert bootstrap_ci([1.0] * 20) is None and mean_ci([1.0] * 20).note == ALL_EQUAL
    s = summarize([1.0], unparsed=0)
    assert s["ci95"] is None and s["ci_note"] == TOO_FEW and s["score"] == 1.0
    assert mean_ci([1.0, 0.0] * 10).text() .startswith("0.")
    assert mean_ci([]).text() == f"({TOO_FEW})"


def test_bca_interval_reproducible_and_covers_mean():
    scores = [1.0] * 30 + [0.0] * 20
    assert bootstrap_ci(scores, seed=3) == bootstrap_ci(scores, seed=3)
    lo, hi = bootstrap_ci(scores, seed=3)
    assert 0.4 < lo < 0.6 < hi < 0.8
    iv = strata_mean_ci([[1, 0, 1, 1], [0, 0, 1]])
    assert iv.ok and iv.lo < (0.75 + 1 / 3) / 2 < iv.hi
    r = ratio_ci([1, 0, 1, 0, 1] * 8, [1, 1, 1, 0, 1] * 8)
    assert r.ok and r.lo <= 0.75 <= r.hi
    # five items: some resamples have a zero denominator, so the ratio's interval is undefined (not invented)
    assert not ratio_ci([1, 0, 1, 0, 1], [1, 1, 1, 0, 1]).ok
    assert ratio_ci([0, 0], [0, 0]).note == ALL_EQUAL


def test_multiple_comparison_adjustments_by_hand():
    ps = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02 .03 .06 .06
    assert holm(ps) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: p * 4 / rank = 0.005*4/1=.02, .01*4/2=.02, .03*4/3=.04, .04*4/4=.04 (monotone from the top)
    assert benjamini_hochberg(ps) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust(ps, "none") == ps
    with pytest.raises(ValueError):
        adjust(ps, "bonferonni")


def test_stratified_paired_bootstrap_by_hand():
    """Two tasks, items resampled within each: task 1's differences are (+1, 0), task 2's (+1, +1, -1). The
    statistic is the macro-average (mean1 + mean2) / 2 = (1/2 + 1/3) / 2 = 5/12. Every resample of the two
    strata (2^2 x 3^3 = 108 equally likely ordered draws) is enumerated below: the null-shifted two-sided p is
    P(|d* - 5/12| >= 5/12) = P(d* <= 0) + P(d* >= 5/6), counted here and by hand."""
    from itertools import product

    s1, s2 = [1, 0], [1, 1, -1]
    hits = 0
    for r1 in product(s1, repeat=2):
        for r2 in product(s2, repeat=3):
            d = (sum(r1) / 2 + sum(r2) / 3) / 2
            hits += d <= 1e-12 or d >= 5 / 6 - 1e-12
    # mean1 is 0, 1/2, 1 with probability 1/4, 1/2, 1/4; mean2 = (3 - 2k)/3 with k the -1s drawn of 3,
    # P(k = 0, 1, 2, 3) = 8/27, 12/27, 6/27, 1/27, so mean2 = 1, 1/3, -1/3, -1.
    # d* <= 0 (mean1 + mean2 <= 0): mean1 = 0 and k >= 2 (1/4 * 7/27 = 7/108), mean1 = 1/2 and k = 3
    # (1/2 * 1/27 = 2/108), mean1 = 1 and k = 3 (1/4 * 1/27 = 1/108) -> 10/108.
    # d* >= 5/6 (mean1 + mean2 >= 5/3): only mean1 = 1 and k = 0 (1/4 * 8/27 = 8/108).
    # p = 18/108 = 1/6; 108 draws of equal probability -> 18 of them.
    assert hits == 18
    r = paired_test([[1, 0], [2, 1, 0]], [[0, 0], [1, 0, 1]], n_resamples=20000, seed=2)
    assert r.diff == pytest.approx(5 / 12) and r.test == "bootstrap" and r.mcnemar is None
    assert r.p_bootstrap == pytest.approx(1 / 6, abs=0.01)  # Monte Carlo error at 20000 resamples: 0.0025
