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
        "params": {"targets": "gold", **params}, "decoding": {"max_new_tokens": 14, "temperature": 0.0},
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
    cfg = _config(tiny_models[0], mentor_dir, task, deferral_strategy="compose", deferral_threshold=0.5,
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


def test_threshold_is_chosen_on_dev_and_decoding_is_greedy(tiny_models, taught_tiny_mentor, tmp_path, cache):
    """The paper's protocol: the deferral threshold is the one with the best dev score (each grid value decodes
    the dev set), greedy decoding; the test traces carry the chosen threshold."""
    from moco.runner import run_experiment

    mentor_dir, task = taught_tiny_mentor
    cfg = _config(tiny_models[0], mentor_dir, task, threshold_grid=[0.05, 0.5, 0.999])
    cfg = cfg.model_copy(update={"decoding": cfg.decoding.model_copy(update={"temperature": 0.9})})
    res = run_experiment(cfg, out=tmp_path / "r", cache=cache)
    sel = res.metrics["dev_selection"]["deferral_threshold"]
    scores = {c["candidate"]: c["dev_score"] for c in sel["candidates"]}
    assert list(scores) == ["0.05", "0.5", "0.999"] and all(c["items"] == 8 for c in sel["candidates"])
    best = max(scores.values())
    assert sel["chosen"] == max((t for t, v in scores.items() if v == best), key=float)  # ties: the higher one
    # at 0.999 the mentor (almost) never writes, at 0.05 it writes (almost) everything
    assert sel["deferral_rates"]["0.05"] > sel["deferral_rates"]["0.999"]
    m = res.metrics["collm"]
    assert m["threshold"] == float(sel["chosen"]) and m["threshold_from"] == "dev" and m["decoding"] == "greedy"
    assert all(p["trace"]["threshold"] == m["threshold"] for p in res.predictions)
    calls = [json.loads(x) for x in (tmp_path / "r" / "calls.jsonl").read_text().splitlines()]
    tags = {c["tag"] for c in calls if c["phase"] == "dev"}
    assert {"threshold 0.05", "threshold 0.5", "threshold 0.999"} <= tags
    # greedy although the run samples at 0.9: the dev-best threshold's dev outputs equal a re-decode
    again = run_experiment(cfg, out=tmp_path / "r2", cache=None)
    assert [p["output"] for p in again.predictions] == [p["output"] for p in res.predictions]


def test_joint_training_runs_on_the_generators_device(tiny_models, taught_tiny_mentor, tmp_path, cache, monkeypatch):
    """LoRA joint fine-tuning is placed where the run places the generator (a GPU, mocked), not always the CPU."""
    import moco.methods.api.collm as collm
    from moco.runner import run_experiment

    placed, seen = [], {}
    real_place, real_train = collm.training_placement, collm.train_deferral_head

    def place(ctx, handle):
        placed.append((handle.name, real_place(ctx, handle)))
        return "cuda:1", "bfloat16"  # what the run would say for a generator placed on GPU 1

    def train(*a, **kw):
        seen.update(device=kw["device"], dtype=kw["dtype"])
        return real_train(*a, **{**kw, "device": "cpu", "dtype": "float32"})  # no GPU in tests

    monkeypatch.setattr(collm, "training_placement", place)
    monkeypatch.setattr(collm, "train_deferral_head", train)
    mentor_dir, task = taught_tiny_mentor
    run_experiment(_config(tiny_models[0], mentor_dir, task, deferral_threshold=0.5, train_generator="lora", epochs=1),
                   out=tmp_path / "r", cache=cache)
    assert placed == [("gen", ("cpu", "float32"))] and seen == {"device": "cuda:1", "dtype": "bfloat16"}


def test_training_placement_follows_the_runs_device_and_dtype(monkeypatch):
    """Where a pool model trains: its spec device / hardware.gpu_ids placement, in the run's precision."""
    import types

    import torch

    from moco.training.adapters import training_placement

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (8, 0) if i == 1 else (7, 0))

    def ctx_with(device, dtype="auto"):
        handle = types.SimpleNamespace(spec=types.SimpleNamespace(dtype=dtype))
        return types.SimpleNamespace(local=lambda h: types.SimpleNamespace(device=device)), handle

    assert training_placement(*ctx_with("cuda:1")) == ("cuda:1", "bfloat16")
    assert training_placement(*ctx_with("cuda:0")) == ("cuda:0", "float16")  # pre-Ampere GPU
    assert training_placement(*ctx_with("cuda:1", "float32")) == ("cuda:1", "float32")
    assert training_placement(*ctx_with("cpu")) == ("cpu", "float32")
