"""Routing methods end to end on the embedded SmolLM2 from the example configs (shrunk: few items, short outputs).

All are `slow` (about a CPU minute each, mostly loading; the default run covers the same steps on tiny HF
models and scripted backends): `pytest -m slow tests/test_api_routing_smollm.py`."""
from __future__ import annotations

from pathlib import Path

import pytest

from moco.config import load_config
from moco.runner import run_experiment

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _shrunk(name: str, **params):
    cfg = load_config(EXAMPLES / name)
    task = cfg.task.model_copy(update={"test_limit": 3, "dev_limit": 6})
    gen = cfg.decoding.model_copy(update={"max_new_tokens": 12})
    return cfg.model_copy(update={"task": task, "decoding": gen, "params": {**cfg.params, **params}})


def _common(res, n_test: int = 3) -> dict:
    m = res.metrics
    assert m["n_test"] == n_test and m["total"]["failed"] == 0
    assert {"dev", "test"} <= set(m["phases"]) and m["phases"]["test"]["tokens_out"] > 0
    assert sum(m["route_share"].values()) == pytest.approx(1.0)
    assert set(m["route_share"]) == set(m["models"])
    return m


@pytest.mark.smollm
@pytest.mark.slow
def test_cascade_example_on_smollm(smollm_dir, cache, tmp_path):
    cfg = _shrunk("api_cascade_pseudo_experts.yaml")  # 2 test, 4 dev items, 8 tokens
    cfg = cfg.model_copy(update={"task": cfg.task.model_copy(update={"test_limit": 2, "dev_limit": 4}),
                                 "decoding": cfg.decoding.model_copy(update={"max_new_tokens": 8})})
    res = run_experiment(cfg, tmp_path / "run", cache=cache)
    m = _common(res, n_test=2)
    assert m["cascade_order"] == ["brief", "plain", "careful"]  # costs [1, 4, 2]
    th = m["thresholds"]
    assert set(th) == {"brief", "plain"} and th["brief"] != th["plain"] and all(0 < t < 1 for t in th.values())
    assert m["phases"]["dev"]["calls"] == 2 * 4  # the last level needs no threshold
    for row in res.predictions:
        for v in row["trace"]["levels"]:
            assert 0 < v["confidence"] <= 1
            if v["threshold"] is not None:
                assert (v["decision"] == "accept") == (v["confidence"] >= v["threshold"])


@pytest.mark.smollm
@pytest.mark.slow
def test_prompt_routing_example_on_smollm(smollm_dir, cache, tmp_path):
    m = _common(run_experiment(_shrunk("api_prompt_routing_pseudo_experts.yaml"), tmp_path / "run", cache=cache))
    assert m["router"] in m["models"] and 0 <= m["router_parse_failures"] <= 3


@pytest.mark.smollm
@pytest.mark.slow
def test_graph_routing_example_on_smollm(smollm_dir, cache, tmp_path):
    m = _common(run_experiment(_shrunk("api_graph_routing_pseudo_experts.yaml", epochs=30), tmp_path / "run", cache=cache))
    assert m["graph"]["test_outcome_edges"] == 0 and m["graph"]["dev_outcome_edges"] == 6 * 3


@pytest.mark.smollm
@pytest.mark.slow
def test_trained_router_example_on_smollm(smollm_dir, cache, tmp_path):
    res = run_experiment(_shrunk("api_trained_router_pseudo_experts.yaml", epochs=1), tmp_path / "run", cache=cache)
    m = _common(res)
    assert m["router"] == "trained-router" and "+lora:" in m["router_fingerprint"]
    assert (res.run_dir / "artifacts" / "router_lora" / "adapter_config.json").exists()


@pytest.mark.smollm
@pytest.mark.slow
def test_router_eval_example_on_smollm(smollm_dir, cache, tmp_path):
    res = run_experiment(_shrunk("api_router_eval_pseudo_experts.yaml", decisions=[]), tmp_path / "run", cache=cache)
    m = _common(res)
    assert m["phases"]["dev"]["calls"] == 3 * 6 and m["phases"]["test"]["calls"] == 3 * 3
    assert (res.run_dir / "artifacts" / "router_eval.png").exists()
