"""KV reuse across calls (models/prefix_cache.py): the store's lookups and budget, and that decoding with
reused KV gives what decoding from scratch gives while computing fewer prompt tokens."""
from __future__ import annotations

import pytest
import torch

from moco.models.base import GenRequest, SamplingParams
from moco.models.hf import HFBackend, KVStream
from moco.models.prefix_cache import BLOCK, PrefixStore, forget, store_for

QUESTION = "Question 7: which of the options below is right, and why? Think about it step by step. "


def _kv(n: int, fill: float = 1.0, layers: int = 2):
    """Fake per-layer KV for n tokens whose values are the token positions (to check cuts)."""
    k = torch.arange(n, dtype=torch.float32)[None, :, None].repeat(2, 1, 4) * fill
    return [(k.clone(), k.clone()) for _ in range(layers)]


def _req(text: str, prefix: str = "", temp: float = 0.0, n: int = 10, seed: int = 0) -> GenRequest:
    return GenRequest((("user", text),), SamplingParams(n, temp, 0.9), seed, assistant_prefix=prefix)


# ------------------------------------------------------------------ the store alone
def test_match_finds_longest_shared_prefix_and_leaves_a_token_to_compute():
    s = PrefixStore(1 << 30)
    a = list(range(100))
    s.add(a, _kv(100))
    n, kv = s.match(a[:60] + [999] * 10)
    assert n == 60 and kv[0][0].shape == (2, 60, 4)
    assert torch.equal(kv[1][0][0, :, 0], torch.arange(60, dtype=torch.float32))
    n, _ = s.match(a)  # the whole stored sequence: the last token is still computed (its logits start decoding)
    assert n == 99
    n, kv = s.match(a[:BLOCK - 3] + [999] * 40)  # shorter than a block: not worth it
    assert (n, kv) == (0, None)
    assert s.stats.hits == 2 and s.stats.reused_tokens == 159 and s.stats.lookups == 3


def test_extension_replaces_its_prefix_and_a_prefix_of_a_stored_one_is_not_added():
    s = PrefixStore(1 << 30)
    s.add(list(range(40)), _kv(40))
    s.add(list(range(80)), _kv(80))  # extends the first: the first is dropped
    assert [len(e.ids) for e in s.entries.values()] == [80]
    s.add(list(range(50)), _kv(50))  # already inside the stored one
    assert [len(e.ids) for e in s.entries.values()] == [80]
    s.add(list(range(30)) + [7] * 30, _kv(60))  # a branch: both kept, each found by its own tokens
    assert s.match(list(range(30)) + [7] * 30 + [1])[0] == 60
    assert s.match(list(range(79)) + [5])[0] == 79


def test_budget_evicts_least_recently_used():
    one = sum(k.numel() * 4 * 2 for k, _ in _kv(32))
    s = PrefixStore(2 * one)
    seqs = [[i] * 32 for i in range(3)]
    s.add(seqs[0], _kv(32))
    s.add(seqs[1], _kv(32))
    s.match(seqs[0] + [5])  # seq 0 used last: seq 1 is the one to go
    s.add(seqs[2], _kv(32))
    assert s.used <= 2 * one and s.stats.evicted == 1
    assert s.match(seqs[1] + [5])[0] == 0
    assert s.match(seqs[0] + [5])[0] == 32 and s.match(seqs[2] + [5])[0] == 32
    s.add([9] * 200, _kv(200))  # larger than the whole budget: not kept, nothing evicted for it
    assert s.stats.evicted == 1 and len(s.entries) == 2


# ------------------------------------------------------------------ decoding with reused KV
@pytest.fixture
def pair(tiny_models):
    """The same tiny model twice: with reuse, and with reuse off (the reference)."""
    on = HFBackend(str(tiny_models[0]), fingerprint="t0", batch_size=8)
    off = HFBackend(str(tiny_models[0]), fingerprint="t0", batch_size=8, prefix_cache_mb=0)
    return on, off


