"""The token-level API methods on the real embedded SmolLM2 (pseudo-experts), from the example configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from moco.config import load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, tmp_path, cache, limit: int = 2, max_new_tokens: int = 24, dev_limit: int | None = None,
         **params):
    from moco.runner import run_experiment

    cfg = load_config(EXAMPLES / f"{name}.yaml")
    cfg = cfg.model_copy(update={
        "task": cfg.task.model_copy(update={"test_limit": limit, "dev_limit": dev_limit}),
        "decoding": cfg.decoding.model_copy(update={"max_new_tokens": max_new_tokens}),
        "params": {**cfg.params, **params},
    })
    return run_experiment(cfg, out=tmp_path / name, cache=cache)


@pytest.mark.smollm
def test_nudging_on_smollm_hands_words_to_the_nudger_where_the_base_is_unsure(smollm_dir, tmp_path, cache):
    res = _run("api_nudging_pseudo_experts", tmp_path, cache, max_new_tokens=16)
    decided = [n for p in res.predictions for n in p["trace"]["nudges"] if n["base_top1"] is not None]
    assert decided and all(n["base_top1"] < 0.4 for n in decided)
    writers = {w for p in res.predictions for w, _ in p["trace"]["segments"]}
    assert writers == {"base", "nudger"}
    assert set(res.metrics["phases"]["test"]["per_model"]) == {"base", "nudger"}


@pytest.mark.slow
def test_collm_example_trains_on_dev_and_defers(smollm_dir, tmp_path, cache):
    res = _run("api_collm_pseudo_experts", tmp_path, cache, dev_limit=8)
    head = res.metrics["collm"]["head"]
    assert head["tokens"] > 0 and head["marginal_nll_after_frozen_features"] <= head["marginal_nll_before"]
    assert res.metrics["phases"]["dev"]["calls"] > 0 and res.metrics["phases"]["test"]["calls"] == 4


@pytest.mark.slow
def test_mentor_collab_example_consults_the_mentor(smollm_dir, tmp_path, cache):
    res = _run("api_mentor_collab_pseudo_experts", tmp_path, cache, dev_limit=8, decision_proportion=0.5)
    assert res.metrics["mentor_collab"]["consulted"] > 0


@pytest.mark.slow
def test_switch_generation_example_trains_a_selector(smollm_dir, tmp_path, cache):
    res = _run("api_switch_generation_pseudo_experts", tmp_path, cache, dev_limit=8, training_instances=4,
               rollouts_per_instance=3, sft_epochs=1)
    info = res.metrics["switch_generation"]
    assert info["selector"] == "switch-selector" and info["training"]["examples"] > 0
    assert sum(info["segment_share"].values()) == pytest.approx(1.0)


@pytest.mark.slow  # ~55 s: loads a second SmolLM2 backend
@pytest.mark.smollm
def test_nudging_across_tokenizers_hands_over_words_as_text(smollm_dir, tiny_backends):
    """A character-level tiny base nudged by SmolLM2 (a byte-level BPE): gamma 1 makes SmolLM2 write every word,
    re-tokenised for the base after each one, and the answer is SmolLM2's own greedy text; gamma 0 leaves the
    base alone."""
    from moco.methods.api.nudging import decode_nudging
    from moco.models.base import GenRequest, SamplingParams
    from moco.models.hf import HFBackend

    smol = HFBackend(str(smollm_dir), fingerprint="smol")
    base = tiny_backends[0]
    sp = SamplingParams(max_new_tokens=40, temperature=0.0)  # base (character) tokens
    reqs = [GenRequest((("user", q),), sp) for q in ("What is the capital of France?", "Name a primary color.")]
    smol_alone = smol.generate([GenRequest(r.messages, SamplingParams(max_new_tokens=24, temperature=0.0))
                                for r in reqs])
    nudged = decode_nudging(base, smol, reqs, reqs, gamma=1.0, sampling=sp)
    for o, alone in zip(nudged, smol_alone):
        assert not o.trace["shared_vocab"] and {w for w, _ in o.trace["segments"]} == {"nudger"}
        assert o.text and (alone.text.startswith(o.text) or o.text.startswith(alone.text))
        assert o.trace["base_tokens"] >= len(o.text)  # the base holds the text in its own (character) tokens
    never = decode_nudging(base, smol, reqs, reqs, gamma=0.0, sampling=sp, nudge_first_word=False)
    assert [o.text for o in never] == [r.text for r in base.generate(reqs)]
