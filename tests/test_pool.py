"""Model pool: pseudo-experts share weights, copies sample differently, placement, budgets, bad specs."""
from __future__ import annotations

import pytest

from moco.config import HardwareSettings, ModelSpec
from moco.errors import ConfigError, ModelError
from moco.models.pool import ModelPool, check_spec
from moco import aio


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


def test_memory_budget_refuses_before_loading(tiny_models, loads):
    pool = ModelPool(_specs(str(tiny_models[2])), HardwareSettings(memory_budget_gb=1e-6))
    with pytest.raises(ModelError, match="more than memory_budget_gb"):
        pool.backend(0)
    assert loads == {}


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


# ------------------------------------------------------------------ residency under a memory budget
@pytest.fixture
def loads(monkeypatch):
    """Counts real model loads (HFBackend constructions) by source folder; starts and ends with nothing resident."""
    from moco.models import hf
    from moco.models.pool import unload_all

    unload_all()
    counts: dict[str, int] = {}
    real = hf.HFBackend.__init__

    def counting(self, source, **kw):
        counts[source] = counts.get(source, 0) + 1
        real(self, source, **kw)

    monkeypatch.setattr(hf.HFBackend, "__init__", counting)
    yield counts
    unload_all()


def _size_gb(path) -> float:
    from moco.models.memory import estimate_gb

    return estimate_gb(path, "float32")


def test_lru_eviction_keeps_what_fits_and_never_reloads_a_resident_model(tiny_models, loads):
    from moco.models.pool import RESIDENT

    a, b, c = (str(p) for p in tiny_models)
    budget = 2.5 * _size_gb(tiny_models[0])  # two tiny models fit, three do not
    pool = ModelPool(_specs(a, b, c), HardwareSettings(memory_budget_gb=budget))
    first_a = pool.backend(0)
    pool.backend(1)
    assert pool.backend(0) is first_a  # a is used again: now b is the least recently used
    pool.backend(2)  # c needs room: b goes, a stays
    assert loads == {a: 1, b: 1, c: 1}
    assert pool.backend(0) is first_a and first_a.model is not None
    assert loads[a] == 1  # still resident: not reloaded
    pool.backend(1)  # b again: reloaded, and c (least recently used now) goes
    assert loads == {a: 1, b: 2, c: 1}
    resident = [k.split("|")[1] for k in RESIDENT.backends]
    assert resident == [a, b] and sum(RESIDENT.sizes.values()) <= budget


def test_pseudo_experts_count_once_against_the_budget(tiny_models, loads):
    from moco.models.pool import RESIDENT

    a, b = str(tiny_models[0]), str(tiny_models[1])
    budget = 2.5 * _size_gb(tiny_models[0])
    specs = _specs(*({"model": a, "role_prompt": r} for r in ("math", "law", "art")), b, {"model": b, "role_prompt": "x"})
    pool = ModelPool(specs, HardwareSettings(memory_budget_gb=budget))
    backends = [pool.backend(i) for i in range(len(specs))]
    assert backends[0] is backends[1] is backends[2] and backends[3] is backends[4]
    assert loads == {a: 1, b: 1} and len(RESIDENT.backends) == 2
    assert sum(RESIDENT.sizes.values()) == pytest.approx(2 * _size_gb(tiny_models[0]), rel=0.01)


def test_estimate_reads_safetensors_headers_and_config(tiny_models, tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from moco.models.memory import config_params, estimate_gb, safetensors_params

    exact = AutoModelForCausalLM.from_pretrained(tiny_models[0]).num_parameters()
    assert safetensors_params(tiny_models[0]) == exact
    config = json.loads((tiny_models[0] / "config.json").read_text())
    assert config_params(config) == exact  # the standard decoder layout, counted from the config alone
    assert estimate_gb(tiny_models[0], "bfloat16") == pytest.approx(exact * 2 / 2**30)
    # a 7B-shaped config (Mistral-7B: GQA, untied embeddings) without any weights on disk
    mistral = {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32000, "num_attention_heads": 32,
               "num_key_value_heads": 8, "intermediate_size": 14336, "tie_word_embeddings": False}
    assert config_params(mistral) == pytest.approx(7.24e9, rel=0.01)
    (tmp_path / "config.json").write_text(json.dumps(mistral))
    assert estimate_gb(tmp_path, "float32") == pytest.approx(7.24e9 * 4 / 2**30, rel=0.01)


def _fake_hub_snapshot(root, repo: str, files: dict) -> None:
    """The layout of the Hugging Face cache for one repo at one commit (what a past download leaves)."""
    import shutil

    folder = root / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    for name, src in files.items():
        shutil.copy(src, snap / name)


def test_hub_model_over_budget_is_refused_at_validate_without_loading(tiny_models, tmp_path, monkeypatch, loads):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    _fake_hub_snapshot(tmp_path, "someorg/tiny", {f: tiny_models[0] / f for f in ("config.json", "model.safetensors")})
    _fake_hub_snapshot(tmp_path, "someorg/config-only", {"config.json": tiny_models[0] / "config.json"})
    size = _size_gb(tiny_models[0])
    for repo in ("someorg/tiny", "someorg/config-only"):
        pool = ModelPool(_specs(repo), HardwareSettings(memory_budget_gb=size / 2))
        assert pool.estimate_gb(pool.handles[0]) == pytest.approx(size, rel=0.01)
        name = repo.split("/")[1]
        with pytest.raises(ModelError, match=f"model '{name}' needs 0.00 GB, more than memory_budget_gb"):
            pool.check()  # what `moco validate` runs
        with pytest.raises(ModelError, match="more than memory_budget_gb"):
            pool.backend(0)
    assert loads == {}  # nothing was ever loaded
    assert ModelPool(_specs("someorg/tiny"), HardwareSettings(memory_budget_gb=size * 2)).check() is None


def test_one_generate_call_over_more_models_than_fit_loads_each_once(tiny_models, loads, tiny_task):
    """The remote/local split of a generate call is decided from the specs: nothing is loaded ahead of its turn,
    so under a one-model budget each model of the call is loaded exactly once."""
    from moco.cache import NullCache
    from moco.config import parse_config
    from moco.context import Call, RunContext
    from moco.runner import plan
    from moco.trace import CallRecorder

    a, b = str(tiny_models[0]), str(tiny_models[1])
    cfg = parse_config({"method": "single_model", "task": {"name": str(tiny_task)},
                        "models": [{"model": a, "name": "a"}, {"model": b, "name": "b"}],
                        "hardware": {"memory_budget_gb": 1.5 * _size_gb(tiny_models[0])},
                        "generation": {"max_new_tokens": 2}})
    p = plan(cfg)
    assert not p.pool.is_remote(p.pool.handle("a"))
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=NullCache(), recorder=CallRecorder(None),
                     decoding=cfg.decoding)
    out = aio.run(ctx.generate([Call("a", "x"), Call("b", "y"), Call("a", "z")]))
    assert [r.model for r in out] == ["a", "b", "a"]
    assert loads == {a: 1, b: 1}
