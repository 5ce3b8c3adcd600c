"""The scorer regression corpus (tests/scorer_corpus.py): 20 families of responses written the way chat models
answer, over real items of every objective dataset (tests/data/scorer_corpus/, no shared data needed).
Every family must be recognised (correct ones) or rejected (wrong and undecided ones) at >= 99% on every
dataset, scored with the scorer the registry picks for the dataset."""
from __future__ import annotations

import pytest
from scorer_corpus import DATASETS, FAMILIES, cases, judged

from moco.scoring import scorer_for
from moco.tasks.registry import DATASETS as KNOWN


def scorer_of(name: str, example):
    task_type = "multiple_choice" if example.choices else ("f1_match" if KNOWN[name].scorer == "token_f1" else "exact_match")
    return scorer_for(task_type, name)


def test_the_corpus_covers_every_objective_dataset():
    objective = {n for n, d in KNOWN.items() if d.scorer not in ("refusal_judge", "reward_model_score", "embedding_diversity",
                                                                  "code_execution")}
    assert objective == set(DATASETS)
    assert len(FAMILIES) >= 20
    assert {kind for kind, _ in FAMILIES.values()} == {"correct", "wrong", "unparsed"}


@pytest.mark.parametrize("name", DATASETS)
def test_every_family_is_judged_like_a_careful_grader(name):
    cs = cases(name)
    scorer = scorer_of(name, cs[0].example)
    by_family: dict[str, list[bool]] = {}
    failures = []
    for c in cs:
        ok = judged(scorer, c)
        by_family.setdefault(c.family, []).append(ok)
        if not ok:
            failures.append((c.family, c.example.answer, c.response[-120:]))
    assert set(by_family) == set(FAMILIES)
    for fam, oks in by_family.items():
        assert len(oks) >= 2, fam
        rate = sum(oks) / len(oks)
        assert rate >= 0.99, f"{name} / {fam}: {rate:.1%} of {len(oks)}; e.g. {failures[:3]}"


def test_a_naive_reader_fails_the_corpus():
    """The corpus has teeth: reading the first option letter mentioned scores the refusal families."""
    import re

    cs = [c for c in cases("arc_challenge") if c.expect != "correct"]
    naive = [re.search(r"\(([A-E])\)", c.response) for c in cs]
    wrongly_scored = sum(1 for c, m in zip(cs, naive) if m and m.group(1) == c.example.answer)
    assert wrongly_scored >= 10


def test_unparsed_answers_are_reported_per_model_and_round(tiny_task, cache, tmp_path):
    """A debater that hedges in its revision round is counted unparsed there, under its name."""
    import json

    from helpers import debater, letter_for, scripted_config
    from moco.models.scripted import ScriptedBackend
    from moco.runner import run_experiment

    def hedger(req) -> str:
        prompt = req.messages[-1][1]
        letter = letter_for(prompt)
        if "Your previous answer" in prompt:  # round 1: no decision
            return f"h:r1 ({letter}) or (B), I'm not sure which."
        return f"h:r0 The answer is ({letter})"

    backends = {"scripted:a": debater("a", True), "scripted:h": ScriptedBackend("h", fn=hedger)}
    res = run_experiment(scripted_config("text_multiagent_refine", tiny_task, "ah", {"rounds": 1}),
                         tmp_path / "run", cache=cache, backends=backends)
    m = json.loads((res.run_dir / "metrics.json").read_text())
    by = m["unparsed_by"]
    assert by["per_model"] == {"a": {"n": 8, "unparsed": 0}, "h": {"n": 8, "unparsed": 8}}
    assert [r["unparsed"] for r in by["per_round"]] == [0, 8]
    assert by["per_round"][1]["per_model"] == {"a": 0, "h": 8}
    assert m["unparsed"] == 0  # the summaries themselves decide


