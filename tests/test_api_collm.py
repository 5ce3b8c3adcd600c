"""api_collm: the deferral head is trained on the task's dev data and decides, token by token, who writes."""
from __future__ import annotations

import json
import math

import pytest
import torch

from moco.config import parse_config
from moco.methods.api.collm import threshold_at
from moco.training.deferral import DeferralHead, marginal_nll


def test_threshold_schedules():
    assert threshold_at(0, 0.5, "none", 10) == 0.5
    assert threshold_at(0, 0.5, "linear", 10) == 1.0
    assert threshold_at(5, 0.5, "linear", 10) == pytest.approx(0.75)
    assert threshold_at(5, 0.5, "cosine", 10) == pytest.approx(0.75)
    assert threshold_at(2, 0.5, "cosine", 10) == pytest.approx(0.5 + 0.25 * (1 + math.cos(math.pi * 0.2)))
    assert threshold_at(10, 0.5, "cosine", 10) == 0.5


def test_marginal_likelihood_matches_hand_computation():
    z, lp_g, lp_m = torch.tensor([0.3, -2.0]), torch.log(torch.tensor([0.2, 0.6])), torch.log(torch.tensor([0.9, 0.1]))
    s = torch.sigmoid(z)
    expected = -torch.log((1 - s) * torch.exp(lp_g) + s * torch.exp(lp_m))
    assert torch.allclose(marginal_nll(z, lp_g, lp_m), expected, atol=1e-6)


def _config(gen, mentor, task, **params):
    return parse_config({
        "method": "api_collm", "task": {"name": str(task), "test_limit": 3},
        "models": [{"model": str(gen), "name": "gen"}, {"model": str(mentor), "name": "mentor"}],
        "params": {"targets": "gold", **params}, "generation": {"max_new_tokens": 14, "temperature": 0.0},
    })


def test_head_learns_to_defer_and_decides_each_token(tiny_models, taught_tiny_mentor, tmp_path, cache):
    """Training lowers the marginal NLL and moves the head; at test every step's P(defer) is the trained head's
    value on the generator's hidden state, the mentor writes exactly where it exceeds the threshold, and a
    deferred token is the mentor's own greedy choice."""
    from moco.models.hf import HFBackend
    from moco.models.base import GenRequest, SamplingParams
    from moco.runner import run_experiment

    mentor_dir, task = taught_tiny_mentor
    res = run_experiment(_config(tiny_models[0], mentor_dir, task, deferral_threshold=0.5), out=tmp_path / "r",
                         cache=cache)
    info = res.metrics["collm"]["head"]
    assert info["targets"]["gold"] == 8 and not info["reused"]
    assert info["pseudo_positive_rate"] > 0.3  # the mentor is right where the random generator is not
    assert info["marginal_nll_after_frozen_features"] < info["marginal_nll_before"] - 0.5
    head = DeferralHead.load(__import__("pathlib").Path(info["path"]) / "head.pt")
    assert float(head.linear.bias.detach()) != -2.0 and float(head.linear.weight.detach().abs().sum()) > 0  # moved
    assert res.metrics["collm"]["deferral_rate"] > 0.5
    gen = HFBackend(str(tiny_models[0]), fingerprint="g")
    mentor = HFBackend(str(mentor_dir), fingerprint="m")
    sp = SamplingParams(max_new_tokens=14, temperature=0.0)
    checked = {"mentor": 0, "generator": 0}
    for pred in res.predictions:
        trace = pred["trace"]
        assert trace["head"] == info["digest"]
        text = "".join(seg for _, seg in trace["segments"])
        deferred = {d["at"]: d for d in trace["deferrals"]}
        for t in range(len(text)):
            req = GenRequest((("user", pred["prompt"]),), sp, assistant_prefix=text[:t])
            ids = torch.tensor([gen.encode(req)])
            with torch.no_grad():
                out = gen.model(input_ids=ids, output_hidden_states=True)
            p = head.p_defer(out.hidden_states[-1][0, -1])
            if t in deferred:
                assert p > 0.5 and deferred[t]["p_defer"] == pytest.approx(p, abs=1e-3)
                assert mentor.tokenizer.decode([int(mentor.next_token_logprobs([req])[0].argmax())]) == text[t]
                checked["mentor"] += 1
            else:
                assert p <= 0.5
                assert gen.tokenizer.decode([int(out.logits[0, -1].argmax())]) == text[t]
                checked["generator"] += 1
    assert checked["mentor"] > 0


def test_rerun_reuses_the_head_and_the_outputs(tiny_models, taught_tiny_mentor, tmp_path, cache):
    from moco.runner import run_experiment

    mentor_dir, task = taught_tiny_mentor
    cfg = _config(tiny_models[0], mentor_dir, task, deferral_strategy="compose",
                  threshold_warmup_schedule="linear", threshold_warmup_steps=4)
    a = run_experiment(cfg, out=tmp_path / "a", cache=cache)
    b = run_experiment(cfg, out=tmp_path / "b", cache=cache)
    assert b.metrics["collm"]["head"]["reused"] and [p["output"] for p in a.predictions] == [p["output"] for p in b.predictions]
    assert b.metrics["phases"]["test"]["cache_hits"] == b.metrics["phases"]["test"]["calls"] == 6
    for p in a.predictions:  # warmup: threshold 1.0 at step 0, nobody defers there
        assert all(d["at"] > 0 and d["threshold"] < 1.0 for d in p["trace"]["deferrals"])
    assert a.metrics["phases"]["dev"]["calls"] == 2  # one training record per model


def test_lora_generator_is_trained_and_decodes(tiny_models, taught_tiny_mentor, tmp_path, cache):
    from moco.runner import run_experiment

    mentor_dir, task = taught_tiny_mentor
    res = run_experiment(_config(tiny_models[0], mentor_dir, task, train_generator="lora", epochs=1),
                         out=tmp_path / "r", cache=cache)
    info = res.metrics["collm"]["head"]
    from safetensors.torch import load_file

    adapter = load_file(__import__("pathlib").Path(info["path"]) / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at 0: it was trained
    assert res.metrics["collm"]["generator"] == "gen+collm-lora"
    calls = [json.loads(x) for x in (tmp_path / "r" / "calls.jsonl").read_text().splitlines()]
    assert {c["model"] for c in calls if c["phase"] == "test"} <= {"gen+collm-lora", "mentor"}


def test_validate_rejects_a_pair_with_different_tokenizers(tiny_models, smollm_dir, tiny_task):
    from moco.errors import ConfigError
    from moco.runner import plan

    cfg = parse_config({"method": "collm", "task": str(tiny_task), "models": [str(tiny_models[0]), str(smollm_dir)]})
    with pytest.raises(ConfigError, match="needs one shared vocabulary: .*differ"):
        plan(cfg)
    plan(parse_config({"method": "collm", "task": str(tiny_task), "models": [str(tiny_models[0]), str(tiny_models[1])]}))


def test_reference_external_dataset_key_is_refused(tiny_models, tiny_task):
    from moco.errors import ConfigError
    from moco.runner import plan

    cfg = parse_config({"method": "api_collm", "task": str(tiny_task), "model_names": [str(p) for p in tiny_models[:2]],
                        "hyperparameters": {"training_dataset_name": "nlile/hendrycks-MATH-benchmark"}})
    with pytest.raises(ConfigError, match="task's own dev split"):
        plan(cfg)
