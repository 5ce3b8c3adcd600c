"""api_nudging: where the base model is uncertain the nudging model writes; the decisions are checked one by one."""
from __future__ import annotations

import json

import pytest

from moco.config import parse_config
from moco.models.base import GenRequest, SamplingParams
from moco.methods.api.nudging import decode_nudging, pick_best

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
    assert all(o.usage["base"][1] == 0 for o in always)  # the base wrote nothing
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
                          max_word_tokens=1, word_start=lambda tok, t: True)
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


def test_pick_best_keeps_the_configured_setting_unless_beaten():
    assert pick_best([0.5, 0.5, 0.4]) == 0
    assert pick_best([-3.0, -5.0, -1.0, -2.0]) == 2  # reward-model scores: the best, not the last
    assert pick_best([-3.0, -5.0]) == 0


def _config(tiny_models, task, **params):
    return parse_config({
        "method": "nudging", "task": {"name": str(task), "test_limit": 3},
        "models": [{"model": str(tiny_models[0]), "name": "base"}, {"model": str(tiny_models[1]), "name": "nudger"}],
        "params": {"gamma": 0.1, "max_word_tokens": 2, **params},
        "generation": {"max_new_tokens": 12, "temperature": 0.0},
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


def test_validate_rejects_models_without_logits(tiny_task):
    from moco.errors import ConfigError
    from moco.runner import plan

    cfg = parse_config({"method": "api_nudging", "task": str(tiny_task), "models": ["scripted:a", "scripted:b"]})
    with pytest.raises(ConfigError, match="needs logits"):
        plan(cfg)
