"""Token-level methods are composite backends called through `ctx.generate`: one cache, one batching, one
call record per member model; what they need from a model is the `TokenModel` protocol, nothing more."""
from __future__ import annotations

import json

import pytest

from moco.config import parse_config
from moco.models.base import GenRequest, SamplingParams
from moco.models.token_level import Member, TokenLevelBackend
from moco.models.token_model import TokenModel, require_token_model


class ProtocolOnly:
    """Exactly the TokenModel members of a backend, nothing else (no `.model`, no private methods)."""

    def __init__(self, backend):
        self.fingerprint, self.batch_size = backend.fingerprint, backend.batch_size
        self.tokenizer, self.eos_ids = backend.tokenizer, backend.eos_ids
        self.encode, self.new_kv_cache = backend.encode, backend.new_kv_cache
        self.next_logits, self.select_kv_rows, self.hit_stop = backend.next_logits, backend.select_kv_rows, backend.hit_stop


def test_the_methods_need_only_the_token_model_protocol(tiny_backends):
    """Nudging decoded through protocol-only models gives exactly what it gives on the HF backends."""
    from moco.methods.api.nudging import decode_nudging

    base, nudger = tiny_backends
    assert isinstance(base, TokenModel)
    sp = SamplingParams(max_new_tokens=12, temperature=0.0)
    reqs = [GenRequest((("user", q),), sp) for q in ("hi", "hello there friend", "abc")]
    direct = decode_nudging(base, nudger, reqs, reqs, gamma=0.2, sampling=sp, max_word_tokens=2)
    proxied = decode_nudging(ProtocolOnly(base), ProtocolOnly(nudger), reqs, reqs, gamma=0.2, sampling=sp,
                             max_word_tokens=2)
    assert [(o.text, o.trace, o.usage) for o in proxied] == [(o.text, o.trace, o.usage) for o in direct]
    assert any(o.trace["nudges"] for o in direct)


def test_a_model_without_the_protocol_is_a_one_line_config_error():
    from moco.errors import ConfigError
    from moco.models.scripted import ScriptedBackend

    with pytest.raises(ConfigError) as e:
        require_token_model(ScriptedBackend("s"), "s", "scripted", "api_nudging")
    assert str(e.value) == ("method api_nudging decodes token by token and needs a local Hugging Face model; "
                            "'s' is a scripted backend")


def test_batches_are_length_sorted_in_the_lead_members_batch_size(tiny_models):
    from moco.models.hf import HFBackend

    lead = HFBackend(str(tiny_models[0]), fingerprint="t0", batch_size=2)
    backend = TokenLevelBackend("m", {}, [Member("a", lead), Member("b", lead, "You are terse.")], lambda r, s: [])
    sp = SamplingParams(max_new_tokens=4, temperature=0.0)
    prompts = ["abc", "a much longer prompt than the others", "hi", "a medium prompt", "x"]
    plan = backend.plan_batches([GenRequest((("user", p),), sp) for p in prompts])
    assert plan == [[1, 3], [0, 2], [4]]
    # the fingerprint (the cache key) changes with the settings, the members and their role prompts
    other = [TokenLevelBackend("m", {"g": 1}, backend.members, lambda r, s: []),
             TokenLevelBackend("m", {}, [Member("a", lead), Member("b", lead)], lambda r, s: [])]
    assert len({backend.fingerprint, *(o.fingerprint for o in other)}) == 3


def _config(tiny_models, task):
    return parse_config({
        "method": "nudging", "task": {"name": str(task), "test_limit": 3},
        "models": [{"model": str(tiny_models[0]), "name": "base"}, {"model": str(tiny_models[1]), "name": "nudger"}],
        "params": {"gamma": 0.1, "max_word_tokens": 2},
        "generation": {"max_new_tokens": 10, "temperature": 0.0},
    })


def _calls(run_dir):
    return [json.loads(x) for x in (run_dir / "calls.jsonl").read_text().splitlines()]


def test_a_killed_run_resumes_through_the_core_cache(tiny_models, tiny_task, tmp_path, cache, monkeypatch):
    """Batches of two: the first run dies after its first batch; the re-run decodes only the missing row and
    records one call per model per item (cache hits for the rest); a third run decodes nothing; the answers
    and traces equal an uninterrupted run's."""
    from moco.cache import NullCache
    from moco.models.hf import HFBackend
    from moco.runner import run_experiment

    real_init, real_generate = TokenLevelBackend.__init__, TokenLevelBackend.generate
    decoded: list[list[str]] = []

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self.batch_size = 2

    def generate(self, reqs):
        decoded.append([r.messages[-1][1] for r in reqs])
        if kill and len(decoded) == 2:
            raise RuntimeError("killed")
        return real_generate(self, reqs)

    monkeypatch.setattr(TokenLevelBackend, "__init__", init)
    monkeypatch.setattr(TokenLevelBackend, "generate", generate)
    cfg = _config(tiny_models, tiny_task)
    kill = True
    with pytest.raises(RuntimeError, match="killed"):
        run_experiment(cfg, out=tmp_path / "killed", cache=cache)
    assert [len(b) for b in decoded] == [2, 1]
    kill, first = False, decoded[0]
    decoded.clear()
    resumed = run_experiment(cfg, out=tmp_path / "resumed", cache=cache)
    assert len(decoded) == 1 and len(decoded[0]) == 1 and decoded[0][0] not in first  # only the missing row
    test = [c for c in _calls(tmp_path / "resumed") if c["phase"] == "test"]
    assert sorted((c["model"], c["cache_hit"]) for c in test) == sorted(
        [(m, True) for m in ("base", "nudger") for _ in range(2)] + [("base", False), ("nudger", False)])
    assert sum(c["tokens_out"] for c in test if not c["cache_hit"]) > 0

    def no_forward(*a, **kw):
        raise AssertionError("a cached re-run ran a forward pass")

    real_next = HFBackend.next_logits
    monkeypatch.setattr(HFBackend, "next_logits", no_forward)
    decoded.clear()
    again = run_experiment(cfg, out=tmp_path / "again", cache=cache)
    assert decoded == [] and again.metrics["phases"]["test"]["cache_hits"] == 6
    assert [(p["output"], p["trace"]) for p in again.predictions] == [(p["output"], p["trace"])
                                                                        for p in resumed.predictions]
    monkeypatch.setattr(HFBackend, "next_logits", real_next)
    whole = run_experiment(cfg, out=tmp_path / "whole", cache=NullCache())  # uninterrupted, same batches
    assert [len(b) for b in decoded] == [2, 1]
    assert [(p["output"], p["trace"]) for p in whole.predictions] == [(p["output"], p["trace"])
                                                                        for p in resumed.predictions]