def test_judge_and_rules_disagreements_are_reported(cache, tmp_path):
    """llm_judge_vs_rules: a lenient judge (always "Yes") against the numeric rule; the items the rule marks
    wrong are the reported disagreements, and the score is the judge's."""
    import json
    import re

    from moco.config import parse_config
    from moco.models.scripted import ScriptedBackend
    from moco.runner import run_experiment

    rows = [{"id": i, "input": f"What is {i} plus 1?", "output": str(i + 1)} for i in range(10)]
    task = tmp_path / "sums.json"
    task.write_text(json.dumps({"name": "sums", "task_type": "exact_match", "dev": rows[:2], "test": rows[2:]}))

    def answer(req):
        x = int(re.search(r"What is (\d+) plus 1", req.messages[-1][1]).group(1))
        return f"The answer is {x + 1 if x % 2 == 0 else x + 5}."

    backends = {"scripted:a": ScriptedBackend("a", fn=answer),
                "scripted:judge": ScriptedBackend("judge", fn=lambda req: "Looks fine.\nFinal Decision: Yes")}
    cfg = parse_config({"method": "single_model", "task": {"name": str(task), "scorer": "llm_judge_vs_rules"},
                        "models": ["scripted:a"], "roles": {"judge": {"model": "scripted:judge"}},
                        "decoding": {"temperature": 0.0, "max_new_tokens": 16}})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    m = json.loads((res.run_dir / "metrics.json").read_text())
    assert m["score"] == 1.0
    report = m["judge_vs_rules"]
    assert report["rule_scorer"] == "exact_match" and report["n"] == 8
    assert report["disagree"] == report["judge_yes_rules_no"] == 4 and report["judge_no_rules_yes"] == 0
    assert report["items"] == ["test:1", "test:3", "test:5", "test:7"]  # the odd numbers, answered wrong
    preds = [json.loads(x) for x in (res.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["score_detail"]["rule_score"] for p in preds] == [1.0, 0.0] * 4


SPAIN = ("What is the capital of Spain?", {"A": "Paris", "B": "Rome", "C": "Madrid", "D": "Berlin"}, "C")


@pytest.mark.parametrize("response, expected", [
    ("The correct answer is **(C) Madrid**.\n\nExplanation: Madrid is the capital.", "C"), ("**Correct answer: C**", "C"),
    ("C. Madrid", "C"), ("The answer is option C: Madrid.", "C"), ("Therefore, (C) is the best choice.", "C"),
    ("✅ **C) Madrid**", "C"), ("Among the options, Madrid (C) is the capital of Spain.", "C"), ("c) madrid", "C"),
    ("A) Paris - no\nB) Rome - no\nC) Madrid - yes\nD) Berlin - no\n\nThe answer is (C).", "C"),
    ("The answer is (C), and (A) is wrong because Paris is in France.", "C"), ("Neither A nor B; the answer is C.", "C"),
    ("The answer is (C)... no wait, it's (A).", "A"),
    ("I don't think it's C.", None), ("The answer isn't C.", None), ("It could be either A or C.", None),
    ("Answer: C or A", None), ("I'm unsure between (A) and (C).", None), ("I initially chose C, but that's incorrect.", None),
    ("The answer is", None), ("The answer is (C) and (D).", None),
    ("The answer is (C). Option A says Paris, but that is wrong since Paris is in France.", "C"),
    ("The answer is (C). That's wrong. Hmm.", None),
    ("The answer is C, and B is clearly wrong.", "C"), ("The answer is (C), while (B) Rome can be ruled out.", "C"),
    ("(C) Madrid is correct, (A) Paris is incorrect.", "C"), ("The answer is C, B.", None),
    ("The answer is (C) or possibly (B).", None),
    ('The answer is "C".', "C"), ("Answer: “C”", "C"), ("The answer is 'a city'.", None), ('The answer is "C" or "A".', None),
])
def test_phrasings_outside_the_corpus_multiple_choice(response, expected):
    """Phrasings written apart from the corpus families (a check that the rules are not fitted to them)."""
    from moco.tasks.base import Example

    q, choices, gold = SPAIN
    ex = Example("1", 0, "test", "p", q, gold, choices)
    assert scorer_for("multiple_choice", "arc_challenge").extract(ex, response) == expected


@pytest.mark.parametrize("name, gold, question, response, score", [
    ("gsm8k", "112", "Paul drives...", "Morning: 14 × $6 = $84\nAfternoon: 14 × $2 = $28\nTotal: $84 + $28 = $112", 1.0),
    ("gsm8k", "112", "Paul drives...", "**Final Answer:** The final answer is 112.", 1.0),
    ("gsm8k", "112", "Paul drives...", "I'm not sure, maybe 112 or 120.", 0.0),
    ("gsm8k", "112", "Paul drives...", "The answer is between $100 and $120.", 0.0),
    ("gsm8k", "18", "Janet...", "The answer is 18. Let me reconsider to be sure: 9 * 2 = 18. Yes.", 1.0),
    ("gsm8k", "18", "Janet...", "She makes 9 * 2 = $18 every day at the farmer's market.", 1.0),
    ("gsm8k", "18", "Janet...", "So she makes 18 dollars.\n\nHmm, wait, no. She makes 20.", 0.0),
    ("pubmedqa", "yes", "Does BMI influence survival?", "Answer: yes\nExplanation: no significant difference in stage 1, but...", 1.0),
    ("pubmedqa", "yes", "Does BMI influence survival?", "I would not say yes.", 0.0),
    ("pubmedqa", "yes", "Does BMI influence survival?", "Yes, no significant harm was observed.", 1.0),
    ("pubmedqa", "yes", "Does BMI influence survival?", "yes, no, or maybe", 0.0),
    ("culturebench", "False", "Is this answer true or false?", "False\n\nCycling is common there, so it is not unusual.", 1.0),
    ("sciriff", "Background", "Classify the intent.", "Background\n\nThe citation provides context; the authors use it to...", 1.0),
    ("sciriff", "Background", "Classify the intent.", "This citation serves as Background information.", 1.0),
    ("sciriff", "Uses", "Classify the intent.", "The authors use the cited parser.", 0.0),
    ("bbh", "} ]", "Complete the rest of the sequence.", "The closing sequence is: } ]", 1.0),
    ("bbh", "a b c d e f g h i j k l m n", "Sort the following words alphabetically.", "Sorted list: a b c d e f g h i j k l m n", 1.0),
    ("wikidyk", "Pipeline: The Surf Coaster", "Which roller coaster ...?", "It was Pipeline: The Surf Coaster.", 1.0),
    ("popqa", '["Toulon"]', "What is the capital of Var?", "Toulon is the capital of Var.", 1.0),
    ("popqa", '["Toulon"]', "What is the capital of Var?", "\\boxed{Toulon}. Wait, no, that's wrong.", 0.0),
])
def test_phrasings_outside_the_corpus_free_answers(name, gold, question, response, score):
    from moco.tasks.base import Example

    ex = Example("1", 0, "test", "p", question, gold)
    scorer = scorer_for("f1_match" if name in ("popqa", "wikidyk") else "exact_match", name)
    assert scorer.score(ex, response).score == score


def test_theoremqa_yes_no_answers_a_boolean_question():
    from moco.scoring.math_equivalence import MathEquivalenceScorer
    from moco.tasks.base import Example

    m = MathEquivalenceScorer(rel_tol=0.04)
    ex = Example("1", 0, "test", "p", "Does aliasing occur?", "False", None, {"answer_type": "bool"})
    assert m.score(ex, "No, aliasing does not occur since fs > 2 f_max.").score == 1.0
    assert m.score(ex, "Yes.").score == 0.0 and m.score(ex, "yes or no").extracted is None


def test_an_option_whose_text_starts_with_a_negation_is_still_an_option():
    from moco.tasks.base import Example

    ex = Example("1", 0, "test", "p", "Which?", "D", {"A": "1", "B": "2", "C": "3", "D": "None of the above"})
    mc = scorer_for("multiple_choice", "arc_challenge")
    assert mc.extract(ex, "The answer is none of the above.") == "D"
    assert mc.extract(ex, "The answer is not (D).") is None
