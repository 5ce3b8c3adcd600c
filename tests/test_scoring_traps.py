"""Regression tests for the reference evaluator's traps (reference-implementation notes, section 4)."""
from __future__ import annotations

import json

import pytest

from moco.scoring import scorer_for
from moco.scoring.extract import last_boxed
from moco.scoring.math_equivalence import MathEquivalenceScorer
from moco.scoring.multiple_choice import MultipleChoiceScorer
from moco.scoring.short_answer import ShortAnswerExactMatch, TokenF1Scorer, aliases, normalize_answer
from moco.tasks.base import Example
from moco.tasks.moco_json import load_moco_json


def ex(gold, choices=None, **meta):
    return Example("1", 0, "test", "p", "q", gold, choices, meta)


def test_a_bias_words_ending_in_a_and_articles_are_not_option_a():
    mc = MultipleChoiceScorer()
    e = ex("B", {"A": "alpha", "B": "beta", "C": "gamma"})
    for text in ["I would need more data.", "This is a hard one.", "It is a beta version, I think.", "Look at the data. Hmm."]:
        assert mc.extract(e, text) != "A", text
    assert mc.extract(e, "It is a beta version, I think.") == "B"  # the option text decides, not the article


def test_a_bias_first_matching_option_text_does_not_win():
    mc = MultipleChoiceScorer()
    e = ex("B", {"A": "1", "B": "10", "C": "None"})
    assert mc.extract(e, "The answer is (B): 10 people, None of them left") == "B"
    assert mc.extract(e, "10 or 1, hard to say") is None


def test_nested_boxed_is_kept_whole():
    assert last_boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{\left( \frac{8}{5}, -\frac{35}{2} \right)}") == r"\left( \frac{8}{5}, -\frac{35}{2} \right)"
    m = MathEquivalenceScorer()
    assert m.score(ex(r"\frac{1}{2}"), r"So \boxed{\frac{1}{2}}").score == 1.0
    assert m.score(ex(r"\frac{1}{2}"), r"So \boxed{\frac{1}{3}}").score == 0.0
    assert m.score(ex(r"\begin{pmatrix} 5 \\ 12 \end{pmatrix}"), r"\boxed{\begin{pmatrix} 5 \\ 12 \end{pmatrix}}").score == 1.0


@pytest.mark.parametrize("gold, same, different", [
    (r"\frac{1}{2}", r"\boxed{0.5}", r"\boxed{2}"),
    (r"[4,\infty)", r"\boxed{[4, \infty)}", r"\boxed{(4,\infty)}"),
    (r"(-\infty, -8) \cup (-8, \infty)", r"\boxed{(-\infty,-8)\cup(-8,\infty)}", r"\boxed{(-\infty,8)}"),
    (r"2, 3, \frac{1}{2}, \frac{1}{3}", r"\boxed{\frac13, \frac12, 2, 3}", r"\boxed{2, 3}"),
    (r"4\sqrt{5}", r"\boxed{\sqrt{80}}", r"\boxed{5\sqrt{4}}"),
    (r"18x^3+8x^2", r"\boxed{2x^2(9x+4)}", r"\boxed{18x^3+8x}"),
    (r"1,\!000,\!000", r"\boxed{1000000}", r"\boxed{100000}"),
    (r"\text{(C)}", "The answer is (C).", "The answer is (D)."),
])
def test_math_equivalence_forms(gold, same, different):
    m = MathEquivalenceScorer()
    assert m.score(ex(gold), same).score == 1.0
    assert m.score(ex(gold), different).score == 0.0


def test_bbh_golds_never_normalise_to_empty():
    # reference: "A" -> "" (article) and ") ]" -> "" (punctuation), so an empty response scored 1
    assert normalize_answer("A") == "a"
    assert normalize_answer(") ]") == ") ]"
    assert normalize_answer("The") == "the"
    em = ShortAnswerExactMatch()
    for gold in ["A", ") ]", "the", "-3", "0.5"]:
        for resp in ["", "   ", ".", "The answer is ."]:
            assert em.score(ex(gold), resp).score == 0.0, (gold, resp)
    assert em.score(ex(") ]"), "So the answer is ) ].").score == 1.0
    assert em.score(ex("-3"), r"\boxed{3}").score == 0.0  # the sign is kept
    assert em.score(ex("0.5"), r"\boxed{05}").score == 0.0  # the point is kept


def test_bbh_option_letters():
    em = ShortAnswerExactMatch()
    assert em.score(ex("C"), "So the answer is (C) enormous red car.").score == 1.0
    assert em.score(ex("C"), "So the answer is (A) (B) (C).").score == 0.0


def test_popqa_aliases_with_commas_survive():
    gold = json.dumps(["Washington, D.C.", "DC"])
    assert aliases(gold) == ["Washington, D.C.", "DC"]
    f1 = TokenF1Scorer()
    assert f1.score(ex(gold), r"\boxed{Washington, D.C.}").score == 1.0
    assert f1.score(ex(gold), r"\boxed{DC}").score == 1.0
    assert f1.score(ex(gold), r"\boxed{Washington}").score == pytest.approx(0.5)  # 1 of "washington d c"


