"""api_nudging: where the base model is uncertain the nudging model writes; the decisions are checked one by one."""
from __future__ import annotations

import json

import pytest

from moco.config import parse_config
from moco.models.base import GenRequest, SamplingParams
from moco.methods.api.nudging import decode_nudging

QUESTIONS = ["hi", "hello there friend", "abc"]


def _reqs(n=16):
    sp = SamplingParams(max_new_tokens=n, temperature=0.0)
    return [GenRequest((("user", q),), sp) for q in QUESTIONS], sp


def test_gamma_extremes_give_each_model_alone(tiny_backends):
    """gamma 0: the base is never uncertain enough -> its own greedy text; gamma 1: the nudger writes every word."""
    base, nudger = tiny_backends
    reqs, sp = _reqs()
    alone_base = [r.text for r in base.generate(reqs)]
    alone_nudger = [r.text for r in nudger.generate(reqs)]
    never = decode_nudging(base, nudger, reqs, reqs, gamma=0.0, sampling=sp, nudge_first_word=False)
    always = decode_nudging(base, nudger, reqs, reqs, gamma=1.0, sampling=sp, max_word_tokens=3)
    assert [o.text for o in never] == alone_base
    assert all(o.trace["nudges"] == [] and o.usage["nudger"] == [0, 0] for o in never)  # the nudger never ran
    assert [o.text for o in always] == alone_nudger
    # the base wrote only the tokens that began the nudger's next word (the agreement rule), nothing else
    assert all(o.usage["base"][1] == len(o.trace["agreements"]) for o in always)
    # the text hand-off (re-tokenise each word) and the no-cache recompute give the same result
    via_text = decode_nudging(base, nudger, reqs, reqs, gamma=1.0, sampling=sp, max_word_tokens=3,
                              shared_vocab=False, kv_cache=False)
    assert [o.text for o in via_text] == alone_nudger


def test_each_nudge_happens_exactly_where_the_base_is_uncertain(tiny_backends):
    """Every token is a word here: the nudger writes token t iff the base's top-1 probability there is < gamma,
    recomputed independently from the text before t."""
    import torch

    base, nudger = tiny_backends
    reqs, sp = _reqs(14)
    gamma = 0.1
    outs = decode_nudging(base, nudger, reqs, reqs, gamma=gamma, sampling=sp, nudge_first_word=False,
                          max_word_tokens=1, word_start=lambda tok, t: True, accept_agreeing=False)
    n_nudged = n_kept = 0
    for req, o in zip(reqs, outs):
        nudged_at = {n["at"]: n for n in o.trace["nudges"]}
        text = "".join(seg for _, seg in o.trace["segments"])
        assert text == o.text  # char tokenizer: token positions are character positions
        for t in range(len(text)):
            lp = base.next_token_logprobs([GenRequest(req.messages, sp, assistant_prefix=text[:t])])[0]
            p = float(torch.exp(lp.max()))
            if t in nudged_at:
                assert p < gamma and nudged_at[t]["base_top1"] == pytest.approx(p, abs=1e-3)
                n_nudged += 1
            else:
                assert p >= gamma
                n_kept += 1
    assert n_nudged and n_kept  # both kinds of decision occurred


def _top(backend, req, sp, prefix):
    import torch

    lp = backend.next_token_logprobs([GenRequest(req.messages, sp, assistant_prefix=prefix)])[0]
    return float(torch.exp(lp.max())), backend.tokenizer.decode([int(lp.argmax())])


def _base_positions(o):
    """(position, text written so far) of every character the base wrote."""
    pos, out = 0, []
    for writer, seg in o.trace["segments"]:
        for _ch in seg:
            if writer == "base":
                out.append(pos)
            pos += 1
    return out


def test_uncertainty_is_checked_at_every_token_not_only_at_word_starts(tiny_backends):
    """The authors check the base's top-1 probability at every token: the base never writes a token it is unsure
    of. Checking only at word starts (the old rule) lets it write unsure characters inside words."""
    base, nudger = tiny_backends
    reqs, sp = _reqs(16)
    unsure = {}
    for check_at in ("token", "word"):
        outs = decode_nudging(base, nudger, reqs, reqs, gamma=0.15, sampling=sp, nudge_first_word=False,
                              check_at=check_at, accept_agreeing=False, max_word_tokens=3)
        unsure[check_at] = sum(_top(base, req, sp, o.text[:t])[0] < 0.15
                               for req, o in zip(reqs, outs) for t in _base_positions(o))
    assert unsure["token"] == 0 and unsure["word"] > 0