def test_prefill_from_stored_prefix_gives_the_same_logits(pair):
    on, off = pair
    store = store_for(on.model, on.prefix_cache_bytes)
    first = [on.encode(_req(QUESTION))]
    with torch.no_grad():
        KVStream(on.model, first, on.tokenizer.pad_token_id, store).close()  # the model has read the question
        longer = [on.encode(_req(QUESTION, prefix="The answer is (B) because")), on.encode(_req("Hi"))]
        reused = KVStream(on.model, longer, on.tokenizer.pad_token_id, store)
        fresh = KVStream(off.model, longer, off.tokenizer.pad_token_id)
        assert torch.allclose(reused.logits, fresh.logits, atol=1e-5)
        # and the next steps too (the cache holds a masked gap between reused and new tokens)
        for _ in range(3):
            nxt = fresh.logits.argmax(-1).tolist()
            assert torch.allclose(reused.advance(nxt), fresh.advance(nxt), atol=1e-5)
    assert store.stats.reused_tokens == len(first[0])  # all of it: the longer prompt continues past it
    assert store.stats.hits == 1  # "Hi" shares nothing with the question beyond the template


def test_growing_answer_reuses_earlier_calls_and_decodes_the_same(pair):
    """Switch generation's pattern: the same prompt asked again with a longer assistant prefix each time."""
    on, off = pair
    answer = ""
    for _ in range(4):
        a = on.generate([_req(QUESTION, prefix=answer)])[0]
        b = off.generate([_req(QUESTION, prefix=answer)])[0]
        assert a.text == b.text and a.tokens_out == b.tokens_out
        assert a.tokens_in == b.tokens_in and a.tokens_reused == (a.tokens_in - 1 if answer else 0) and b.tokens_reused == 0
        answer += a.text
    st = on.prefix_stats
    # every later call finds the previous prompt AND the tokens generated after it: one new token to compute
    assert st["hits"] == 3 and st["computed_tokens"] == len(on.encode(_req(QUESTION))) + 3
    assert off.prefix_stats == {}


def test_repeated_prompts_are_prefilled_once_and_keep_their_own_seeds(pair):
    on, off = pair
    reqs = [_req(QUESTION, temp=1.0, seed=s) for s in range(4)] + [_req("Tell me a story", temp=1.0, seed=9)]
    together = on.generate(reqs)
    assert on.prefix_stats["shared_rows"] == 3
    assert [r.tokens_reused for r in together] == [0, len(on.encode(reqs[0]))] * 1 + [len(on.encode(reqs[0]))] * 2 + [0]
    alone = [off.generate([r])[0].text for r in reqs]
    assert [r.text for r in together] == alone
    assert len({r.text for r in together[:4]}) > 1  # four samples, not one copied


def test_mixed_batch_of_hits_misses_and_repeats_matches_no_reuse(pair):
    on, off = pair
    on.generate([_req(QUESTION), _req("Another question that is long enough to be stored here")])
    reqs = [_req(QUESTION, prefix="Let me think"), _req("Short"), _req(QUESTION, prefix="Let me think"),
            _req("Another question that is long enough to be stored here", prefix="Well,"), _req(QUESTION)]
    assert [r.text for r in on.generate(reqs)] == [r.text for r in off.generate(reqs)]
    assert on.prefix_stats["hits"] >= 3


def test_weights_written_in_place_forget_the_store(pair):
    on, off = pair
    on.generate([_req(QUESTION)])
    store = store_for(on.model, on.prefix_cache_bytes)
    assert store.entries
    with torch.no_grad():
        for p in on.model.parameters():
            p.mul_(1.5)
    forget(on.model)
    assert not store.entries
    for p_off, p_on in zip(off.model.parameters(), on.model.parameters()):
        with torch.no_grad():
            p_off.copy_(p_on)
    assert on.generate([_req(QUESTION, prefix="So")])[0].text == off.generate([_req(QUESTION, prefix="So")])[0].text


def test_workbench_load_clears_reused_kv(tiny_models):
    from moco.merging.recipe import Linear, Source
    from moco.merging.workbench import Workbench

    a, b = (HFBackend(str(p), fingerprint=f"t{i}") for i, p in enumerate(tiny_models[:2]))
    src = [Source(f"t{i}", f"t{i}", dict(m.model.state_dict())) for i, m in enumerate((a, b))]
    bench = Workbench(a)
    bench.load(src[0])
    bench.backend.generate([_req(QUESTION)])
    store = store_for(bench.backend.model, bench.backend.prefix_cache_bytes)
    assert store.entries and store is not store_for(a.model, a.prefix_cache_bytes)
    bench.load(Linear(src, [0.5, 0.5]))
    assert not store.entries


