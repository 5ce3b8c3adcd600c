"""Reference-implementation configs of the routing methods are read with their key names."""
from __future__ import annotations

import pytest

from moco.config import parse_config
from moco.errors import ConfigError
from moco.runner import plan


def _ref(method: str, hp: dict, task) -> dict:
    return {"method": method, "task": str(task), "gpu_ids": [], "model_names": ["scripted:a", "scripted:b"],
            "hyperparameters": {"max_response_length": 32, "temperature": 0.7, "top_p": 0.9, "batch_size": 8, **hp}}


def test_reference_keys_map_to_params(tiny_task):
    p = plan(parse_config(_ref("api_cascade", {"mode": "just_ask", "percentage": 0.3}, tiny_task)))
    assert (p.params.mode, p.params.percentage) == ("just_ask", 0.3)
    p = plan(parse_config(_ref("api_graph_routing", {
        "embedding_model_name": "sentence-transformers/all-MiniLM-L6-v2", "model_descriptions": ["x", "y"],
        "scenario": "Cost First", "train_epochs": 50, "hidden_features": 8, "in_edges": 3,
        "split_ratio": [0.8, 0.1, 0.1], "train_mask_rate": 0.5}, tiny_task)))
    assert (p.params.encoder, p.params.scenario, p.params.epochs) == ("all-minilm-l6-v2", "cost_first", 50)
    assert p.params.val_fraction == pytest.approx(1 / 9)
    assert p.config.hardware.batch_size == 8  # the reference's batch_size is an engine resource
    p = plan(parse_config(_ref("api_trained_router", {"router_base_model": "Qwen/Qwen2.5-7B-Instruct",
                                                      "reward_model_name": "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
                                                      "reward_model_gpu_id": 1}, tiny_task)))
    assert p.params.router_base == "Qwen/Qwen2.5-7B-Instruct"
    assert (p.params.reward_model, p.params.reward_model_device) == ("Skywork/Skywork-Reward-Llama-3.1-8B-v0.2", "cuda:1")
    p = plan(parse_config(_ref("api_prompt_routing", {"model_descriptions": ["x", "y"]}, tiny_task)))
    assert p.params.model_descriptions == ["x", "y"]


def test_bad_reference_values_are_rejected(tiny_task):
    with pytest.raises(ConfigError, match="in_edges"):
        plan(parse_config(_ref("api_graph_routing", {"in_edges": 4}, tiny_task)))
    with pytest.raises(ConfigError, match="scenario"):
        plan(parse_config(_ref("api_graph_routing", {"scenario": "Fastest"}, tiny_task)))
    with pytest.raises(ConfigError, match="did you mean 'percentage'"):
        plan(parse_config(_ref("api_cascade", {"percentag": 0.3}, tiny_task)))
