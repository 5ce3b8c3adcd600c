"""Bad data: malformed rows, missing fields, wrong answer types and huge inputs are reported with row and
field, the run goes on with the usable rows, and what was skipped is recorded in the run directory."""
from __future__ import annotations

import json
import re

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
    9: ({"question": "q \ud800", "choices": {"A": "x", "B": "y"}, "answer": "A"}, "question", "lone surrogate"),
    10: ({"question": "q", "choices": {"A": "x\udfff", "B": "y"}, "answer": "A"}, "choices", "lone surrogate"),
    11: ({"question": "q", "choices": {"A": "x", "B": "y"}}, "answer", "missing gold answer"),
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


# ---------------------------------------------------------------- items without a gold answer are never scored
MC_CSV = "q,o1,o2,right\nCapital of Spain?,Paris,Madrid,B\n2+2?,4,5,A\n"
NO_GOLD = {  # name -> (file name, bytes, task.fields, words of the one-line error)
    "answer mapped to a missing column": ("a.csv", MC_CSV.encode(), {"answer": "gold"},
                                          "'answer' is mapped to column 'gold', which"),
    "question mapped to a missing column": ("b.csv", MC_CSV.encode(), {"question": "qq"},
                                            "'question' is mapped to column 'qq'"),
    "a choices column that does not exist": ("c.csv", MC_CSV.encode(), {"choices": ["o1", "o3"]},
                                             "'choices' is mapped to column 'o3'"),
    "a UTF-8 BOM before the first column": ("d.csv", b"\xef\xbb\xbfright,q,o1,o2\nB,Capital?,Paris,Madrid\n", {"answer": "right"},
                                            None),
    "a ragged row (an unquoted comma)": ("e.csv", (MC_CSV + "Pick one,x, y,z,A\n").encode(), {},
                                         "line 4: 5 fields, but the header has 4"),
    "a short row": ("f.csv", (MC_CSV + "Pick one,x\n").encode(), {}, "line 4: 2 fields, but the header has 4"),
    "a column named twice": ("g.csv", b"q,o1,o1,right\nx,a,b,A\n", {}, "column 'o1' appears twice"),
    "Latin-1 bytes": ("h.csv", "q,o1,o2,right\nCaf\xe9?,oui,non,A\n".encode("latin-1"), {},
                      "not UTF-8 text (byte 0xe9 at offset 17, line 2)"),
    "UTF-16 text": ("i.csv", MC_CSV.encode("utf-16"), {}, "UTF-16 text"),
    "JSONL rows lacking the answer": ("j.jsonl", b'{"question": "a?", "choices": ["x", "y"], "answer": "A"}\n'
                                      b'{"question": "b?", "choices": ["x", "y"]}\n', {},
                                      "row 2: field 'answer': missing gold answer"),
    "an empty file": ("k.csv", b"\xef\xbb\xbf", {}, "k.csv: no rows"),
}


@pytest.mark.parametrize("name", list(NO_GOLD))
def test_no_gold_or_broken_user_files_are_one_line_errors_or_read_right(tmp_path, name):
    from moco.tasks.user_data import load_user_data

    fname, raw, fields, words = NO_GOLD[name]
    p = tmp_path / fname
    p.write_bytes(raw)
    base = {"question": "q", "choices": ["o1", "o2"], "answer": "right"} if fname.endswith(("csv",)) else {}
    if words is None:  # the BOM: the first column is found, every gold is read
        t = load_user_data(p, name="x", task_type="multiple_choice", fields={**base, **fields})
        assert [e.answer for e in t.test] == ["B"]
    else:
        with pytest.raises(DataError, match=re.escape(words)) as e:
            load_user_data(p, name="x", task_type="multiple_choice", fields={**base, **fields})
        assert "\n" not in str(e.value)
    tally("bad inputs tried")


def test_moco_json_rows_without_gold_are_skipped_and_reported(tmp_path):
    rows = [GOOD_MC, {"question": "no gold?", "choices": {"A": "x", "B": "y"}},
            {"question": "gold under output?", "choices": {"A": "x", "B": "y"}, "output": "A"},
            {"question": "null gold?", "choices": {"A": "x", "B": "y"}, "answer": None}]
    p = tmp_path / "mc.json"
    p.write_text(json.dumps({"task_type": "multiple_choice", "test": rows}))
    t = load_moco_json(p)
    assert [e.input for e in t.test] == ["2+2?"]
    lines = [pr.line() for pr in t.problems]
    assert "test[1].answer: missing gold answer (skipped)" in lines
    assert any(x.startswith("test[2].answer: missing gold answer (the row has 'output'") for x in lines)
    assert "test[3].answer: missing gold answer (skipped)" in lines
    p.write_text(json.dumps({"task_type": "multiple_choice", "test": rows[1:]}))  # no row has a gold
    with pytest.raises(DataError, match=r"no usable test rows; first problem: test\[0\].answer: missing gold"):
        load_moco_json(p)
    p.write_text(json.dumps({"task_type": "exact_match", "test": [{"input": "q", "output": []}, {"input": "r", "output": "1"}]}))
    assert [e.input for e in load_moco_json(p).test] == ["r"]  # an empty list of golds is no gold
    tally("bad inputs tried", 4)


def test_the_last_guard_refuses_an_objective_task_with_an_item_without_gold():
    from moco.tasks.base import Example, Task
    from moco.tasks.checks import check_task

    ex = [Example("1", 0, "test", "p", "q", "A", {"A": "x", "B": "y"}), Example("2", 1, "test", "p", "q", None, {"A": "x", "B": "y"})]
    with pytest.raises(DataError, match=r"test\[1\] \(id '2'\) has no gold answer"):
        check_task(Task("t", "multiple_choice", [], ex))
    check_task(Task("t", "multiple_choice", [], ex, generation_only=True))  # responses only: nothing is scored
    with pytest.raises(DataError, match="has no gold answer"):
        check_task(Task("t", "exact_match", [], [Example("1", 0, "test", "p", "q", ["  "])]))
    tally("bad inputs tried", 2)


def test_a_task_type_override_cannot_make_gold_less_rows_scored(tmp_path):
    from moco.tasks.registry import load_task

    p = tmp_path / "gen.json"
    p.write_text(json.dumps({"task_type": "generation", "test": [{"input": "Write a poem."}]}))
    cfg = parse_config({"method": "single_model", "models": ["scripted:a"],
                        "task": {"name": str(p), "task_type": "exact_match"}})
    with pytest.raises(DataError, match="has no gold answer"):
        load_task(cfg.task)
    tally("bad inputs tried")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_refuses_a_latin1_csv_in_one_line(tmp_path, command):
    import subprocess
    import sys

    from serve_util import moco_env

    data = tmp_path / "quiz.csv"
    data.write_bytes("question,o1,o2,answer\nCaf\xe9 ou th\xe9?,caf\xe9,th\xe9,A\n".encode("latin-1"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: single_model\nmodels: [scripted:a]\ntask:\n  name: quiz\n  path: {data}\n"
                   "  task_type: multiple_choice\n  fields: {choices: [o1, o2]}\n")
    args = [command, str(cfg)] + (["--out", str(tmp_path / "run")] if command == "run" else [])
    r = subprocess.run([sys.executable, "-m", "moco", *args], env=moco_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not UTF-8 text (byte 0xe9" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
    tally("bad inputs tried")