def test_a_debate_run_records_reused_prompt_tokens(tiny_models, tiny_task, tmp_path):
    """Through the runner: later debate rounds (context: history) extend earlier ones; calls.jsonl and the
    run's metrics say how many prompt tokens were reused, and the answers equal a run with reuse off."""
    import json

    from moco.cache import NullCache
    from moco.config import parse_config
    from moco.models.pool import unload_all
    from moco.runner import run_experiment

    def run(mb: int, out: str):
        unload_all()  # a fresh model: its store starts empty
        cfg = parse_config({
            "method": "text_multiagent_refine", "task": {"name": str(tiny_task), "test_limit": 4},
            "models": [{"model": str(tiny_models[0]), "name": n, "role_prompt": f"You are agent {n}."} for n in "ab"],
            "params": {"rounds": 2, "context": "history", "final": "vote"},
            "decoding": {"max_new_tokens": 6, "temperature": 0.0}, "hardware": {"prefix_cache_mb": mb}})
        return run_experiment(cfg, tmp_path / out, cache=NullCache())

    on, off = run(64, "on"), run(0, "off")
    unload_all()
    assert [r["output"] for r in on.predictions] == [r["output"] for r in off.predictions]
    assert off.metrics["total"]["tokens_reused"] == 0
    reused = on.metrics["total"]["tokens_reused"]
    assert 0 < reused < on.metrics["total"]["tokens_in"]
    calls = [json.loads(line) for line in (tmp_path / "on" / "calls.jsonl").read_text().splitlines()]
    by_tag = {t: [c for c in calls if c["tag"] == t] for t in ("answer", "round 1", "round 2")}
    assert [c["model"] for c in by_tag["answer"]] == [c["model"] for c in by_tag["round 2"]] == list("aaaabbbb")
    for before, now in (("answer", "round 1"), ("round 1", "round 2")):
        for prev, c in zip(by_tag[before], by_tag[now]):  # the whole conversation so far, all but the last token
            assert c["tokens_reused"] == prev["tokens_in"] + prev["tokens_out"] - 1
    assert sum(c["tokens_reused"] for c in calls) == reused


def test_a_resident_model_follows_each_runs_setting(tiny_models):
    from moco.config import HardwareSettings, ModelSpec
    from moco.models.pool import ModelPool, unload_all

    unload_all()
    specs = [ModelSpec(model=str(tiny_models[0]))]
    a = ModelPool(specs, HardwareSettings(prefix_cache_mb=8)).backend(0)
    assert a.prefix_cache_bytes == 8 << 20
    b = ModelPool(specs, HardwareSettings(prefix_cache_mb=0)).backend(0)
    assert a is b and b.prefix_cache_bytes == 0 and store_for(b.model, b.prefix_cache_bytes) is None
    unload_all()


# ------------------------------------------------------------------ prefill grouped by prompt length
def test_prefill_groups_pad_little_and_keep_similar_lengths_together():
    from moco.models.hf import prefill_groups

    assert prefill_groups([100, 98, 97, 95]) == [[0, 1, 2, 3]]  # similar lengths: one pass
    g = prefill_groups([600, 12, 590, 10, 15, 605, 11, 9], pass_cost=64)
    assert g == [[5, 0, 2], [4, 1, 6, 3, 7]]  # long prompts apart from short ones (longest first)
    lengths = [600, 12, 590, 10, 15, 605, 11, 9]
    padded = sum(max(lengths[i] for i in grp) * len(grp) for grp in g)
    assert padded + 64 * len(g) < max(lengths) * len(lengths) + 64  # cheaper than one padded pass
    assert sorted(i for grp in g for i in grp) == list(range(8))


def test_grouped_prefill_gives_the_logits_and_answers_of_one_pass(pair):
    """Prompts of very different lengths (a debate round beside first answers, a merged lockstep batch) are
    prefilled in groups and joined into one cache: the same logits, step after step, and the same answers."""
    from moco.models import hf

    on, off = pair
    long_q = QUESTION * 12
    reqs = [_req(long_q), _req("Hi"), _req(long_q + " Also: why?"), _req("Name a color."), _req("2+2?")]
    store = store_for(on.model, on.prefix_cache_bytes)
    ids = [on.encode(r) for r in reqs]
    assert len(hf.prefill_groups([len(x) for x in ids])) == 2
    with torch.no_grad():
        grouped = KVStream(on.model, ids, on.tokenizer.pad_token_id, store)
        one = KVStream(off.model, ids, off.tokenizer.pad_token_id)  # no store: one padded pass
        assert grouped.attn.shape[1] == max(len(x) for x in ids)
        assert torch.allclose(grouped.logits, one.logits, atol=1e-4)
        for _ in range(3):
            nxt = one.logits.argmax(-1).tolist()
            assert torch.allclose(grouped.advance(nxt), one.advance(nxt), atol=1e-4)
    store.clear()
    assert [r.text for r in on.generate(reqs)] == [r.text for r in off.generate(reqs)]


