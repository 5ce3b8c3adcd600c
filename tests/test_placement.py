"""GPU placement decisions with torch.cuda mocked: device, dtype, device maps restricted to gpu_ids, and
which GPU each model of a pool lands on. (No GPU here: these test the decisions, not CUDA itself.)"""
from __future__ import annotations

import re

import pytest
import torch

from moco.config import HardwareSettings, ModelSpec
from moco.errors import ModelError
from moco.models import placement
from moco.models.pool import ModelPool

GB = 2**30


@pytest.fixture
def fake_gpus(monkeypatch):
    """Four visible GPUs: 0 and 1 are Ampere (bf16), 2 and 3 are Volta (no bf16); 40 GB free on each."""
    capability = {0: (8, 0), 1: (8, 6), 2: (7, 0), 3: (7, 0)}
    free = {0: 40 * GB, 1: 40 * GB, 2: 40 * GB, 3: 10 * GB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability[i])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (free[i], 80 * GB))
    return capability


def test_dtype_bf16_only_where_the_gpu_supports_it_fp32_on_cpu(fake_gpus):
    assert placement.pick_dtype("auto", "cpu") is torch.float32
    assert placement.pick_dtype("auto", "cuda:0") is torch.bfloat16
    assert placement.pick_dtype("auto", "cuda:1") is torch.bfloat16
    assert placement.pick_dtype("auto", "cuda:2") is torch.float16  # the device asked about, not device 0
    assert placement.pick_dtype("auto", "cuda") is torch.bfloat16
    assert placement.pick_dtype("float32", "cuda:0") is torch.float32  # explicit wins
    assert placement.dtype_name("auto", "cuda:3") == "float16"


def test_device_auto_and_missing_gpu(fake_gpus, monkeypatch):
    assert placement.pick_device(None) == "cuda:0"
    assert placement.pick_device("cuda:2") == "cuda:2"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement.pick_device("auto") == "cpu"
    with pytest.raises(ModelError, match="no CUDA GPU is visible"):
        placement.pick_device("cuda:1")


def test_big_model_map_uses_only_the_configured_gpus_with_headroom(fake_gpus):
    kw = placement.big_model_kwargs([1, 3], need_gb=30)
    assert kw["device_map"] == "auto"
    assert set(kw["max_memory"]) == {1, 3}  # GPUs 0 and 2 are visible but not ours: never used
    assert kw["max_memory"][1] == int(40 * GB * placement.HEADROOM)
    assert kw["max_memory"][3] == int(10 * GB * placement.HEADROOM)
    with pytest.raises(ModelError, match="needs 60.0 GB, more than the 42.5 GB usable on GPUs \\[1, 3\\]"):
        placement.big_model_kwargs([1, 3], need_gb=60)
    with pytest.raises(ModelError, match="needs hardware.gpu_ids"):
        placement.big_model_kwargs([], need_gb=1)


def test_accelerate_keeps_the_map_on_those_gpus(fake_gpus):
    """accelerate's own reading of our max_memory: only the named GPUs, in order, no CPU offload."""
    from accelerate.utils import get_max_memory

    kw = placement.big_model_kwargs([3, 1])
    assert list(get_max_memory(dict(kw["max_memory"]))) == [1, 3]


def test_pool_sends_big_model_mode_to_hf_with_the_map(fake_gpus, monkeypatch, tiny_models):
    """The pool's load call under big_model_mode: device_map over gpu_ids, inputs on the first of them."""
    seen = {}

    class FakeHF:
        def __init__(self, source, **kw):
            seen.update(kw, source=source)
            self.fingerprint = kw["fingerprint"]

        def close(self):
            pass

    monkeypatch.setattr("moco.models.hf.HFBackend", FakeHF)
    pool = ModelPool([ModelSpec(model=str(tiny_models[0]), name="big-for-test")], HardwareSettings(gpu_ids=[2, 3], big_model_mode=True,
                                                                                              batch_size=7))
    pool.backend(0)
    try:
        assert seen["device_map"] == "auto" and set(seen["max_memory"]) == {2, 3}
        assert seen["device"] == "cuda:2" and seen["batch_size"] == 7
        assert "|float16|cuda" in seen["fingerprint"]  # GPU 2 has no bf16: fp16, and the cache key says so
    finally:
        from moco.models.pool import unload_all
        unload_all()


def test_models_spread_over_gpus_and_dtype_per_gpu(fake_gpus, tiny_models):
    a, b, c = (str(p) for p in tiny_models)
    pool = ModelPool([ModelSpec(model=a), ModelSpec(model=b), ModelSpec(model=a, role_prompt="x"), ModelSpec(model=c),
                      ModelSpec(model=b, device="cuda:3")], HardwareSettings(gpu_ids=[0, 2]))
    devices = [pool.device_for(h) for h in pool.handles]
    assert devices == ["cuda:0", "cuda:2", "cuda:0", "cuda:0", "cuda:3"]  # distinct weights round-robin
    fps = [pool.fingerprint(h).split("|", 1)[1] for h in pool.handles]
    assert fps == ["bfloat16|cuda", "float16|cuda", "bfloat16|cuda", "bfloat16|cuda", "float16|cuda"]


@pytest.mark.parametrize("where, extra", [
    ("an OpenAI-compatible endpoint", {"endpoint": {"base_url": "http://127.0.0.1:9/v1"}}),
    ("Ray actors (hardware.ray)", {}),
])
def test_methods_needing_logits_are_refused_on_chat_apis_and_ray_before_loading(where, extra, tiny_models, tiny_task):
    from moco.config import parse_config
    from moco.errors import ConfigError
    from moco.context import Output
    from moco.methods.registry import _REGISTRY, MethodParams, method
    from moco.models.base import Capabilities
    from moco.runner import plan

    class _P(MethodParams):
        pass

    @method("_test_fusion_needs_logits", params=_P, level="logit", summary="test only",
            needs=Capabilities(chat=True, logits=True))
    async def _fusion(ctx, params):  # pragma: no cover - plan() refuses it
        return [Output("") for _ in ctx.task.test]

    try:
        cfg = {"method": "_test_fusion_needs_logits", "task": {"name": str(tiny_task)},
               "models": [{"model": str(tiny_models[0]), "name": "m", **extra}]}
        if not extra:
            cfg["hardware"] = {"ray": {"replicas": 2}}
        with pytest.raises(ConfigError, match=re.escape(f"needs logits from every model; model 'm' ({where}) cannot")):
            plan(parse_config(cfg))
        plan(parse_config({**cfg, "models": [{"model": str(tiny_models[0]), "name": "m"}], "hardware": {}}))
    finally:
        _REGISTRY.pop("_test_fusion_needs_logits", None)
