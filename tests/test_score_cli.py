"""`moco score` and `moco list tasks`: responses scored outside a run give the same metrics as the run."""
from __future__ import annotations

import json

from test_cli import moco, _write


def test_score_cli_matches_the_run(tmp_path, data_dir):
    env = {"MOCO_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    cfg = {"method": "single_model", "task": {"name": "gsm8k", "test_limit": 12, "dev_limit": 0},
           "models": [{"model": "scripted:a", "script": {"rules": [{"match": "Paul", "reply": "#### 112"}],
                                                          "default": "The answer is 7."}}],
           "decoding": {"temperature": 0.0}}
    r = moco("run", _write(tmp_path, "c.json", cfg), "--out", tmp_path / "run", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    run_m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": p["id"], "response": p["output"]}) + "\n" for p in
                             map(json.loads, (tmp_path / "run" / "predictions.jsonl").read_text().splitlines())))
    r = moco("score", "--task", "gsm8k", "--predictions", preds, "--out", tmp_path / "scored", env=env)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    for key in ("score", "ci95", "n", "unparsed", "failed", "strict_score", "scorer", "metric"):
        assert m[key] == run_m[key], key
    assert m["n"] == 12 and m["missing"] == 1000 - 12 and "gsm8k (test, 12 of 1000 items)" in r.stdout
    rows = [json.loads(x) for x in (tmp_path / "scored" / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"id", "output", "extracted", "score"} <= set(rows[0])


def test_score_cli_errors_are_one_line(tmp_path, data_dir):
    env = {"MOCO_DATA_DIR": str(data_dir)}
    preds = _write(tmp_path, "p.jsonl", json.dumps({"id": "nope", "response": "x"}) + "\n")
    r = moco("score", "--task", "gsm8k", "--predictions", preds, env=env)
    assert r.returncode == 2 and "line 1: no item with id 'nope' in this split" in r.stderr
    dup = _write(tmp_path, "d.jsonl", json.dumps({"id": "1852", "response": "x"}) + "\n")
    task = json.loads((data_dir / "math.json").read_text())
    ids = [row["id"] for row in task["test"]]
    dup_id = next(i for i in ids if ids.count(i) > 1)
    dup.write_text(json.dumps({"id": dup_id, "response": "x"}) + "\n")
    r = moco("score", "--task", "math", "--predictions", dup, env=env)
    assert r.returncode == 2 and "is duplicated in this dataset; give the item's 'index'" in r.stderr
    r = moco("score", "--task", "coconot", "--predictions", _write(tmp_path, "c.jsonl", '{"id": 1, "response": "no"}\n'),
             env=env)
    assert r.returncode == 2 and "needs a model for the role 'judge': pass --judge MODEL" in r.stderr


def test_list_tasks_shows_every_dataset_with_its_scorer(data_dir):
    r = moco("list", "tasks", env={"MOCO_DATA_DIR": str(data_dir), "COLUMNS": "250"})
    assert r.returncode == 0
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[2:] if ln.strip() and len(ln.split()) > 4}
    assert len(set(lines) & {p.stem for p in data_dir.glob("*.json")}) == 32 and "moco_demo" in lines
    assert "numeric_match" in lines["gsm8k"] and "math_equivalence" in lines["math"]
    assert "refusal_judge" in lines["coconot"] and "role judge" in lines["coconot"]
    assert "reward_model_score" in lines["alpacaeval"] and "code_execution" in lines["humaneval"]
    assert "all correct per question_id" in lines["culturebench"] and "2454" in lines["culturebench"]


def _mc_task(tmp_path):
    rows = [{"id": f"q{i}", "question": f"{i}+1?", "choices": {"A": str(i + 1), "B": str(i + 2)}, "answer": "A"}
            for i in range(3)]
    return _write(tmp_path, "mc.json", {"task_type": "multiple_choice", "test": rows})


BAD_INDEX = [1.9, True, False, "abc", "1", [1], {"i": 1}, 1e400]


def test_index_must_be_a_whole_number_never_paired_by_coercion(tmp_path):
    import pytest

    from moco.errors import DataError
    from moco.scoring.predictions import match, read_predictions
    from moco.tasks.moco_json import load_moco_json
    from reliability import tally

    task = load_moco_json(_mc_task(tmp_path))
    for bad in BAD_INDEX:
        p = _write(tmp_path, "p.jsonl", json.dumps({"index": bad, "response": "The answer is (A)"}) + "\n")
        with pytest.raises(DataError, match=r"p.jsonl: line 1: field 'index': must be a whole number") as e:
            match(task.test, read_predictions(p), p)
        assert "\n" not in str(e.value)
        tally("bad inputs tried")
    p = _write(tmp_path, "ok.jsonl", json.dumps({"index": 1, "response": "x"}) + "\n")
    assert [ex.id for ex, _ in match(task.test, read_predictions(p), p)] == ["q1"]


def test_score_cli_one_line_for_a_bad_index_and_no_interval_from_one_item(tmp_path):
    task = _mc_task(tmp_path)
    r = moco("score", "--task", task, "--predictions",
             _write(tmp_path, "p.jsonl", '{"index": "abc", "response": "(A)"}\n'), "--out", tmp_path / "s")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "field 'index': must be a whole number" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "s").exists()
    r = moco("score", "--task", task, "--predictions",
             _write(tmp_path, "one.jsonl", '{"index": 0, "response": "The answer is (A)"}\n'), "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    assert "no 95% CI from 1 item" in r.stdout and "95% CI 1.000" not in r.stdout


def test_score_cli_reads_and_writes_through_the_typed_schema(tmp_path):
    """Each line read is a records_schema.ResponseRecord and what is written a ScoredRecord / PredictionRecord:
    a line that does not fit is one line naming the file, the line and the field; nothing is written."""
    from moco.records_schema import SCHEMA_VERSION, PredictionRecord, ScoredRecord

    task = _mc_task(tmp_path)
    bad = {"r.jsonl": ('{"id": "q0", "response": 5}', "field 'response': Input should be a valid string"),
           "o.jsonl": ('{"id": "q0", "output": ["A"]}', "field 'output': Input should be a valid string"),
           "n.jsonl": ('{"id": "q0"}', "field 'response': missing"),
           "i.jsonl": ('{"response": "(A)"}', "field 'id': missing"),
           "d.jsonl": ('{"id": {"q": 0}, "response": "(A)"}', "field 'id.str': Input should be a valid string")}
    for name, (line, msg) in bad.items():
        r = moco("score", "--task", task, "--predictions", _write(tmp_path, name, line + "\n"), "--out", tmp_path / "s")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (name, r.stderr)
        assert f"{name}: line 1: {msg}" in r.stderr, (name, r.stderr)
        assert not (tmp_path / "s").exists()
    good = _write(tmp_path, "g.jsonl", '{"id": "q0", "response": "The answer is (A)"}\n'
                                       '{"index": 1, "output": "The answer is (B)", "extra": 1}\n')
    r = moco("score", "--task", task, "--predictions", good, "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    rec = ScoredRecord.model_validate(m)
    assert m["schema_version"] == SCHEMA_VERSION and rec.split == "test" and rec.missing == 1 and rec.n == 2
    assert rec.score == 0.5 and rec.ci95 is not None and "(test, 2 of 3 items): accuracy 0.500" in r.stdout
    rows = [PredictionRecord.model_validate_json(x) for x in (tmp_path / "s" / "scores.jsonl").read_text().splitlines()]
    assert [(x.id, x.score) for x in rows] == [("q0", 1.0), ("q1", 0.0)]