# ------------------------------------------------------------------ prefixes shared inside one batch
def test_shared_prefixes_are_found_per_batch_beyond_the_store():
    from moco.models.prefix_cache import shared_prefixes

    s = PrefixStore(1 << 30)
    head = list(range(1000, 1045))  # 45 shared tokens: two whole blocks (32) are worth sharing
    a, b, c = head + [1, 2, 3], head + [7, 8], list(range(60))
    out = shared_prefixes(s, [a, b, c], [0, 0, 0], pass_cost=0)
    assert out == [(head[:2 * BLOCK], [0, 1])]
    assert shared_prefixes(s, [a, b, c], [0, 0, 0], pass_cost=100) == []  # saves 32 tokens, costs a pass
    assert shared_prefixes(s, [a, b, c], [2 * BLOCK, 2 * BLOCK, 0], pass_cost=0) == []  # the store has them
    d = head[:BLOCK + 3] + [5] * 20  # shares one block with a and b only
    out = shared_prefixes(s, [a, b, d], [0, 0, 0], pass_cost=0)
    assert out == [(head[:2 * BLOCK], [0, 1])]  # d finds its block inside the stored 32 afterwards
    assert shared_prefixes(s, [head + [1], head + [1]][:1], [0], pass_cost=0) == []


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_a_prefix_shared_in_the_batch_is_computed_once_and_decodes_the_same(pair):
    """A merged lockstep batch: several methods' prompts for the same question, none of them stored yet."""
    on, off = pair
    long_q = QUESTION * 4
    reqs = [_req(long_q + " Answer A or B."), _req(long_q + " Criticise the answer: it is B."),
            _req(long_q, prefix="The answer is"), _req("Name a colour.")]
    ids = [on.encode(r) for r in reqs]
    head = _common(ids[0], ids[1]) // BLOCK * BLOCK  # the prefix rows 0 and 1 share, in whole blocks
    assert head >= 4 * BLOCK
    # computed once by itself into the store; every other row then reuses what it shares with it
    reuse = [head, head] + [_common(x, ids[0][:head]) for x in ids[2:]]
    reuse = [n if n >= BLOCK else 0 for n in reuse]
    got = on.generate(reqs)
    assert [r.text for r in got] == [r.text for r in off.generate(reqs)]
    st = on.prefix_stats
    assert st["computed_tokens"] == head + sum(len(x) - n for x, n in zip(ids, reuse))
    # the calls account for every computed token: the first row that uses the head carries its cost
    assert [r.tokens_reused for r in got] == [0] + reuse[1:]
    assert sum(r.tokens_in - r.tokens_reused for r in got) == st["computed_tokens"]


def test_growing_kv_buffer_decodes_like_concatenation(pair):
    """kv_buffer.GrowingLayer writes into spare columns instead of torch.cat: the same logits, also after rows
    leave the batch and after the buffer had to grow."""
    from transformers import DynamicCache

    from moco.models import kv_buffer

    on, _off = pair
    model = on.model
    ids = torch.tensor([on.encode(_req(QUESTION))] * 3)
    ids[1, -1] = 5
    ids[2, -2] = 9
    caches = [DynamicCache(config=model.config), kv_buffer.new_cache(model)]
    assert type(caches[1].layers[0]).__name__ == "GrowingLayer"
    with torch.no_grad():
        outs = [model(input_ids=ids, past_key_values=c, use_cache=True).logits[:, -1] for c in caches]
        tok = outs[0].argmax(-1)
        for step in range(kv_buffer.SPARE + 4):  # past the spare columns: one reallocation
            if step == 3:  # a row leaves the batch
                for c in caches:
                    c.batch_select_indices(torch.tensor([0, 2]))
                tok = tok[[0, 2]]
            outs = [model(input_ids=tok[:, None], past_key_values=c, use_cache=True).logits[:, -1] for c in caches]
            assert torch.allclose(outs[0], outs[1], atol=1e-5)
            tok = outs[0].argmax(-1)
    layer = caches[1].layers[0]
    assert layer.keys.shape == caches[0].layers[0].keys.shape and layer._kbuf.shape[-2] > layer.keys.shape[-2]
