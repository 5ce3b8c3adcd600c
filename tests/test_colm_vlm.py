"""client_server_colm_vlm: scripted VLM stand-ins show the steps; tiny random LLaVAs run the real code path."""
from __future__ import annotations

import re

import pytest

from moco.config import parse_config
from moco.errors import ConfigError
from moco.models.scripted import ScriptedBackend
from moco.runner import plan, run_experiment

N = 6


def vlm(name: str, right: bool) -> ScriptedBackend:
    """Reads the gold letter from the image file name's index (it only 'sees' images it was given); when it
    is shown the other answers it copies the majority letter."""
    from moco.tasks.registry import resolve_task

    golds = {ex.images[0]: ex.answer for ex in resolve_task("shapes_vqa").loader().test}

    def reply(req) -> str:
        assert len(req.images) == 1, "every call carries the question's image"
        prompt = req.messages[-1][1]
        shown = re.findall(r"\[Model \d+\] \w+:r(\d+) The answer is \((\w)\)", prompt)
        if shown:
            letters = [letter for _, letter in shown]
            best = max(sorted(set(letters)), key=letters.count)
            return f"{name}:r{int(shown[0][0]) + 1} The answer is ({best})"
        g = golds[req.images[0]]
        return f"{name}:r0 The answer is ({g if right else 'ABCD'[('ABCD'.index(g) + 1) % 4]})"

    return ScriptedBackend(name, fn=reply, images=True)


def vlm_config(models, params=None, limit=N):
    return parse_config({"method": "client_server_colm_vlm", "task": {"name": "shapes_vqa", "test_limit": limit},
                         "models": models, "params": params or {},
                         "decoding": {"max_new_tokens": 8, "temperature": 0.0}})


def test_answers_concatenated_and_fed_back_with_the_image(cache, tmp_path):
    bs = {f"scripted:{n}": vlm(n, ok) for n, ok in (("janus", False), ("qwen", True), ("gpt", True))}
    cfg = vlm_config(list(bs), {"rounds": 2, "target": "janus", "ablate_only_each": True})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bs)
    for b in bs.values():
        refines = b.received("Answers from several models")
        # round 1 and 2 of the full group, plus one pair group per partner, each for N questions
        assert len(refines) == N * (2 + 2 * 2)
        full_r1 = [c for c in refines if len(re.findall(r"\[Model \d+\]", c.prompt)) == 3 and ":r0 " in c.prompt]
        assert len(full_r1) == N
        assert all(all(f"{o}:r0" in c.prompt for o in ("janus", "qwen", "gpt")) for c in full_r1)
    m = res.metrics["colm_vlm"]
    rows = {r["system"]: r["score"] for r in m["table"]}
    assert rows["janus"] == 0.0 and rows["janus*"] == 1.0 and rows["qwen*"] == 1.0
    assert m["per_round"]["janus"] == [0.0, 1.0, 1.0]
    # Table 3: janus with only one partner; a 1-1 tie goes to the alphabetically first letter of the two
    assert set(m["only"]["janus"]) == {"qwen", "gpt"} and m["only"]["qwen"]["gpt"] == 1.0
    assert res.metrics["score"] == 1.0  # the target's refined answers
    tr = res.predictions[0]["trace"]
    assert tr["target"] == "janus" and tr["alone"]["janus"].startswith("janus:r0") and len(tr["rounds"]) == 2


def test_text_only_models_are_rejected_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="needs images"):
        plan(vlm_config(["smollm2-135m-instruct", "smollm2-135m-instruct"]))


def test_tiny_random_llavas_run_end_to_end(tmp_path_factory, cache, tmp_path):
    from moco.testing import build_tiny_vlm

    root = tmp_path_factory.mktemp("vlms")
    paths = [str(build_tiny_vlm(root / f"v{i}", seed=i)) for i in range(2)]
    cfg = vlm_config(paths, limit=2)
    cfg.decoding.max_new_tokens = 4
    p = plan(cfg)
    assert all(h.spec.kind == "hf" for h in p.pool.handles)
    res = run_experiment(cfg, tmp_path / "run", cache=cache)
    assert res.metrics["n_test"] == 2 and res.metrics["total"]["calls"] == 2 * 2 * 2
    assert res.metrics["phases"]["test"]["tokens_out"] == 2 * 2 * 2 * 4
    rows = [r["system"] for r in res.metrics["colm_vlm"]["table"]]
    assert rows == ["v0", "v0*", "v1", "v1*"]
    again = run_experiment(cfg, tmp_path / "run2", cache=cache)  # images are part of the cache key
    assert again.metrics["total"]["cache_hits"] == 8 and again.predictions[0]["output"] == res.predictions[0]["output"]
