"""A backend is one module plus one registry entry: this file is the module (a toy backend that answers the
prompt reversed), the fixture is the entry. A config names the kind in `backend:`, `moco.run` loads it through
the pool, and `runner.plan` checks its declared capabilities like those of the built-in kinds."""
from __future__ import annotations

import json

import pytest

import moco
from moco.config import ModelSpec, parse_config
from moco.errors import ConfigError, ModelError
from moco.models import backends
from moco.models.base import Capabilities, GenRequest, GenResult, chunk_plan
from moco.runner import plan


class ReversedEcho:
    """Replies with the last user message reversed."""

    capabilities = Capabilities(chat=True)

    def __init__(self, name: str, batch_size: int):
        self.fingerprint = f"reversed-echo:{name}"
        self.batch_size = batch_size
        self.batches: list[int] = []

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        return chunk_plan(len(requests), self.batch_size)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        self.batches.append(len(requests))
        out = []
        for r in requests:
            text = next(c for role, c in reversed(r.messages) if role == "user")[::-1]
            out.append(GenResult(text, tokens_in=len(text), tokens_out=len(text)))
        return out

    def close(self) -> None:
        return None


LOADED: list[ReversedEcho] = []


def load(spec: ModelSpec, ctx: backends.PoolContext) -> ReversedEcho:
    b = ReversedEcho(spec.model, ctx.hardware.batch_size)
    LOADED.append(b)
    return b


@pytest.fixture
def reversed_echo():
    backends.register("reversed_echo", load, summary="the prompt, reversed (a test plug-in)",
                      capabilities=Capabilities(chat=True))
    yield
    backends.unregister("reversed_echo")
    from moco.models.pool import unload_all

    unload_all()


def _config(task, method="single_model", models=("rev",), **extra):
    return {"method": method, "task": {"name": str(task)}, "seed": 0, **extra,
            "models": [{"model": m, "backend": "reversed_echo"} for m in models],
            "decoding": {"max_new_tokens": 64}, "hardware": {"batch_size": 3}}


def test_a_registered_backend_runs_a_method_through_moco_run(reversed_echo, tiny_task, tmp_path):
    LOADED.clear()
    res = moco.run(_config(tiny_task), out=tmp_path / "run", cache=False)
    preds = res.predictions
    assert len(preds) == 8 and all(p["output"] == p["prompt"][::-1] for p in preds)
    assert len(LOADED) == 1 and LOADED[0].batches == [3, 3, 2]  # loaded once, batched by hardware.batch_size
    man = json.loads((res.run_dir / "manifest.json").read_text())
    assert man["fingerprints"] == {"rev": "reversed-echo:rev"}


def test_its_declared_capabilities_are_checked_by_the_plan(reversed_echo, tiny_task):
    with pytest.raises(ConfigError, match=r"needs logits from every model; model 'rev' \(reversed_echo backend\) "
                                          r"cannot provide it"):
        plan(parse_config(_config(tiny_task, "logit_fusion", ("rev", "rev2"))))
    p = plan(parse_config(_config(tiny_task)))
    assert not p.pool.is_remote(p.pool.handles[0]) and p.pool.estimate_gb(p.pool.handles[0]) == 0.0


def test_an_unknown_kind_is_one_line_listing_the_registered_ones(reversed_echo, tiny_task):
    with pytest.raises(ConfigError) as e:
        parse_config({**_config(tiny_task), "models": [{"model": "m", "backend": "reversed_ecko"}]})
    msg = str(e.value)
    assert "\n" not in msg and "unknown backend 'reversed_ecko' (did you mean 'reversed_echo'?)" in msg
    assert "(backends: auto, hf, openai, reversed_echo, scripted)" in msg  # ray and vision are routed, not named
    backends.unregister("reversed_echo")
    with pytest.raises(ConfigError, match="unknown backend 'reversed_echo'"):
        parse_config(_config(tiny_task))
    backends.register("reversed_echo", load, summary="again", capabilities=Capabilities(chat=True))


def test_a_missing_optional_package_names_the_extra_to_install(tiny_task):
    backends.register("needs_extra", "moco_no_such_package.backend:load", summary="test", extra="serve",
                      capabilities=Capabilities(chat=True))
    try:
        with pytest.raises(ModelError, match=r"^the needs_extra backend needs the optional package "
                                             r"'moco_no_such_package': pip install 'moco-collab\[serve\]'$"):
            moco.run({**_config(tiny_task), "models": [{"model": "x", "backend": "needs_extra"}]}, in_memory=True,
                     cache=False)
    finally:
        backends.unregister("needs_extra")


def test_built_in_kinds_declare_what_their_backends_report():
    from moco.models.scripted import ScriptedBackend

    spec = ModelSpec(model="scripted:a")
    assert backends.capabilities_of("scripted", spec) == Capabilities(chat=True, seeded=True)
    assert ScriptedBackend("a").capabilities.missing(backends.capabilities_of("scripted", spec)) == []
    seeded = ModelSpec(model="m", endpoint={"base_url": "http://127.0.0.1:9/v1", "seeded": True})
    assert backends.capabilities_of("openai", seeded).seeded and not backends.capabilities_of(
        "openai", ModelSpec(model="m", endpoint={"base_url": "http://127.0.0.1:9/v1"})).seeded
    assert backends.kind_info("ray").remote and backends.kind_info("openai").remote
    assert not backends.kind_info("hf").remote and backends.kind_info("hf").extra == "hf"
