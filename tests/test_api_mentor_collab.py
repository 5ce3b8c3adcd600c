"""api_mentor_collab: sampled consultations, lookahead segments, and a judge (the generator or a trained MLP)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moco.config import parse_config
from moco.methods.api.mentor_collab import ANCHOR, QUESTION, Params, decode_mentor_collab
from moco.models.base import GenRequest, SamplingParams

QUESTIONS = ["hi", "hello there friend", "abc"]


def _reqs(n=16):
    sp = SamplingParams(max_new_tokens=n, temperature=0.0)
    return [GenRequest((("user", q),), sp, seed=7 + i) for i, q in enumerate(QUESTIONS)], sp


def test_decision_proportion_is_a_probability_and_reads_reference_percentages():
    assert Params().decision_proportion == 0.25  # the default consults the mentor (the reference's never does)
    assert Params(decision_proportion=25).decision_proportion == 0.25
    assert Params(decision_proportion=0.6).decision_proportion == 0.6


def test_never_consulting_or_an_agreeing_mentor_leaves_the_generator_alone(tiny_backends):
    gen, other = tiny_backends
    reqs, sp = _reqs()
    alone = [r.text for r in gen.generate(reqs)]
    never = decode_mentor_collab(gen, other, reqs, reqs, sampling=sp, proportion=0.0, patch=4, max_word=2)
    assert [o.text for o in never] == alone and all(o.usage["mentor"] == [0, 0] for o in never)
    twin = decode_mentor_collab(gen, gen, reqs, reqs, sampling=sp, proportion=1.0, patch=4, max_word=2)
    assert [o.text for o in twin] == alone
    assert all(o.trace["consulted"] > 0 and o.trace["decisions"] == [] for o in twin)  # same words: no divergence


def test_free_mode_the_generator_judges_each_divergence(tiny_backends):
    """At every divergence the generator's own logits for A/B after the question decide, recomputed here from the
    text before the segments; the chosen segment is what the answer continues with."""
    gen, mentor = tiny_backends
    reqs, sp = _reqs(16)
    outs = decode_mentor_collab(gen, mentor, reqs, reqs, sampling=sp, proportion=0.5, patch=4, max_word=2,
                                option_order="fixed")
    ids = gen.tokenizer.convert_tokens_to_ids(["A", "B"])
    n = 0
    for req, o in zip(reqs, outs):
        text = "".join(seg for _, seg in o.trace["segments"])
        assert text.strip() == o.text
        for d in o.trace["decisions"]:
            before = text[:d["at"]]  # char tokenizer: positions are characters
            q = before + QUESTION.format(a=d["generator"].strip(), b=d["mentor"].strip()) + ANCHOR
            lp = gen.next_token_logprobs([GenRequest(req.messages, sp, assistant_prefix=q)])[0]
            want = "mentor" if lp[ids[1]] > lp[ids[0]] else "generator"
            assert d["chose"] == want and d["score"] == pytest.approx(float(lp[ids[1]] - lp[ids[0]]), abs=1e-3)
            assert text[d["at"]:].startswith(d[want])
            n += 1
    assert n >= 3
    assert all(o.usage["mentor"][1] > 0 for o in outs if o.trace["decisions"])


def test_free_mode_judges_both_slot_orders_by_default(tiny_backends):
    """Default (`option_order: both`): the generator judges each divergence twice, once with its own segment in
    slot A and once in slot B; the mean of the two mentor preferences decides (no A/B position bias)."""
    gen, mentor = tiny_backends
    reqs, sp = _reqs(16)
    outs = decode_mentor_collab(gen, mentor, reqs, reqs, sampling=sp, proportion=0.5, patch=4, max_word=2)
    ids = gen.tokenizer.convert_tokens_to_ids(["A", "B"])
    n = 0
    for req, o in zip(reqs, outs):
        text = "".join(seg for _, seg in o.trace["segments"])
        for d in o.trace["decisions"]:
            before = text[:d["at"]]
            g, m = d["generator"].strip(), d["mentor"].strip()
            prefs = []
            for a, b, mentor_slot in ((g, m, 1), (m, g, 0)):
                q = before + QUESTION.format(a=a, b=b) + ANCHOR
                lp = gen.next_token_logprobs([GenRequest(req.messages, sp, assistant_prefix=q)])[0]
                prefs.append(float(lp[ids[mentor_slot]] - lp[ids[1 - mentor_slot]]))
            assert d["generator_slot"] == ["A", "B"]
            assert d["mentor_preference"] == pytest.approx(prefs, abs=1e-3)
            assert d["score"] == pytest.approx(sum(prefs) / 2, abs=1e-3)
            assert d["chose"] == ("mentor" if sum(prefs) > 0 else "generator")
            n += 1
    assert n >= 3
    # seeded: one order per decision, drawn from the example's seeded generator, both orders occur
    seeded = decode_mentor_collab(gen, mentor, reqs, reqs, sampling=sp, proportion=0.5, patch=4, max_word=2,
                                  option_order="seeded")
    slots = [d["generator_slot"] for o in seeded for d in o.trace["decisions"]]
    assert all(len(x) == 1 for x in slots) and {"A", "B"} == {x[0] for x in slots}
    again = decode_mentor_collab(gen, mentor, reqs, reqs, sampling=sp, proportion=0.5, patch=4, max_word=2,
                                 option_order="seeded")
    assert [o.trace for o in again] == [o.trace for o in seeded]


def test_stops_at_the_end_of_sequence(taught_tiny_mentor, tiny_backends):
    """The reference never checks EOS; here a generator that ends its answer ends the output."""
    from moco.models.hf import HFBackend

    taught = HFBackend(str(taught_tiny_mentor[0]), fingerprint="taught")
    req = [GenRequest((("user", "Question 3: which option is right?\n\nA) a\nB) b\nC) c\nD) d\n\n"
                                "Answer with the letter of the correct option, in the form \"The answer is (X)\"."),),
                      SamplingParams(max_new_tokens=40, temperature=0.0))]
    out = decode_mentor_collab(taught, tiny_backends[0], req, req, sampling=req[0].sampling, proportion=0.0, patch=4)[0]
    alone = taught.generate(req)[0]
    assert alone.finish_reason == "stop" and alone.tokens_out < 30  # the taught model ends its answers
    assert out.finish == "stop" and out.text == alone.text and out.trace["tokens"] == alone.tokens_out - 1


def _config(gen, mentor, task, **params):
    return parse_config({
        "method": "api_mentor_collab", "task": {"name": str(task), "test_limit": 3},
        "models": [{"model": str(gen), "name": "gen"}, {"model": str(mentor), "name": "mentor"}],
        "params": {"patch_size": 6, "max_word_tokens": 3, "decision_proportion": 0.5, **params},
        "decoding": {"max_new_tokens": 24, "temperature": 0.0},
    })


def test_train_mode_learns_the_classifier_on_dev_and_uses_it(tiny_models, taught_tiny_mentor, tmp_path, cache):
    """Dev divergence points are labelled by scoring both completed branches; the MLP trained on them is the
    judge at test: every test decision's score is the MLP's output on the generator's hidden state there."""
    from moco.models.hf import HFBackend
    from moco.runner import run_experiment
    from moco.training.classifier import BranchClassifier

    mentor_dir, task = taught_tiny_mentor
    res = run_experiment(_config(tiny_models[0], mentor_dir, task, mode="train", decision_proportion=1.0),
                         out=tmp_path / "r", cache=cache)
    info = res.metrics["mentor_collab_mlp"]
    assert info["labelled"] > 0 and info["mentor_better"] > 0  # the taught mentor's segments win on dev
    assert info["last_loss"] < info["first_loss"]
    rows = json.loads((tmp_path / "r" / "artifacts" / "mentor_collab_mlp.json").read_text())["rows"]
    assert len(rows) == info["points"]  # labels: the branch whose completion scored higher; ties dropped
    assert info["labelled"] == sum(r["score_generator"] != r["score_mentor"] for r in rows)
    assert info["generator_better"] == sum(r["score_generator"] > r["score_mentor"] for r in rows)
    dev = res.metrics["phases"]["dev"]
    assert dev["calls"] > 0 and dev["per_model"]["gen"]["tokens_out"] > 0  # rollouts and completions are dev cost
    clf = BranchClassifier(32)
    clf.net.load_state_dict(torch.load(Path(info["path"]) / "mlp.pt", weights_only=True))
    gen = HFBackend(str(tiny_models[0]), fingerprint="g")
    sp = SamplingParams(max_new_tokens=24, temperature=0.0)
    n = 0
    for pred in res.predictions:
        text = "".join(seg for _, seg in pred["trace"]["segments"])
        for d in pred["trace"]["decisions"]:
            q = text[:d["at"]] + QUESTION.format(a=d["generator"].strip(), b=d["mentor"].strip())
            ids = torch.tensor([gen.encode(GenRequest((("user", pred["prompt"]),), sp, assistant_prefix=q))])
            with torch.no_grad():
                hidden = gen.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
            assert d["score"] == pytest.approx(clf.score(hidden), abs=1e-3)
            assert d["chose"] == ("generator" if clf.score(hidden) > 0.5 else "mentor")
            n += 1
    assert n > 0


def test_runs_end_to_end_with_costs_and_cache(tiny_models, tiny_task, tmp_path, cache):
    from moco.runner import run_experiment

    cfg = _config(tiny_models[0], tiny_models[1], tiny_task)
    a = run_experiment(cfg, out=tmp_path / "a", cache=cache)
    assert a.metrics["mentor_collab"]["consulted"] > 0 and a.metrics["phases"]["test"]["calls"] == 6
    b = run_experiment(cfg, out=tmp_path / "b", cache=cache)
    assert [p["output"] for p in b.predictions] == [p["output"] for p in a.predictions]
    assert b.metrics["phases"]["test"]["cache_hits"] == 6
