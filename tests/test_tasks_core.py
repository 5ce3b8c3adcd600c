"""Task loading: the built-in demo task, MoCo JSON files, repairs of known defects, row-level errors."""
from __future__ import annotations

import json

import pytest

from moco.errors import ConfigError, DataError
from moco.tasks.moco_json import load_moco_json
from moco.tasks.registry import available_tasks, resolve_task


def test_builtin_demo_task():
    t = resolve_task("moco_demo").loader()
    assert t.task_type == "multiple_choice" and len(t.dev) == 16 and len(t.test) == 48
    ex = t.test[0]
    assert ex.answer in ex.choices and len(ex.choices) == 4
    assert ex.prompt.endswith("Answer in one short sentence.")  # open format: options are not shown
    assert ex.choices[ex.answer] not in ex.prompt
    assert len({e.id for e in t.dev + t.test}) == 64


def test_data_dir_tasks_listed(data_dir):
    tasks = available_tasks(str(data_dir))
    assert {"agieval_tiny", "gsm8k", "mmlu_redux", "moco_demo"} <= set(tasks)
    t = tasks["agieval_tiny"].loader()
    assert len(t.dev) == 40 and len(t.test) == 40 and t.domain == "reasoning"
    assert t.test[0].prompt.rstrip().endswith('in the form "The answer is (X)".')


def test_unknown_task_suggests(sample_data):
    with pytest.raises(ConfigError, match="unknown task 'agieval_tinny' \\(did you mean 'agieval_tiny'\\?\\)"):
        resolve_task("agieval_tinny", str(sample_data))


def test_missing_data_dir_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="data directory not found"):
        resolve_task("x", str(tmp_path / "nope"))


def test_arc_numeric_keys_are_repaired_and_reported(data_dir):
    t = load_moco_json(data_dir / "arc_challenge.json")
    numeric = [p for p in t.problems if "numeric option keys" in p.problem]
    assert len(numeric) >= 22
    row = next(e for e in t.test if e.index == numeric[-1].row and e.split == numeric[-1].split)
    assert set(row.choices) <= set("ABCDE") and row.answer in row.choices


def test_tablemwp_id_key_is_repaired(data_dir):
    t = load_moco_json(data_dir / "tablemwp_multiple_choice.json")
    fixed = [p for p in t.problems if "re-keyed" in p.problem]
    assert len(fixed) >= 40
    assert all(set(e.choices) <= set("ABCDE") and e.answer in e.choices for e in t.dev + t.test)


def test_duplicate_ids_are_reported(data_dir):
    t = load_moco_json(data_dir / "math.json")
    assert any(p.field == "id" and "duplicated ids" in p.problem for p in t.problems)
    assert len({e.uid for e in t.test}) == len(t.test)  # items are told apart by position


def test_malformed_rows_are_skipped_with_row_and_field(tmp_path):
    data = {"task_type": "multiple_choice", "dev": [], "test": [
        {"id": 1, "question": "ok?", "choices": {"A": "yes", "B": "no"}, "answer": "A"},
        {"id": 2, "question": "", "choices": {"A": "x", "B": "y"}, "answer": "A"},
        {"id": 3, "question": "q", "choices": {"A": "x"}, "answer": "A"},
        {"id": 4, "question": "q", "choices": {"A": "x", "B": "y"}, "answer": "Z"},
        "not an object",
    ]}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    t = load_moco_json(p)
    assert [e.id for e in t.test] == ["1"]
    lines = [pr.line() for pr in t.problems]
    assert "test[1].question: missing or empty (skipped)" in lines
    assert "test[2].choices: missing or fewer than 2 options (skipped)" in lines
    assert any(line.startswith("test[3].answer: gold 'Z' is not one of the options") for line in lines)
    assert "test[4].*: row is a str, not an object (skipped)" in lines


def test_unusable_files_raise_one_line(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON at line 1"):
        load_moco_json(p)
    p.write_text(json.dumps({"task_type": "exact_match", "test": [{"input": "q"}]}))
    with pytest.raises(DataError, match="no usable test rows; first problem: test\\[0\\].output: missing gold"):
        load_moco_json(p)
    p.write_text(json.dumps({"test": []}))
    with pytest.raises(DataError, match="no task_type"):
        load_moco_json(p)
