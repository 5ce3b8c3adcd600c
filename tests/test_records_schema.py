"""The typed records (moco.records_schema): what the runner and a sweep write parses with the schema the
analyses read through, every declared field present; a record that does not fit is a one-line error."""
from __future__ import annotations

import json

import pytest

from helpers import scripted_config
from moco.analysis import load
from moco.analysis.records import load_run
from moco.cache import ResponseCache
from moco.errors import ConfigError
from moco.records_schema import (SCHEMA_VERSION, IndexRecord, MetricsRecord, PredictionRecord, read_record,
                                 write_record)
from moco.runner import run_experiment
from moco.testing import mc_dataset

# the declared fields the runner writes for every scored run: renaming or dropping one must fail here
RUNNER_FIELDS = {"schema_version", "method", "task", "task_type", "scorer", "metric", "score", "ci95", "n",
                 "unparsed", "failed", "strict_score", "n_test", "models", "wall_s", "total", "phases",
                 "per_model_test", "best_single_test", "chosen_model"}
PREDICTION_FIELDS = {"id", "index", "prompt", "gold", "output", "failed", "extracted", "score", "strict_score", "trace"}


@pytest.fixture
def mc_task(tmp_path):
    p = tmp_path / "mc.json"
    p.write_text(json.dumps(mc_dataset(n_dev=2, n_test=6, name="mc")))
    return p


def test_runner_writes_what_the_schema_declares(mc_task, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    run_experiment(scripted_config("single_model", mc_task, "ab"), tmp_path / "run", cache=cache)
    cache.close()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["schema_version"] == SCHEMA_VERSION
    assert RUNNER_FIELDS <= set(metrics) and RUNNER_FIELDS <= set(MetricsRecord.model_fields)
    rec = MetricsRecord.model_validate(metrics)
    assert rec.per_model_test and rec.best_single_test == max(rec.per_model_test.values())
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(PREDICTION_FIELDS <= set(r) for r in rows)
    assert all(PredictionRecord.model_validate(r).trace["scores"] for r in rows)
    run = load_run(tmp_path / "run")
    assert run.record.score == run.score == metrics["score"] and len(run.predictions()) == 6


def test_write_refuses_a_record_of_the_wrong_shape():
    with pytest.raises(Exception, match="score"):
        write_record(MetricsRecord, {"method": "m", "task": "t", "score": "high"})
    with pytest.raises(Exception, match="ci95"):
        write_record(MetricsRecord, {"method": "m", "task": "t", "score": 0.5, "ci95": [0.1]})
    assert write_record(PredictionRecord, {"id": "q", "index": 0}, stamp=False) == {"id": "q", "index": 0}
    assert write_record(IndexRecord, {"cells": []})["schema_version"] == SCHEMA_VERSION


def test_reading_a_bad_or_newer_record_is_one_line(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"method": "m", "task": "t", "score": "abc"}))
    with pytest.raises(ConfigError, match=r"metrics.json: field 'score'"):
        load([d])
    (d / "metrics.json").write_text(json.dumps({"method": "m", "task": "t", "score": 0.5,
                                                "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ConfigError, match="newer than this MoCo reads"):
        load([d])
    (d / "metrics.json").write_text(json.dumps({"method": "m", "task": "t", "score": 0.5}))  # before the schema
    (d / "predictions.jsonl").write_text(json.dumps({"id": "q", "index": "first"}) + "\n")
    with pytest.raises(ConfigError, match=r"predictions.jsonl:1: field 'index'"):
        load_run(d).predictions()
    with pytest.raises(ConfigError, match="field 'cells.0.status'"):
        read_record(IndexRecord, {"cells": [{"uses": []}]}, "index.json")


def test_usage_blocks_are_typed_too():
    """total and each phase are typed (moco.records_schema.Usage): the cost analysis reads them as fields."""
    ok = read_record(MetricsRecord, {"method": "m", "task": "t", "score": 0.5,
                                     "total": {"calls": 4, "tokens_in": 10, "tokens_out": 3},
                                     "phases": {"test": {"wall_s": 1.5, "per_model": {"a": {"tokens_in": 10}}}}}, "x")
    assert ok.total.calls == 4 and ok.total.generated_tokens == 0 and ok.phases["test"].per_model["a"]["tokens_in"] == 10
    with pytest.raises(ConfigError, match=r"^m.json: field 'total.calls': Input should be a valid integer"):
        read_record(MetricsRecord, {"method": "m", "task": "t", "score": 0.5, "total": {"calls": "many"}}, "m.json")
    with pytest.raises(ConfigError, match=r"field 'phases.dev.tokens_out': Input should be greater than or equal to 0"):
        read_record(MetricsRecord, {"method": "m", "task": "t", "score": 0.5, "phases": {"dev": {"tokens_out": -1}}},
                    "m.json")
