"""The text-level methods end to end on the real embedded SmolLM2 (two questions, short outputs).

One cheap method runs by default (marked `smollm`); the others are `slow` (run with `-m slow`)."""
from __future__ import annotations

import json

import pytest

from moco.config import parse_config
from moco.runner import run_experiment

EXPERTS = [{"model": "smollm2-135m-instruct", "name": n, "role_prompt": p} for n, p in [
    ("geo", "You are a geography expert."), ("math", "You are a careful mathematician."), ("sci", "You are a scientist.")]]


def _run(method, params, tmp_path, cache, **extra):
    cfg = parse_config({"method": method, "task": {"name": "moco_demo", "test_limit": 2, "dev_limit": 2},
                        "models": EXPERTS, "params": params,
                        "decoding": {"max_new_tokens": 16, "temperature": 0.7}, "hardware": {"batch_size": 32}, "seed": 1, **extra})
    res = run_experiment(cfg, tmp_path / "run", cache=cache)
    m = res.metrics
    assert m["n"] == 2 and m["total"]["failed"] == 0 and m["total"]["generated_tokens"] > 0
    assert m["phases"]["test"]["calls"] > 0 and m["phases"]["test"]["wall_s"] > 0
    for f in ("config.yaml", "manifest.json", "calls.jsonl", "predictions.jsonl", "metrics.json"):
        assert (res.run_dir / f).exists()
    assert json.loads((res.run_dir / "manifest.json").read_text())["status"] == "finished"
    return res


@pytest.mark.smollm
def test_knowledge_card_on_smollm(smollm_dir, cache, tmp_path):
    res = _run("text_knowledge_card", {"knowledge_max_new_tokens": 24}, tmp_path, cache)
    tr = res.predictions[0]["trace"]
    assert set(tr["knowledge"]) == {"geo", "math", "sci"} and all(tr["knowledge"].values())
    assert tr["answerer"] in ("geo", "math", "sci") and tr["answerer_saw"] == ["geo", "math", "sci"]
    assert res.metrics["phases"]["dev"]["calls"] == 3 * 2 and res.metrics["phases"]["test"]["calls"] == 3 * 2 + 2


SLOW = [
    ("text_multiagent_feedback", {"rounds": 1, "feedback_count": 1}, lambda tr: len(tr["rounds"]) == 2),
    ("text_structure", {"structure": "star", "rounds": 1}, lambda tr: tr["rounds"][1]["geo"]["saw"] == ["math", "sci"]),
    ("text_slm_mux", {"samples_per_model": 2}, lambda tr: tr["chosen"] in ("geo", "math", "sci")),
    ("text_mixture_of_agents", {"layers": 2}, lambda tr: len(tr["layers"]) == 1),
    ("text_self_moa", {"samples": 2}, lambda tr: len(tr["samples"]) == 2),
    ("text_bbmas", {"max_iterations": 2, "max_num_retries": 0}, lambda tr: tr["conclusions"] and tr["ended_by"]),
    ("text_heterogeneous_swarms", {"population": 2, "max_iterations": 2, "ratio": 1.0},
     lambda tr: len(tr["graph"]["edges"]) == 2),
    ("text_llm_blender", {"top_k": 2, "ranker_max_new_tokens": 4}, lambda tr: len(tr["comparisons"]) == 6),
]


@pytest.mark.slow
@pytest.mark.parametrize("method, params, check", SLOW, ids=[m for m, _, _ in SLOW])
def test_method_on_smollm(method, params, check, smollm_dir, cache, tmp_path):
    res = _run(method, params, tmp_path, cache)
    assert all(check(row["trace"]) for row in res.predictions)


@pytest.mark.slow
def test_llm_blender_trains_ranker_and_fuser_on_smollm(smollm_dir, cache, tmp_path):
    params = {"top_k": 2, "ranker_max_new_tokens": 4, "train_ranker_on_dev": True, "train_fuser_on_dev": True,
              "sft_max_steps": 2, "ranker_sft_batch_size": 2, "ranker_sft_gradient_accumulation_steps": 1,
              "fuser_sft_batch_size": 2, "fuser_sft_gradient_accumulation_steps": 1, "lora_r": 4,
              "ranker_sft_learning_rate": 1e-4, "fuser_sft_learning_rate": 1e-4, "sft_max_length": 384}
    res = _run("text_llm_blender", params, tmp_path, cache)
    tr = res.metrics["training"]
    assert tr["fuser"]["steps"] == 2 and (res.run_dir / "artifacts" / "fuser_lora" / "adapter_config.json").exists()
    assert res.predictions[0]["trace"]["fuser"].endswith("+fuser-lora")
    assert res.metrics["phases"]["dev"]["wall_s"] > 0
