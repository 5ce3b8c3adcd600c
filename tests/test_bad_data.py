"""Bad data: malformed rows, missing fields, wrong answer types and huge inputs are reported with row and
field, the run goes on with the usable rows, and what was skipped is recorded in the run directory."""
from __future__ import annotations

import json

import pytest

from moco.config import parse_config
from moco.errors import DataError
from moco.runner import run_experiment
from moco.tasks.moco_json import MAX_PROMPT_CHARS, load_moco_json
from reliability import tally

GOOD_MC = {"question": "2+2?", "choices": {"A": "4", "B": "5"}, "answer": "A"}
BAD_MC = {  # row index in test -> (row, field named in the report, what the report says)
    1: ({"choices": {"A": "x", "B": "y"}, "answer": "A"}, "question", "missing or empty"),
    2: ({"question": "q", "choices": {"A": "x", "B": "y"}, "answer": ["A"]}, "answer", "is not one of the options"),
    3: ({"question": "q", "choices": {"A": "x", "B": "y"}, "answer": {"k": 1}}, "answer", "is not one of the options"),
    4: ({"question": "q", "choices": "A or B", "answer": "A"}, "choices", "fewer than 2 options"),
    5: ({"question": "x" * (MAX_PROMPT_CHARS + 1), "choices": {"A": "x", "B": "y"}, "answer": "A"}, "question",
        "characters is over the"),
    6: ([1, 2, 3], "*", "row is a list, not an object"),
    7: (None, "*", "row is a NoneType, not an object"),
    8: ({"question": 42, "choices": {"A": "x", "B": "y"}, "answer": "A"}, "question", "missing or empty"),
}


def _dataset(tmp_path):
    good = [{**GOOD_MC, "question": f"{n}+{4 - n}?"} for n in range(4)]
    rows = good[:1] + [row for row, _, _ in BAD_MC.values()] + good[1:]
    p = tmp_path / "messy.json"
    p.write_text(json.dumps({"task_type": "multiple_choice", "dev": [{**GOOD_MC, "question": "dev?"}, {"question": ""}],
                             "test": rows}))
    return p


def test_every_bad_row_is_reported_with_row_and_field(tmp_path):
    t = load_moco_json(_dataset(tmp_path))
    assert len(t.test) == 4 and len(t.dev) == 1
    by_row = {(p.split, p.row): p for p in t.problems}
    for i, (_, field, words) in BAD_MC.items():
        pr = by_row[("test", i)]
        assert (pr.field, pr.action) == (field, "skipped") and words in pr.problem, pr.line()
    assert by_row[("dev", 1)].field == "question"
    tally("bad inputs tried", len(BAD_MC) + 1)


def test_run_goes_on_with_usable_rows_and_records_what_was_skipped(tmp_path):
    cfg = parse_config({"method": "text_majority_vote", "task": str(_dataset(tmp_path)),
                        "models": [{"model": "scripted:a", "script": {"default": "The answer is (A)"}},
                                   {"model": "scripted:b", "script": {"default": "The answer is (B)"}},
                                   {"model": "scripted:c", "script": {"default": "The answer is (A)"}}]})
    res = run_experiment(cfg, tmp_path / "run")
    assert res.metrics["n_test"] == 4 and res.metrics["score"] == 1.0  # the good rows, voted (A)
    skipped = json.loads((tmp_path / "run" / "data_problems.json").read_text())
    assert {(p["split"], p["row"]) for p in skipped} == {("test", i) for i in BAD_MC} | {("dev", 1)}
    assert all(p["action"] == "skipped" for p in skipped)
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["status"] == "finished"
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 4
    tally("items lost", 0)


def test_gold_of_the_wrong_type_is_repaired_and_said(tmp_path):
    p = tmp_path / "em.json"
    p.write_text(json.dumps({"task_type": "exact_match", "test": [
        {"input": "6*7?", "output": 42}, {"input": "ok?", "output": True}, {"input": "q", "output": None},
        {"input": "", "output": "x"}, {"input": "q2", "output": "N/A"}]}))
    t = load_moco_json(p)
    assert [e.answer for e in t.test] == ["42", "True"]
    lines = [pr.line() for pr in t.problems]
    assert "test[0].output: gold is int 42 (repaired)" in lines
    assert "test[2].output: gold answer is null (a placeholder) (skipped)" in lines
    assert "test[3].input: missing or empty (skipped)" in lines
    assert "test[4].output: gold answer 'N/A' is a placeholder (skipped)" in lines
    tally("bad inputs tried", 4)


@pytest.mark.parametrize("content, words", [
    (b'{"task_type": "exact_match", "test": [{"input": "\xff\xfe"}]}', "not UTF-8 text"),
    (b'{"task_type": "exact_match", "test": [', "invalid JSON at line 1"),
    (b'[1, 2]', "expected an object with a 'test' list"),
    (None, "cannot read the dataset"),  # a directory
])
def test_unreadable_dataset_files_are_one_line_errors(tmp_path, content, words):
    p = tmp_path / "d.json"
    if content is None:
        p.mkdir()
    else:
        p.write_bytes(content)
    with pytest.raises(DataError, match=words) as e:
        load_moco_json(p)
    assert "\n" not in str(e.value)
    tally("bad inputs tried")
