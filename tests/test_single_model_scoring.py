"""single_model scores each model's answers as one batch: a judge is called once per model, not per item, and
an all-or-nothing group rule (CultureBench) applies within one model's answers, never across models."""
from __future__ import annotations

import json
import re

from moco.config import parse_config
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment


def test_a_group_rule_is_applied_per_model_not_across_models(cache, tmp_path):
    # two questions, two True/False rows each; model a answers every row right, model b gets one row wrong
    rows = [{"id": f"{q}-{k}", "input": f"Question {q}, option {k}: true?", "output": gold, "question_id": q}
            for q, opts in (("q1", ("True", "False")), ("q2", ("False", "True"))) for k, gold in enumerate(opts)]
    data = tmp_path / "culturebench"
    data.mkdir()
    (data / "culturebench.json").write_text(json.dumps({"name": "culturebench", "task_type": "exact_match",
                                                         "dev": rows, "test": rows}))
    gold = {r["input"]: r["output"] for r in rows}

    item = re.compile(r"Question q\d, option \d: true\?")

    def right(req):
        return "The answer is " + gold[item.search(req.messages[-1][1]).group(0)]

    def one_wrong(req):
        text = right(req)
        return text.replace("True", "False") if "Question q1, option 0" in req.messages[-1][1] else text

    backends = {"scripted:a": ScriptedBackend("a", fn=right), "scripted:b": ScriptedBackend("b", fn=one_wrong)}
    cfg = parse_config({"method": "single_model", "task": {"name": "culturebench"},
                        "models": ["scripted:a", "scripted:b"], "params": {"model": "a"},
                        "generation": {"temperature": 0.0, "max_new_tokens": 16}})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends, data_dir=str(data))
    m = res.metrics
    assert m["scorer"].endswith("all_correct_per_question_id")
    assert m["score"] == 1.0  # the output is model a's
    # b fails q1 (both of its rows), passes q2; scored together with a's rows, a would have lost q1 too
    assert m["per_model_test"] == {"a": 1.0, "b": 0.5}
    preds = [json.loads(x) for x in (res.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["trace"]["scores"] for p in preds] == [{"a": 1.0, "b": 0.0}] * 2 + [{"a": 1.0, "b": 1.0}] * 2


def test_a_judge_is_called_once_per_model_not_once_per_item(cache, tmp_path):
    rows = [{"id": i, "input": f"What is {i} plus 1?", "output": str(i + 1)} for i in range(8)]
    task = tmp_path / "sums.json"
    task.write_text(json.dumps({"name": "sums", "task_type": "exact_match", "dev": rows[:2], "test": rows[2:]}))

    number = re.compile(r"What is (\d+)")

    def answer(offset):
        return lambda req: f"It is {int(number.search(req.messages[-1][1]).group(1)) + offset}."

    judge = ScriptedBackend("judge", fn=lambda req: "Final Decision: " + ("Yes" if "It is" in req.messages[-1][1] else "No"))
    backends = {"scripted:a": ScriptedBackend("a", fn=answer(1)), "scripted:b": ScriptedBackend("b", fn=answer(2)),
                "scripted:judge": judge}
    cfg = parse_config({"method": "single_model", "task": {"name": str(task), "scorer": "llm_judge"},
                        "models": ["scripted:a", "scripted:b"], "roles": {"judge": {"model": "scripted:judge"}},
                        "params": {"model": "a"}, "generation": {"temperature": 0.0, "max_new_tokens": 16}})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
    scoring = [c for c in calls if c["phase"] == "score"]
    # 6 items x 2 models for per_model_test, then the runner's 6 for the output (answered by a: cache hits)
    assert len(scoring) == 18 and sum(c["cache_hit"] for c in scoring) == 6 and len(judge.calls) == 12
    # one scoring batch per model (a group rule stays within a model), gathered: the scheduler decodes both
    # models' judge calls in one merged backend batch
    assert len({c["batch"] for c in scoring if not c["cache_hit"]}) == 1
    assert res.metrics["per_model_test"] == {"a": 1.0, "b": 1.0}