def test_popqa_shipped_comma_aliases(data_dir):
    task = load_moco_json(data_dir / "popqa.json", name="popqa")
    with_commas = [e for e in task.dev + task.test if any("," in a for a in aliases(e.answer))]
    assert with_commas, "the shipped popqa has aliases containing commas"
    f1 = scorer_for("f1_match", "popqa")
    for e in with_commas:
        alias = next(a for a in aliases(e.answer) if "," in a)
        assert f1.score(e, f"\\boxed{{{alias}}}").score == 1.0


def test_tablemwp_id_keys_are_scored_as_letters(data_dir):
    task = load_moco_json(data_dir / "tablemwp_multiple_choice.json")
    raw = json.loads((data_dir / "tablemwp_multiple_choice.json").read_text())
    id_gold = [e for e in task.dev + task.test if raw[e.split][e.index]["answer"] == "id"]
    assert len(id_gold) == 29  # 14 dev + 15 test golds were the unscorable key "id"
    mc = MultipleChoiceScorer()
    for e in id_gold:
        assert e.answer == "D"
        assert mc.score(e, f"The answer is ({e.answer}): {e.choices['D']}").score == 1.0


def test_arc_numeric_keys_are_scored_as_letters(data_dir):
    task = load_moco_json(data_dir / "arc_challenge.json")
    raw = json.loads((data_dir / "arc_challenge.json").read_text())
    numeric = [e for e in task.dev + task.test if str(raw[e.split][e.index]["answer"]).isdigit()]
    assert len(numeric) >= 22
    mc = MultipleChoiceScorer()
    for e in numeric:
        letter = "ABCDE"[int(raw[e.split][e.index]["answer"]) - 1]
        assert e.answer == letter and mc.score(e, f"The answer is ({letter})").score == 1.0


@pytest.mark.parametrize("name", ["math", "blend"])
def test_duplicate_ids_are_reported_and_items_stay_distinct(name, data_dir):
    task = load_moco_json(data_dir / f"{name}.json", name=name)
    dup = [p for p in task.problems if p.field == "id" and "duplicated ids" in p.problem]
    assert dup and all(p.row == -1 for p in dup)
    assert len({e.uid for e in task.test}) == len(task.test)
    assert len({e.id for e in task.test}) < len(task.test)


def test_placeholder_golds_are_skipped_and_reported(data_dir):
    task = load_moco_json(data_dir / "math.json", name="math")
    nulls = [p for p in task.problems if "placeholder" in p.problem]
    assert len(nulls) == 12 and all(p.action == "skipped" for p in nulls)


def test_culturebench_group_split_between_dev_and_test_is_reported(data_dir):
    from moco.tasks.registry import resolve_task

    task = resolve_task("culturebench", str(data_dir)).loader()
    assert any("split between dev and test" in p.problem for p in task.problems)
    part = [e for e in task.test if e.meta["question_id"] == "613"]
    assert len(part) == 2 and all(e.meta["group_size"] == 2 for e in part)


def test_culturebench_group_rule_all_or_nothing(data_dir):
    from moco.tasks.registry import resolve_task

    task = resolve_task("culturebench", str(data_dir)).loader()
    scorer = scorer_for(task.task_type, task.name)
    rows = task.test[:8]  # two questions of four rows each
    assert len({e.meta["question_id"] for e in rows}) == 2
    right = [f"Answer: {e.answer}" for e in rows]
    wrong_one = right[:]
    wrong_one[0] = "Answer: " + ("False" if rows[0].answer == "True" else "True")
    res = scorer.score_all(rows, wrong_one)
    assert [r.score for r in res] == [0.0] * 4 + [1.0] * 4
    assert res[1].detail["row_score"] == 1.0  # the row itself was right; its question was not
    summary = scorer.group_summary(rows, res)
    assert summary["n"] == 2 and summary["score"] == 0.5


def test_theoremqa_typed_answers():
    m = MathEquivalenceScorer(rel_tol=0.04)
    assert m.score(ex("True", answer_type="bool"), "So the statement is true.").score == 1.0
    assert m.score(ex("True", answer_type="bool"), "True or False? Hard to say.").score == 0.0
    assert m.score(ex("(b)", answer_type="option"), "The answer is (b).").score == 1.0
    assert m.score(ex("2002.0781", answer_type="float"), r"\boxed{2002.08}").score == 1.0
    assert m.score(ex("2002.0781", answer_type="float"), r"\boxed{2200}").score == 0.0
    assert m.score(ex("[1, 6]", answer_type="list of integer"), r"\boxed{[1, 6]}").score == 1.0
    assert m.score(ex("[1, 6]", answer_type="list of integer"), r"\boxed{[6, 1]}").score == 0.0
    assert m.score(ex("3.54e-07", answer_type="float"), r"\boxed{3.54 \times 10^{-7}}").score == 1.0
