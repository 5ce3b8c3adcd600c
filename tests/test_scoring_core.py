"""Multiple-choice and exact/numeric scoring: gold answers written the way models write them, and traps."""
from __future__ import annotations

import pytest

from moco.scoring.exact import ExactMatchScorer, parse_number
from moco.scoring.extract import last_boxed
from moco.scoring.multiple_choice import MultipleChoiceScorer
from moco.scoring.stats import bootstrap_ci, summarize
from moco.tasks.base import Example

MC = Example("1", 0, "test", "p", "q", "C", {"A": "Paris", "B": "Rome", "C": "Madrid", "D": "Berlin"})
mc = MultipleChoiceScorer()


@pytest.mark.parametrize("response, expected", [
    ("The answer is (C)", "C"), ("The answer is C.", "C"), ("Answer: C", "C"), ("C", "C"), ("(C)", "C"),
    ("C) Madrid", "C"), ("\\boxed{C}", "C"), ("I think A is wrong. The answer is (C).", "C"),
    ("The capital of Spain is Madrid.", "C"), ("madrid", "C"),
    ("The answer is (A). Wait, no: the answer is (C).", "C"),
])
def test_mc_extracts_the_chosen_option(response, expected):
    assert mc.extract(MC, response) == expected
    assert mc.score(MC, response).score == 1.0


@pytest.mark.parametrize("response", [
    "", "A B C D", "(A) (B) (C) (D)", "A) Paris B) Rome C) Madrid D) Berlin", "Paris, Rome, Madrid or Berlin",
    "I don't know", "The data.", "Rome or Madrid",
])
def test_mc_undecided_or_listing_everything_scores_zero(response):
    r = mc.score(MC, response)
    assert r.score == 0.0 and r.extracted is None


def test_mc_is_not_biased_toward_a():
    # a word ending in 'a' before a period, or the article "a", must not count as option A
    assert mc.extract(MC, "This is a tricky one about data.") is None
    assert mc.extract(MC, "The answer is a city in Spain: Madrid.") == "C"


def test_mc_strict_and_flexible_side_by_side():
    r = mc.score(MC, "The capital of Spain is Madrid.")
    assert r.score == 1.0 and r.strict == 0.0
    r = mc.score(MC, "The answer is (C)")
    assert r.score == 1.0 and r.strict == 1.0


def test_mc_option_text_contained_in_another_option():
    ex = Example("2", 0, "test", "p", "q", "B", {"A": "Paris", "B": "Paris, Texas", "C": "Rome"})
    assert mc.extract(ex, "It is Paris, Texas.") == "B"


def test_last_boxed_keeps_nested_braces():
    assert last_boxed("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{1} then \\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert last_boxed("no box") is None


@pytest.mark.parametrize("text, value", [
    ("1,234", 1234.0), ("$18", 18.0), ("18.0", 18.0), ("-3", -3.0), ("1/2", 0.5), ("\\frac{1}{2}", 0.5),
    ("50%", 50.0), ("5 apples", 5.0), ("x = 7", 7.0), ("−4", -4.0), ("abc", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


EM = ExactMatchScorer()


@pytest.mark.parametrize("gold, response", [
    ("1234", "#### 1,234"), ("1234", "The answer is 1,234."), ("0.5", "\\boxed{\\frac{1}{2}}"),
    ("18", "He spends $18 in total. The answer is $18"), ("-3", "\\boxed{-3}"),
    ("112", "6*14 + 2*14 = 112"), ("A", "The answer is: A"), ("(A)", "\\boxed{(A)}"),
    ("True", "The answer is True."),
])
def test_exact_match_gold_as_models_write_it(gold, response):
    ex = Example("1", 0, "test", "p", "q", gold)
    assert EM.score(ex, response).score == 1.0, EM.extract(ex, response)


def test_exact_match_empty_never_matches():
    for gold in ["A", "(A)", "0", "True"]:
        ex = Example("1", 0, "test", "p", "q", gold)
        assert EM.score(ex, "").score == 0.0
        assert EM.score(ex, "...").score == 0.0


def test_exact_numeric_keys_make_equal_votes():
    ex = Example("1", 0, "test", "p", "q", "18")
    assert EM.extract(ex, "\\boxed{18}") == EM.extract(ex, "The answer is $18.00") == EM.extract(ex, "#### 18")


def test_bootstrap_interval_is_reproducible_and_contains_mean():
    scores = [1.0] * 30 + [0.0] * 20
    lo, hi = bootstrap_ci(scores, seed=3)  # scipy's BCa interval
    assert (lo, hi) == bootstrap_ci(scores, seed=3)
    assert lo < 0.6 < hi and 0.4 < lo and hi < 0.8
    s = summarize(scores, unparsed=4, failed=1)
    assert s["score"] == 0.6 and s["n"] == 50 and s["unparsed"] == 4 and s["failed"] == 1
