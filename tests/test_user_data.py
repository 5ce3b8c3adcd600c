"""Your own data: JSONL/CSV/JSON with a field mapping, row-by-row errors, generation-only runs."""
from __future__ import annotations

import json

import pytest

from moco.config import parse_config
from moco.errors import ConfigError, DataError
from moco.models.scripted import ScriptedBackend
from moco.runner import plan, run_experiment
from moco.tasks.user_data import load_user_data


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_csv_multiple_choice_with_mapping(tmp_path):
    p = tmp_path / "quiz.csv"
    p.write_text("qid,q,o1,o2,o3,right\n1,Capital of Spain?,Paris,Madrid,Rome,Madrid\n2,2+2?,3,4,5,B\n")
    t = load_user_data(p, name="quiz", task_type="multiple_choice",
                       fields={"id": "qid", "question": "q", "choices": ["o1", "o2", "o3"], "answer": "right"})
    assert [e.answer for e in t.test] == ["B", "B"]  # option text and letter both accepted
    assert t.test[0].choices == {"A": "Paris", "B": "Madrid", "C": "Rome"} and t.test[0].id == "1"
    assert not t.generation_only


def test_jsonl_choices_column_and_types_inferred(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": "Pick", "options": ["x", "y"], "label": "A"}])
    t = load_user_data(p, name="d")
    assert t.task_type == "multiple_choice" and t.test[0].answer == "A"
    q = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "2+2?", "target": "4"}])
    assert load_user_data(q, name="e").task_type == "exact_match"


@pytest.mark.parametrize("rows, fields, message", [
    ([{"q": "ok?", "c": ["a", "b"], "a": "A"}, {"q": "", "c": ["a", "b"], "a": "A"}],
     {"question": "q", "choices": "c", "answer": "a"}, "row 2: field 'question' (column 'q'): missing or empty"),
    ([{"q": "ok?", "c": ["a", "b"], "a": "E"}], {"question": "q", "choices": "c", "answer": "a"},
     "row 1: field 'answer' (column 'a'): gold 'E' is not one of the options"),
    ([{"q": "ok?", "c": ["a"], "a": "A"}], {"question": "q", "choices": "c", "answer": "a"},
     "row 1: field 'choices' (column 'c'): missing or fewer than 2 options"),
])
def test_bad_rows_name_the_row_field_and_column(tmp_path, rows, fields, message):
    p = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_user_data(p, name="bad", task_type="multiple_choice", fields=fields)


def test_exact_match_row_errors_and_unknown_field(tmp_path):
    p = write_jsonl(tmp_path / "em.jsonl", [{"input": "q1", "output": "1"}, {"input": "q2", "output": ""}])
    with pytest.raises(DataError, match=r"em.jsonl: row 2: field 'answer' \(column 'output'\): missing gold answer"):
        load_user_data(p, name="em", task_type="exact_match")
    with pytest.raises(DataError, match="unknown field 'qestion'"):
        load_user_data(p, name="em", fields={"qestion": "input"})
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"input": "a"}\n{not json\n')
    with pytest.raises(DataError, match="broken.jsonl: line 2: invalid JSON"):
        load_user_data(bad, name="b")


def test_config_with_own_file_runs_and_scores(tmp_path, cache):
    p = write_jsonl(tmp_path / "sums.jsonl", [{"q": f"What is {i}+1?", "gold": str(i + 1)} for i in range(4)])
    cfg = parse_config({"method": "single_model", "models": ["scripted:a"], "decoding": {"temperature": 0.0},
                        "task": {"name": "sums", "path": str(p), "task_type": "exact_match",
                                 "fields": {"question": "q", "answer": "gold"}}})
    model = ScriptedBackend("a", fn=lambda r: "The answer is " + str(int(r.messages[-1][1].split()[2].split("+")[0]) + 1))
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends={"scripted:a": model})
    assert res.metrics["score"] == 1.0 and res.metrics["n"] == 4 and res.metrics["scorer"] == "exact_match"


def test_generation_only_run_writes_responses_and_no_score(tmp_path, cache):
    p = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Write a haiku about {w}."} for w in ("rain", "sun", "snow")])
    cfg = parse_config({"method": "single_model", "models": ["scripted:a"], "task": str(p),
                        "decoding": {"temperature": 0.0}})
    model = ScriptedBackend("a", fn=lambda r: "Soft words on the page")
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends={"scripted:a": model})
    m = json.loads((res.run_dir / "metrics.json").read_text())
    assert m["generation_only"] is True and m["score"] is None and m["n_responses"] == 3
    assert m["scorer"] == "generation_only" and "not scored" in m["note"]
    preds = [json.loads(x) for x in (res.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["output"] for p in preds] == ["Soft words on the page"] * 3 and all("score" not in p for p in preds)


def test_objective_method_refuses_generation_only(tmp_path):
    p = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}])
    cfg = parse_config({"method": "text_majority_vote", "models": ["scripted:a", "scripted:b", "scripted:c"],
                        "task": str(p)})
    with pytest.raises(ConfigError, match="needs a task with definite answers.*generation only"):
        plan(cfg)


def test_fields_without_path_is_a_config_error():
    with pytest.raises(ConfigError, match="give it as `path`"):
        parse_config({"method": "single_model", "models": ["scripted:a"], "task": {"name": "x", "fields": {"question": "q"}}})
