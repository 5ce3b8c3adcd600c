"""The token-level decoding machinery: batched KV-cache stepping equals plain decoding, also after cut-backs."""
from __future__ import annotations

import pytest

from moco.models.base import GenRequest, SamplingParams
from moco.models.stepper import Stepper, run_rows, same_vocabulary, sample, starts_word

QUESTIONS = ["hi", "hello there friend, how are you", "abc"]


def _reqs(n_tokens: int = 12, temperature: float = 0.0):
    sp = SamplingParams(max_new_tokens=n_tokens, temperature=temperature)
    return [GenRequest((("user", q),), sp, seed=100 + i) for i, q in enumerate(QUESTIONS)]


def _greedy(st: Stepper, n: int):
    sp = SamplingParams(temperature=0.0)

    def prog(row):
        for _ in range(n):
            yield st
            tok = sample(st.logits[row], sp, None)
            st.append(row, [tok])
            if tok in st.eos_ids:
                return

    return {r: prog(r) for r in range(len(st.ids))}


@pytest.mark.parametrize("kv", [True, False])
def test_stepper_matches_backend_generate(tiny_backends, kv):
    b = tiny_backends[0]
    reqs = _reqs()
    ref = [r.text for r in b.generate(reqs)]
    st = Stepper(b, [b.encode(r) for r in reqs], kv_cache=kv)
    run_rows(_greedy(st, 12), [st])
    assert [st.text_of(r, st.prompt_len[r]) for r in range(3)] == ref
    assert st.forwards == 12  # one batched forward per step for all rows (prefill + 11 increments)


def test_truncate_and_refeed_gives_the_same_continuation(tiny_backends):
    """Cutting a row back (a lookahead that was not chosen) and decoding again reproduces the same tokens."""
    b = tiny_backends[0]
    reqs = _reqs()
    ref = [r.text for r in b.generate(reqs)]
    st = Stepper(b, [b.encode(r) for r in reqs])
    sp = SamplingParams(temperature=0.0)

    def prog(row):
        for _ in range(5 + row):  # rows at different lengths: increments of different widths
            yield st
            st.append(row, [sample(st.logits[row], sp, None)])
        st.truncate(row, len(st.ids[row]) - 3)
        st.append(row, [])
        while len(st.generated(row)) < 12:
            yield st
            st.append(row, [sample(st.logits[row], sp, None)])

    run_rows({r: prog(r) for r in range(3)}, [st])
    assert [st.text_of(r, st.prompt_len[r]) for r in range(3)] == ref


def test_multi_token_increments_and_two_models(tiny_backends):
    """A row fed a chunk of another model's tokens predicts exactly as if it had decoded them itself."""
    a, b = tiny_backends
    reqs = _reqs()
    sp = SamplingParams(temperature=0.0)
    st_a = Stepper(a, [a.encode(r) for r in reqs])
    st_b = Stepper(b, [b.encode(r) for r in reqs])

    def prog(row):
        for _ in range(4 + 2 * row):  # model a writes 4, 6, 8 tokens
            yield st_a
            st_a.append(row, [sample(st_a.logits[row], sp, None)])
        st_b.append(row, st_a.generated(row))  # b catches up in one increment
        yield st_b
        return

    run_rows({r: prog(r) for r in range(3)}, [st_a, st_b])
    for r, req in enumerate(reqs):
        own = b.next_token_logprobs([GenRequest(req.messages, req.sampling, assistant_prefix=st_a.text_of(r, st_a.prompt_len[r]))])
        assert int(own[0].argmax()) == int(st_b.logits[r].argmax())
        assert st_b.usage[r].tokens_in == st_b.prompt_len[r] + 4 + 2 * r and st_b.usage[r].tokens_out == 0


def test_release_drops_finished_rows_and_keeps_the_rest_right(tiny_backends):
    b = tiny_backends[0]
    reqs = _reqs()
    ref = [r.text for r in b.generate(reqs)]
    st = Stepper(b, [b.encode(r) for r in reqs])
    sp = SamplingParams(temperature=0.0)

    def prog(row):
        for _ in range(3 if row < 2 else 12):  # rows 0 and 1 stop early; row 2 continues after a compaction
            yield st
            st.append(row, [sample(st.logits[row], sp, None)])

    run_rows({r: prog(r) for r in range(3)}, [st])
    assert st._mask.shape[0] == 1  # the cache batch shrank to the one live row
    assert st.text_of(2, st.prompt_len[2]) == ref[2]
    assert st.text_of(0, st.prompt_len[0]) == ref[0][:3]


def test_word_starts_and_vocabularies(tiny_backends):
    tok = tiny_backends[0].tokenizer
    space, letter = tok.convert_tokens_to_ids(" "), tok.convert_tokens_to_ids("a")
    assert starts_word(tok, space) and not starts_word(tok, letter)
    assert same_vocabulary(tiny_backends[0].tokenizer, tiny_backends[1].tokenizer)


@pytest.mark.smollm
def test_smollm_word_starts(smollm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm_dir)
    ids = tok("Paris is nice", add_special_tokens=False)["input_ids"]
    assert [starts_word(tok, i) for i in ids] == [False, True, True]
