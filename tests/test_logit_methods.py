"""Logit-level methods: the fused decoder against a naive loop, fusion of a model with itself, contrastive
α = 0 equals the top model, proxy tuning's formula, and the tokenizer / architecture checks of `moco validate`."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from moco.config import parse_config
from moco.errors import ConfigError
from moco.methods.logit.logit_contrastive import contrastive, plausible, proxy_tuning
from moco.methods.logit.logit_fusion import average
from moco.models.base import GenRequest, SamplingParams
from moco.models.fused import FusedBackend, Member
from moco.models.hf import HFBackend
from moco.runner import describe_plan, plan, run_experiment

PROMPTS = ["Hi", "A much longer prompt about several different things " * 2, "What is 2+2?"]


def _reqs(temp=0.0, n=10, seed=3):
    return [GenRequest((("user", p),), SamplingParams(n, temp, 0.9), seed + i) for i, p in enumerate(PROMPTS)]


@pytest.fixture(scope="module")
def tiny_backends(tiny_models):
    return [HFBackend(str(p), fingerprint=f"t{i}", batch_size=8) for i, p in enumerate(tiny_models)]


def _naive_fused_greedy(backends, prompt, combine, n):
    """Reference loop: no batching, no padding, no KV cache; full forward of every model at every step."""
    req = GenRequest((("user", prompt),), SamplingParams(n, 0.0))
    seqs = [b.encode(req) for b in backends]
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = [b.model(input_ids=torch.tensor([s])).logits[:, -1, :].float() for b, s in zip(backends, seqs)]
            tok = int(combine(logits).argmax(-1))
            out.append(tok)
            seqs = [s + [tok] for s in seqs]
    return out


def test_fusion_of_a_model_with_itself_equals_the_model(tiny_models, tiny_backends):
    solo = tiny_backends[0]
    twin = HFBackend(str(tiny_models[0]), fingerprint="t0-copy", batch_size=8)  # a second copy: two streams
    fused = FusedBackend([Member("a", solo), Member("b", twin)], average([0.5, 0.5], "probs"), "avg")
    for temp in (0.0, 1.0):  # greedy, and sampled with the same per-row seeds
        ours = fused.generate(_reqs(temp))
        ref = solo.generate(_reqs(temp))
        assert [r.text for r in ours] == [r.text for r in ref]
        assert [r.tokens_out for r in ours] == [r.tokens_out for r in ref]
        assert all(o.tokens_in == 2 * r.tokens_in for o, r in zip(ours, ref))  # both members read the prompt
        # per-member usage: a writes the fused tokens, b reads the prompt and is fed them
        assert [o.extra["usage"] for o in ours] == [{"a": [r.tokens_in, r.tokens_out],
                                                    "b": [r.tokens_in + r.tokens_out, 0]} for r in ref]
    shared = FusedBackend([Member("a", solo), Member("b", solo)], average([0.5, 0.5], "probs"), "avg")
    ours, ref = shared.generate(_reqs()), solo.generate(_reqs())  # one loaded model: one forward pass for both
    assert [o.text for o in ours] == [r.text for r in ref]
    assert [o.extra["usage"] for o in ours] == [{"a": [r.tokens_in, r.tokens_out], "b": [0, 0]} for r in ref]


def test_fused_batch_decoding_equals_a_naive_loop(tiny_backends):
    """Different prompt lengths in one batch: masks, positions and per-model KV caches are right."""
    members = [Member(f"m{i}", b) for i, b in enumerate(tiny_backends[:2])]
    for space in ("probs", "logits"):
        comb = average([0.3, 0.7], space)
        fused = FusedBackend(members, comb, f"avg-{space}")
        out = fused.generate(_reqs(n=8))
        for prompt, res in zip(PROMPTS, out):
            toks = _naive_fused_greedy(tiny_backends[:2], prompt, comb, 8)
            assert res.text == tiny_backends[0].tokenizer.decode(toks, skip_special_tokens=True).strip(), (space, prompt)
    # the fusion is neither member alone
    solo = [b.generate(_reqs(n=8)) for b in tiny_backends[:2]]
    fused_texts = [r.text for r in FusedBackend(members, average([0.5, 0.5], "probs"), "x").generate(_reqs(n=8))]
    assert fused_texts != [r.text for r in solo[0]] or fused_texts != [r.text for r in solo[1]]


def test_contrastive_and_proxy_formulas_on_the_first_token(tiny_backends):
    reqs = _reqs(n=1)
    lps = [b.next_token_logprobs(reqs) for b in tiny_backends]
    p = [lp.exp() for lp in lps]
    fused = FusedBackend([Member(f"m{i}", b) for i, b in enumerate(tiny_backends[:2])], contrastive(1, 0.8, "probs"), "c")
    got = [GenRequest(r.messages, SamplingParams(1, 0.0)) for r in reqs]
    first = [tiny_backends[0].encode(r) for r in got]  # noqa: F841 (documents that prompts are the same)
    expected = (p[0] + 0.8 * (p[0] - p[1])).clamp(min=0).argmax(-1).tolist()
    out = fused.generate(got)
    assert [tiny_backends[0].tokenizer.convert_tokens_to_ids(r.text[:1]) for r in out] == expected
    proxy = FusedBackend([Member(f"m{i}", b) for i, b in enumerate(tiny_backends)], proxy_tuning(1.5), "p")
    expected = (lps[0] + 1.5 * (lps[1] - lps[2])).argmax(-1).tolist()
    assert [tiny_backends[0].tokenizer.convert_tokens_to_ids(r.text[:1]) for r in proxy.generate(got)] == expected


def _cfg(method, models, task, params=None, **extra):
    raw = {"method": method, "task": {"name": str(task)}, "models": [str(m) for m in models], "params": params or {},
           "decoding": {"max_new_tokens": 6, "temperature": 0.0}}
    raw.update(extra)
    return parse_config(raw)


def test_contrastive_alpha_zero_equals_the_dev_top_model(tiny_models, tiny_task, cache, tmp_path, monkeypatch):
    import moco.selection

    ranked = {"calls": 0}

    async def fake_dev_item_scores(ctx):  # tiny random models all score 0 on dev: fix a ranking to test its use
        ranked["calls"] += 1
        return [[0.1], [0.9], [0.5]]

    monkeypatch.setattr(moco.selection, "dev_item_scores", fake_dev_item_scores)
    res = run_experiment(_cfg("logit_logit_contrastive", tiny_models, tiny_task, {"alpha": 0.0}), tmp_path / "c0", cache=cache)
    single = run_experiment(_cfg("single_model", tiny_models, tiny_task, {"model": 1}), tmp_path / "s1", cache=cache)
    assert ranked["calls"] >= 1
    assert [r["output"] for r in res.predictions] == [r["output"] for r in single.predictions]
    tr = res.predictions[0]["trace"]
    assert tr["top"] == ["tiny1"] and tr["bottom"] == ["tiny0"] and tr["alpha"] == 0.0
    sel = res.metrics["dev_selection"]["dev_ranking"]  # the ranking is recorded with every model's dev score
    assert sel["order"] == ["tiny1", "tiny2", "tiny0"] and sel["chosen"] == "tiny1" and sel["margin"] == 0.4
    strong = run_experiment(_cfg("logit_logit_contrastive", tiny_models, tiny_task, {"alpha": 3.0}), tmp_path / "c3", cache=cache)
    assert [r["output"] for r in strong.predictions] != [r["output"] for r in res.predictions]


def test_fusion_runs_from_config_and_records_members(tiny_models, tiny_task, cache, tmp_path):
    res = run_experiment(_cfg("logit_fusion", tiny_models[:2], tiny_task), tmp_path / "f", cache=cache)
    assert res.metrics["logit"]["members"] == ["tiny0", "tiny1"]
    test = res.metrics["phases"]["test"]  # one record per member model for each of the 8 test items
    assert test["calls"] == 16 and "dev" not in res.metrics["phases"]
    assert {m: c["calls"] for m, c in test["per_model"].items()} == {"tiny0": 8, "tiny1": 8}
    assert all(r["trace"]["space"] == "probs" for r in res.predictions)
    with pytest.raises(ConfigError, match="weights has 3 entries for 2 models"):
        plan(_cfg("logit_fusion", tiny_models[:2], tiny_task, {"weights": [1, 1, 1]}))
    with pytest.raises(ConfigError, match="k=2 needs at least 4 models"):
        plan(_cfg("logit_contrastive", tiny_models, tiny_task, {"k": 2}))
    with pytest.raises(ConfigError, match="three different models"):
        plan(_cfg("logit_contrastive", tiny_models, tiny_task, {"mode": "proxy_tuning", "expert": 0}))


def test_fused_calls_go_through_the_core_a_cached_rerun_decodes_nothing(tiny_models, tiny_task, cache, tmp_path,
                                                                        monkeypatch):
    """The fused model is an ordinary `ctx.generate` model: its results are cached under its fingerprint and
    recorded once per member (the prompt tokens each read, the tokens each decoded); a re-run reads the cache."""
    decoded: list[int] = []
    real = FusedBackend._decode

    def counting(self, requests, sampling):
        decoded.append(len(requests))
        return real(self, requests, sampling)

    monkeypatch.setattr(FusedBackend, "_decode", counting)
    cfg = _cfg("logit_contrastive", tiny_models, tiny_task, {"mode": "proxy_tuning", "alpha": 1.0})
    first = run_experiment(cfg, tmp_path / "a", cache=cache)
    assert sum(decoded) == 8
    calls = [json.loads(x) for x in (tmp_path / "a" / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 24 and {c["model"] for c in calls} == {"tiny0", "tiny1", "tiny2"}
    assert not any(c["cache_hit"] for c in calls) and all(c["tag"] == "proxy_tuning" for c in calls)
    for key in {c["key"] for c in calls}:  # one cached result, three records: the base (first member) writes
        rows = {c["model"]: c for c in calls if c["key"] == key}  # the fused tokens, the others are fed them
        base = rows["tiny0"]
        assert len(rows) == 3 and base["tokens_in"] > 0 and base["tokens_out"] > 0
        assert all(rows[m]["tokens_in"] == base["tokens_in"] + base["tokens_out"] and rows[m]["tokens_out"] == 0
                   for m in ("tiny1", "tiny2"))
    assert first.metrics["phases"]["test"]["generated_tokens"] == sum(c["tokens_out"] for c in calls) > 0
    again = run_experiment(cfg, tmp_path / "b", cache=cache)
    assert sum(decoded) == 8  # nothing decoded the second time
    assert [p["output"] for p in again.predictions] == [p["output"] for p in first.predictions]
    assert [p["trace"] for p in again.predictions] == [p["trace"] for p in first.predictions]
    cached = [json.loads(x) for x in (tmp_path / "b" / "calls.jsonl").read_text().splitlines()]
    assert all(c["cache_hit"] for c in cached)
    assert sorted((c["model"], c["key"], c["tokens_in"], c["tokens_out"]) for c in cached) == \
        sorted((c["model"], c["key"], c["tokens_in"], c["tokens_out"]) for c in calls)


def test_validate_checks_tokenizers_and_architectures_from_files(tiny_models, tiny_task, tmp_path):
    p = plan(_cfg("logit_fusion", tiny_models, tiny_task))
    lines = [x for x in describe_plan(p) if x.startswith("check")]
    assert len(lines) == 1 and "one shared vocabulary" in lines[0] and "3 distinct models" in lines[0]
    # a model whose tokenizer maps one token differently
    other = tmp_path / "other_tok"
    shutil.copytree(tiny_models[1], other)
    tj = json.loads((other / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    vocab["Z"], vocab["Y"] = vocab["Y"], vocab["Z"]
    (other / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ConfigError, match=r"needs one shared vocabulary: 'tiny0' .* and 'other_tok' .* differ"):
        plan(_cfg("logit_fusion", [tiny_models[0], other], tiny_task))
    # architecture: equal shapes pass, a different width is named
    from moco.testing import build_tiny_llama

    wide = build_tiny_llama(tmp_path / "wide", seed=5, hidden=64)
    ok = plan(_cfg("single_model", tiny_models, tiny_task))
    assert ok.checks == []  # methods that do not ask get no check
    from moco.models import compat

    entries = compat.entries_for(ok.pool.handles, {})
    line = compat.check_same_architecture(entries, "x")
    assert "3 distinct weight sets, all LlamaForCausalLM" in line and "tensors with equal shapes" in line
    bad = plan(_cfg("single_model", [tiny_models[0], wide], tiny_task))
    with pytest.raises(ConfigError, match="hidden_size=32.*hidden_size=64"):
        compat.check_same_architecture(compat.entries_for(bad.pool.handles, {}), "x")


@pytest.mark.smollm
def test_fusion_of_smollm_with_itself_equals_its_greedy_output(smollm_dir):
    """The one real-model check: rows of different lengths stop at EOS independently."""
    b = HFBackend(str(smollm_dir), fingerprint="smol", batch_size=4)
    twin = copy.copy(b)  # same weights, a separate stream (own cache and padding)
    reqs = [GenRequest((("user", q),), SamplingParams(40, 0.0), 1) for q in
            ("What is the capital of France?", "Name a colour.", "Write one sentence about the sea and ships.")]
    fused = FusedBackend([Member("a", b), Member("b", twin)], average([0.5, 0.5], "probs"), "avg").generate(reqs)
    solo = b.generate(reqs)
    assert [r.text for r in fused] == [r.text for r in solo]
    assert any(r.finish_reason == "stop" and r.tokens_out < 40 for r in fused)
    assert "Paris" in fused[0].text


def test_plausibility_constraint_masks_tokens_the_top_model_rules_out():
    # p_1 (dev-top) = [.70, .25, .05]; p_2 (dev-bottom) = [.709, .29, .001]; contrastive in log space, α = 1:
    # 2 log p_1 - log p_2 is largest for token 2 (p_1 = .05): the difference promotes an implausible token
    p1, p2 = torch.tensor([[0.70, 0.25, 0.05]]), torch.tensor([[0.709, 0.29, 0.001]])
    logits = [p1.log(), p2.log()]
    free = contrastive(1, 1.0, "logits")(logits)
    assert int(free.argmax(-1)) == 2
    # plausibility 0.1: only tokens with p_1 >= 0.1 * 0.70 = 0.07 stay; token 2 (0.05) is masked
    masked = plausible(contrastive(1, 1.0, "logits"), 0.1)(logits)
    assert torch.isinf(masked[0, 2]) and masked[0, 2] < 0 and int(masked.argmax(-1)) == 0  # token 0 by contrast
    assert torch.equal(masked[0, :2], free[0, :2])  # plausible tokens keep their contrastive scores
    # a looser constraint (0.05: p_1 >= 0.035) keeps token 2, and it wins again
    assert int(plausible(contrastive(1, 1.0, "logits"), 0.05)(logits).argmax(-1)) == 2
    assert plausible(free, None) is free


def test_plausibility_recorded_in_the_trace(tiny_models, tiny_task, cache, tmp_path):
    res = run_experiment(_cfg("logit_contrastive", tiny_models[:2], tiny_task, {"plausibility": 0.1}),
                         tmp_path / "run", cache=cache)
    assert res.metrics["logit"]["plausibility"] == 0.1
    assert all(r["trace"]["plausibility"] == 0.1 for r in res.predictions)
