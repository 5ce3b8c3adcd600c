"""The transformers backend: our decode loop against `generate`, seeds, batching, stops, logits."""
from __future__ import annotations

import torch

from moco.models.base import GenRequest, SamplingParams
from moco.models.hf import HFBackend

PROMPTS = ["Hi", "What is 2+2? Explain in detail please.", "A much longer prompt " * 5, "Tell me a story about a cat"]


def _req(text: str, temp: float = 0.0, n: int = 12, seed: int = 1, stop=()) -> GenRequest:
    return GenRequest((("user", text),), SamplingParams(n, temp, 0.9, tuple(stop)), seed)


def test_greedy_batched_decode_equals_generate_on_each_prompt(tiny_models):
    b = HFBackend(str(tiny_models[0]), fingerprint="t0", batch_size=8)
    ours = b.generate([_req(p) for p in PROMPTS])
    for p, r in zip(PROMPTS, ours):
        ids = torch.tensor([b.encode(_req(p))])
        ref = b.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                               pad_token_id=b.tokenizer.pad_token_id)
        new = ref[0, ids.shape[1]:].tolist()
        eos = [i for i, t in enumerate(new) if t in b.eos_ids]
        new = new[: eos[0] + 1] if eos else new
        text = b.tokenizer.decode([t for t in new if t not in b.eos_ids], skip_special_tokens=True).strip()
        assert r.text == text, (p, r.text, text)
        assert r.tokens_out == len(new)
        assert r.tokens_in == ids.shape[1]


def test_sampling_is_seeded_per_row_and_independent_of_batch_neighbours(tiny_models):
    b = HFBackend(str(tiny_models[1]), fingerprint="t1", batch_size=8)
    target = _req(PROMPTS[1], temp=1.0, n=16, seed=42)
    alone = b.generate([target])[0].text
    with_others = b.generate([_req(PROMPTS[0], 1.0, 16, 7), target, _req(PROMPTS[2], 1.0, 16, 9)])[1].text
    again = b.generate([target])[0].text
    assert alone == again == with_others
    other_seed = b.generate([_req(PROMPTS[1], temp=1.0, n=16, seed=43)])[0].text
    assert other_seed != alone  # 16 sampled characters from a random model: a collision is ~impossible


def test_plan_batches_sorts_longest_first_and_respects_batch_size(tiny_models):
    b = HFBackend(str(tiny_models[0]), fingerprint="t0", batch_size=2)
    reqs = [_req("a" * n) for n in (5, 50, 20, 1, 35)]
    plan = b.plan_batches(reqs)
    assert [len(x) for x in plan] == [2, 2, 1]
    flat = [i for batch in plan for i in batch]
    lengths = [len(b.encode(reqs[i])) for i in flat]
    assert lengths == sorted(lengths, reverse=True)
    assert sorted(flat) == list(range(5))


def test_max_batch_tokens_splits_wide_batches(tiny_models):
    b = HFBackend(str(tiny_models[0]), fingerprint="t0", batch_size=8, max_batch_tokens=200)
    plan = b.plan_batches([_req("x" * 60, n=20) for _ in range(4)])
    assert all(len(batch) * (len(b.encode(_req("x" * 60))) + 20) <= 200 or len(batch) == 1 for batch in plan)
    assert len(plan) > 1


def test_stop_strings_cut_output(tiny_models):
    b = HFBackend(str(tiny_models[2]), fingerprint="t2", batch_size=4)
    free = b.generate([_req(PROMPTS[3], temp=1.0, n=30, seed=5)])[0]
    assert len(free.text) > 3
    stop = next(c for c in free.text[2:] if not c.isspace())
    cut = b.generate([_req(PROMPTS[3], temp=1.0, n=30, seed=5, stop=(stop,))])[0]
    assert stop not in cut.text
    assert free.text.startswith(cut.text)
    assert cut.tokens_out < free.tokens_out


def test_length_finish_and_token_counts(tiny_models):
    b = HFBackend(str(tiny_models[0]), fingerprint="t0")
    r = b.generate([_req("Hello", n=5)])[0]
    assert r.tokens_out <= 5
    assert r.finish_reason in ("stop", "length")
    if r.finish_reason == "length":
        assert r.tokens_out == 5


def test_next_token_logprobs_shape_and_normalisation(tiny_models):
    b = HFBackend(str(tiny_models[0]), fingerprint="t0")
    lp = b.next_token_logprobs([_req(p) for p in PROMPTS[:3]])
    assert lp.shape == (3, len(b.tokenizer))
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3), atol=1e-4)
    # the distribution after a prompt does not depend on which other prompts share the batch
    single = b.next_token_logprobs([_req(PROMPTS[1])])
    assert torch.allclose(single[0], lp[1], atol=1e-4)


def test_system_messages_reach_the_template(tiny_models):
    b = HFBackend(str(tiny_models[0]), fingerprint="t0")
    text = b.render(GenRequest((("system", "You are X."), ("user", "hi")), SamplingParams(4)))
    assert text.startswith("<|im_start|>system\nYou are X.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    prefixed = b.render(GenRequest((("user", "hi"),), SamplingParams(4), assistant_prefix="Sure,"))
    assert prefixed.endswith("<|im_start|>assistant\nSure,")


def test_loglikelihood_matches_step_by_step_scoring(tiny_models):
    b = HFBackend(str(tiny_models[0]), fingerprint="t0")
    reqs = [_req("Say hi"), _req("A longer prompt about many things")]
    conts = ["hello", "ok!"]
    got = b.loglikelihood(reqs, conts)
    for req, cont, ll in zip(reqs, conts, got):
        ids = b.encode(req)
        total = 0.0
        for t in b.tokenizer(cont, add_special_tokens=False)["input_ids"]:
            lp = b.next_token_logprobs([GenRequest(req.messages, req.sampling, assistant_prefix=b.tokenizer.decode(ids[len(b.encode(req)):]))])
            total += float(lp[0, t])
            ids = ids + [t]
        # the same quantity computed token by token through next_token_logprobs on growing prefixes
        assert abs(ll - total) < 1e-3, (ll, total)
        assert ll < 0


def test_token_logprobs_when_asked(tiny_models):
    b = HFBackend(str(tiny_models[0]), fingerprint="t0")
    greedy = b.generate([GenRequest((("user", "hi"),), SamplingParams(6, 0.0, logprobs=True), 1)])[0]
    assert len(greedy.token_logprobs) == len(greedy.top_logprobs) == greedy.tokens_out
    assert greedy.token_logprobs == greedy.top_logprobs  # greedy picks the most likely token
    assert all(x <= 0 for x in greedy.token_logprobs)
    sampled = b.generate([GenRequest((("user", "hi"),), SamplingParams(12, 1.5, 1.0, logprobs=True), 4)])[0]
    assert all(c <= t + 1e-6 for c, t in zip(sampled.token_logprobs, sampled.top_logprobs))
    assert b.generate([_req("hi")])[0].token_logprobs is None
