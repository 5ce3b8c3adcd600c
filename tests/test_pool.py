"""Model pool: pseudo-experts share weights, copies sample differently, placement, budgets, bad specs."""
from __future__ import annotations

import pytest

from moco.config import HardwareSettings, ModelSpec
from moco.errors import ConfigError, ModelError
from moco.models.pool import ModelPool, check_spec


def _specs(*items):
    return [ModelSpec(**i) if isinstance(i, dict) else ModelSpec(model=i) for i in items]


def test_pseudo_experts_share_one_backend_and_copies_get_replicas(tiny_models):
    m = str(tiny_models[0])
    pool = ModelPool(_specs({"model": m, "role_prompt": "math"}, {"model": m, "role_prompt": "geo"}, m, m))
    keys = {h.backend_key for h in pool.handles}
    assert len(keys) == 1
    assert pool.backend(0) is pool.backend(1) is pool.backend(3)
    assert [h.replica_offset for h in pool.handles] == [0, 0, 0, 1]
    assert [h.name for h in pool.handles] == ["tiny0", "tiny0#2", "tiny0#3", "tiny0#4"]


def test_loaded_once_per_process(tiny_models):
    m = str(tiny_models[1])
    a = ModelPool(_specs(m)).backend(0)
    b = ModelPool(_specs(m)).backend(0)
    assert a is b


def test_gpu_placement_round_robin_by_distinct_weights(tiny_models):
    pool = ModelPool(_specs(str(tiny_models[0]), str(tiny_models[1]), str(tiny_models[0]), str(tiny_models[2])),
                     HardwareSettings(gpu_ids=[2, 5]))
    assert [pool.device_for(h) for h in pool.handles] == ["cuda:2", "cuda:5", "cuda:2", "cuda:2"]
    assert ModelPool(_specs(str(tiny_models[0]))).device_for(ModelPool(_specs(str(tiny_models[0]))).handles[0]) == "cpu"


def test_memory_budget_refuses_before_loading(tiny_models):
    pool = ModelPool(_specs(str(tiny_models[2])), HardwareSettings(memory_budget_gb=1e-6))
    with pytest.raises(ModelError, match="more than memory_budget_gb"):
        pool.backend(0)


def test_bad_model_specs(tmp_path):
    with pytest.raises(ModelError, match="model path not found: ./nope"):
        check_spec(ModelSpec(model="./nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        check_spec(ModelSpec(model=str(tmp_path / "empty")))
    with pytest.raises(ModelError, match="unknown model 'smollm2-135m-instruc' \\(did you mean 'smollm2-135m-instruct'\\?\\)"):
        check_spec(ModelSpec(model="smollm2-135m-instruc"))
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        check_spec(ModelSpec(model="nobody/no-such-model-xyz"))
    with pytest.raises(ModelError, match="sentence encoder"):
        check_spec(ModelSpec(model="all-minilm-l6-v2"))


def test_duplicate_explicit_names_rejected():
    with pytest.raises(ConfigError, match="duplicate model name 'x'"):
        ModelPool(_specs({"model": "scripted:a", "name": "x"}, {"model": "scripted:b", "name": "x"}))
    pool = ModelPool(_specs("scripted:a", "scripted:b"))
    with pytest.raises(ConfigError, match="no model named 'c'"):
        pool.handle("c")
    with pytest.raises(ConfigError, match="out of range"):
        pool.handle(5)
