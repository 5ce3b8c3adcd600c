"""Routing building blocks: log-probability calls share cache entries with plain calls; confidences."""
from __future__ import annotations

import math

from moco.cache import ResponseCache
from moco.config import parse_config
from moco.context import Call, Response, RunContext
from moco.routing.outcomes import confidence
from moco.runner import plan
from moco.trace import CallRecorder
from moco import aio


def _ctx(models, task, cache) -> RunContext:
    cfg = parse_config({"method": "single_model", "task": {"name": str(task)}, "models": [str(m) for m in models],
                        "generation": {"max_new_tokens": 6, "temperature": 0.8}})
    p = plan(cfg)
    return RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=CallRecorder(None),
                      decoding=p.config.decoding, seed=1)


def test_logprob_calls_are_the_plain_calls(tiny_models, tiny_task, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    ctx = _ctx(tiny_models[:1], tiny_task, cache)
    prompts = ["hello", "what is 2+2"]
    plain = aio.run(ctx.ask(0, prompts))
    assert all(r.token_logprobs is None and not r.cached for r in plain)
    # asking again with log-probabilities recomputes once (the cached entry has none): same seed, same text
    with_lp = aio.run(ctx.generate([Call(0, p, ctx.sampling(logprobs=True)) for p in prompts]))
    assert [r.text for r in with_lp] == [r.text for r in plain] and not any(r.cached for r in with_lp)
    assert all(len(r.token_logprobs) == r.tokens_out for r in with_lp)
    # now both kinds of call are served by the one entry, which carries the log-probabilities
    again_plain = aio.run(ctx.ask(0, prompts))
    again_lp = aio.run(ctx.generate([Call(0, p, ctx.sampling(logprobs=True)) for p in prompts]))
    assert all(r.cached for r in again_plain + again_lp)
    assert [r.token_logprobs for r in again_lp] == [r.token_logprobs for r in with_lp]
    assert len(cache) == 2
    # identical calls in one batch, one with and one without log-probabilities: one computation serves both
    mixed = aio.run(ctx.generate([Call(0, "fresh"), Call(0, "fresh", ctx.sampling(logprobs=True))]))
    assert mixed[0].text == mixed[1].text and mixed[1].token_logprobs is not None and len(cache) == 3
    cache.close()


def test_confidence_kinds():
    r = Response("ab", "m", token_logprobs=[math.log(0.5), math.log(0.9)], top_logprobs=[math.log(0.6), math.log(0.9)])
    assert math.isclose(confidence(r), 0.7)
    assert math.isclose(confidence(r, "mean_top_prob"), 0.75)
    assert math.isclose(confidence(r, "min_token_prob"), 0.5)
    assert confidence(Response("", "m", token_logprobs=[], top_logprobs=[])) == 0.0
    assert confidence(Response("x", "m")) is None
    assert confidence(Response("", "m", error="boom", token_logprobs=[0.0])) is None


def test_outcomes_use_the_task_scorer_in_one_batch(sample_data, cache, tmp_path):
    """On a task without gold answers scored by a reward model, a router's dev outcomes are the rewards (not
    zeros), scored in one batched call of the reward model; on a generation-only task routing is refused."""
    import pytest

    from moco.errors import ConfigError
    from moco.models.scripted import ScriptedBackend
    from moco.routing.outcomes import collect

    backends = {"scripted:a": ScriptedBackend("a", default="short"),
                "scripted:b": ScriptedBackend("b", default="a much longer answer"),
                "scripted:rm": ScriptedBackend("rm", fn=lambda req: str(len(req.messages[-1][1].split())))}
    cfg = parse_config({"method": "api_graph_routing", "task": {"name": "human_interest_tiny", "dev_limit": 3,
                                                                "test_limit": 2},
                        "models": ["scripted:a", "scripted:b"], "roles": {"reward": {"model": "scripted:rm"}}})
    p = plan(cfg, backends=backends, data_dir=str(sample_data))
    rec = CallRecorder(None)
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=rec,
                     decoding=p.config.decoding, roles=p.roles)
    out = aio.run(collect(ctx, ctx.task.dev))
    assert out.scores == [[1.0] * 3, [4.0] * 3]  # the reward model's outputs: 1 and 4 words
    assert out.best_order() == [1, 0]
    assert rec.phases["score"].calls == 6 and len(backends["scripted:rm"].calls) == 6
    gen_only = parse_config({"method": "api_graph_routing", "task": {"name": str(tmp_path / "g.json")},
                             "models": ["scripted:a", "scripted:b"]})
    (tmp_path / "g.json").write_text('{"name": "g", "task_type": "text_generation", "dev": [{"input": "hi"}], '
                                     '"test": [{"input": "yo"}]}')
    with pytest.raises(ConfigError, match="routes by scored outcomes: task g is generation-only"):
        plan(gen_only, backends=backends)  # refused before any model loads (validate, run and serve alike)
    p = plan(gen_only, backends=backends, needs=False)  # and collect() itself still refuses, for direct callers
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=CallRecorder(None),
                     decoding=p.config.decoding)
    with pytest.raises(ConfigError, match="generation-only"):
        aio.run(collect(ctx, ctx.task.dev))
