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
                        "generation": {"temperature": 0.0, "max_new_tokens": 16}})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    m = json.loads((res.run_dir / "metrics.json").read_text())
    assert m["score"] == 1.0
    report = m["judge_vs_rules"]
    assert report["rule_scorer"] == "exact_match" and report["n"] == 8
    assert report["disagree"] == report["judge_yes_rules_no"] == 4 and report["judge_no_rules_yes"] == 0
    assert report["items"] == ["test:1", "test:3", "test:5", "test:7"]  # the odd numbers, answered wrong
    preds = [json.loads(x) for x in (res.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["score_detail"]["rule_score"] for p in preds] == [1.0, 0.0] * 4
