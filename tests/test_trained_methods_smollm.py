"""The three training methods end to end on the embedded SmolLM2, from their example configs (slow: each
trains several LoRA adapters on the real model; minutes on 2 cores)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from moco.config import load_config
from moco.runner import run_experiment

pytestmark = [pytest.mark.slow, pytest.mark.smollm, pytest.mark.timeout(3600)]
EXAMPLES = {
    "text_multiagent_finetuning": "multiagent_finetuning_pseudo_experts.yaml",
    "text_sparta": "sparta_pseudo_experts.yaml",
    "text_agglm": "agglm_pseudo_experts.yaml",
}


@pytest.mark.parametrize("method", sorted(EXAMPLES))
def test_example_runs_end_to_end_and_answers_with_trained_models(method, smollm_dir, data_dir, cache, tmp_path):
    from conftest import REPO

    cfg = load_config(REPO / "examples" / EXAMPLES[method])
    res = run_experiment(cfg, tmp_path / "run", cache=cache, data_dir=str(data_dir))
    run = res.run_dir
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
    assert len(res.predictions) == cfg.task.test_limit
    m = res.metrics
    assert set(m["phases"]) == {"dev", "test"} and m["training"]["runs"] >= 1 and m["training"]["steps"] >= 1
    trained = {a["label"] for a in m["training"]["adapters"]}
    test_models = {json.loads(x)["model"] for x in (run / "calls.jsonl").read_text().splitlines()
                   if json.loads(x)["phase"] == "test"}
    assert test_models & trained  # trained adapters answer at test time
    for a in m["training"]["adapters"]:  # adapters live in the run directory
        assert (run / "artifacts").resolve() in Path(a["adapter"]).resolve().parents