def test_base_tokens_agreeing_with_the_nudgers_next_word_are_kept(tiny_backends):
    """After a nudged word, an uncertain base token is kept when the nudging model's next word starts with it (the
    authors' agreement rule); every other uncertain position is nudged. Each decision is recomputed here."""
    base, nudger = tiny_backends
    reqs, sp = _reqs(14)
    gamma = 0.2
    outs = decode_nudging(base, nudger, reqs, reqs, gamma=gamma, sampling=sp, nudge_first_word=False,
                          max_word_tokens=1, word_start=lambda tok, t: True)
    agreed = 0
    for req, o in zip(reqs, outs):
        nudged = {n["at"] for n in o.trace["nudges"]}
        kept = {a["at"]: a for a in o.trace["agreements"]}
        for t in range(len(o.text)):
            p, base_tok = _top(base, req, sp, o.text[:t])
            if t in kept:  # uncertain, right after a nudge, and the nudger's next word began with the base token
                _, nudger_tok = _top(nudger, req, sp, o.text[:t])
                assert p < gamma and t - 1 in nudged and nudger_tok.startswith(base_tok) and o.text[t] == base_tok
                assert kept[t]["token"] == base_tok and kept[t]["base_top1"] == pytest.approx(p, abs=1e-3)
                agreed += 1
            elif t in nudged:
                assert p < gamma
            else:
                assert p >= gamma
    assert agreed > 0


def test_choice_keeps_the_configured_setting_unless_beaten():
    """The search's rule (`moco.selection.choose`): index 0 (the configured pair) unless strictly beaten."""
    import types

    from moco.config import DecodingSettings
    from moco.selection import choose

    ctx = types.SimpleNamespace(decoding=DecodingSettings(), seed=0, metrics={})
    assert choose(ctx, "x", ["conf", "a", "b"], [[0.5], [0.5], [0.4]]) == 0
    assert choose(ctx, "x", ["conf", "a", "b"], [[0.5], [0.6], [0.6]]) == 1
    assert choose(ctx, "x", ["conf", "a"], [[-2.0], [-1.0]]) == 1  # reward-model scores below zero
    assert ctx.metrics["dev_selection"]["x"]["chosen"] == "a"


def _config(tiny_models, task, **params):
    return parse_config({
        "method": "nudging", "task": {"name": str(task), "test_limit": 3},
        "models": [{"model": str(tiny_models[0]), "name": "base"}, {"model": str(tiny_models[1]), "name": "nudger"}],
        "params": {"gamma": 0.1, "max_word_tokens": 2, **params},
        "decoding": {"max_new_tokens": 12, "temperature": 0.0},
    })


def test_runs_end_to_end_records_costs_and_resumes_from_the_cache(tiny_models, tiny_task, tmp_path, cache):
    from moco.runner import run_experiment

    cfg = _config(tiny_models, tiny_task)
    res = run_experiment(cfg, out=tmp_path / "run1", cache=cache)
    preds = res.predictions
    assert all(p["trace"]["nudges"] and p["trace"]["nudger"] == "nudger" for p in preds)
    calls = [json.loads(line) for line in (tmp_path / "run1" / "calls.jsonl").read_text().splitlines()]
    assert {c["model"] for c in calls} == {"base", "nudger"} and not any(c["cache_hit"] for c in calls)
    test = res.metrics["phases"]["test"]
    assert test["tokens_out"] > 0 and test["calls"] == 6
    again = run_experiment(cfg, out=tmp_path / "run2", cache=cache)
    assert [p["output"] for p in again.predictions] == [p["output"] for p in preds]
    assert again.metrics["phases"]["test"]["cache_hits"] == 6
    assert again.predictions[0]["trace"] == preds[0]["trace"]


def test_dev_search_reports_the_grid_and_charges_dev(tiny_models, tiny_task, tmp_path, cache):
    from moco.runner import run_experiment

    cfg = _config(tiny_models, tiny_task, search_gamma=True, gamma_grid=[0.05, 0.3])
    res = run_experiment(cfg, out=tmp_path / "run", cache=cache)
    search = res.metrics["nudging_search"]
    assert [row["gamma"] for row in search["grid"]] == [0.1, 0.05, 0.3]
    # gibberish models score 0 everywhere: the configured gamma stays (the reference would return the last one)
    assert search["chosen"]["gamma"] == 0.1 and res.metrics["nudging"]["gamma"] == 0.1
    assert res.metrics["phases"]["dev"]["calls"] == 3 * 2 * 4  # 3 settings x 2 models x 4 dev items
    sel = res.metrics["dev_selection"]["nudging"]  # every setting's dev score with its interval, and the margin
    assert [c["candidate"] for c in sel["candidates"]] == ["gamma=0.1 nudger=nudger", "gamma=0.05 nudger=nudger",
                                                          "gamma=0.3 nudger=nudger"]
    assert all(c["ci95"] is None and c["ci_note"] == "all scores equal" and c["items"] == 4 for c in sel["candidates"]) and sel["margin"] == 0.0


def test_validate_rejects_models_without_logits(tiny_task):
    from moco.errors import ConfigError
    from moco.runner import plan

    cfg = parse_config({"method": "api_nudging", "task": str(tiny_task), "models": ["scripted:a", "scripted:b"]})
    with pytest.raises(ConfigError, match="needs logits"):
        plan(cfg)
