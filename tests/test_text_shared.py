"""Building blocks of the text methods: gold answers in the task's own format, and what a model sees."""
from __future__ import annotations

import json

import pytest

from moco.config import parse_config
from moco.errors import ConfigError
from moco.methods.text.shared import gold_completion, per_model
from moco.methods.trained import chat
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment
from moco.scoring.exact import ExactMatchScorer
from moco.scoring.multiple_choice import MultipleChoiceScorer
from moco.tasks import formats
from moco.tasks.base import Example
from moco import aio


def test_gold_completion_scores_as_correct_in_every_prompt_format():
    choices = {"A": "Paris", "B": "Rome"}
    shown = Example("1", 0, "dev", formats.multiple_choice("Capital of Italy?", choices), "Capital of Italy?", "B", choices)
    opened = Example("2", 1, "dev", formats.open_choice("Capital of Italy?"), "Capital of Italy?", "B", choices)
    exact = Example("3", 2, "dev", formats.exact_match("2+2?"), "2+2?", "4")
    mc, em = MultipleChoiceScorer(), ExactMatchScorer()
    assert gold_completion(shown) == "The answer is (B) Rome." and mc.score(shown, gold_completion(shown)).strict == 1.0
    assert gold_completion(opened) == "Rome." and mc.score(opened, gold_completion(opened)).score == 1.0
    assert gold_completion(exact) == "\\boxed{4}" and em.score(exact, gold_completion(exact)).score == 1.0
    assert gold_completion(Example("4", 3, "dev", "Write a poem", "Write a poem", None)) is None


def test_chat_messages_match_what_generate_sends(tiny_task, cache):
    from moco.config import parse_config
    from moco.context import Call, RunContext
    from moco.models.scripted import ScriptedBackend
    from moco.runner import plan
    from moco.trace import CallRecorder

    cfg = parse_config({"method": "single_model", "task": {"name": str(tiny_task)},
                        "models": [{"model": "scripted:x", "role_prompt": "You are a mathematician."}, "scripted:y"]})
    bk = {"scripted:x": ScriptedBackend("x", default="ok"), "scripted:y": ScriptedBackend("y", default="ok")}
    p = plan(cfg, backends=bk)
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=CallRecorder(None),
                     decoding=p.config.decoding)
    aio.run(ctx.generate([Call(0, "Q"), Call(1, "Q")]))
    for h, name in zip(ctx.models, "xy"):
        assert list(bk[f"scripted:{name}"].calls[0].messages) == chat(h, "Q")
    assert chat(ctx.models[0], "Q")[0] == ("system", "You are a mathematician.")
    assert per_model(list(range(6)), 3) == [[0, 1, 2], [3, 4, 5]]



@pytest.mark.parametrize("method, params", [("text_multiagent_refine", {"final": "vote"}),
                                            ("text_multiagent_feedback", {"final": "vote"}),
                                            ("text_structure", {"structure": "chain", "final": "vote"})])
def test_final_vote_needs_definite_answers_before_any_call(method, params, tmp_path, cache):
    """On a generation-only task (prompts, no gold) a final vote is refused with one clear error, and no model
    is asked anything first."""
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Write a haiku {i}"}) + "\n" for i in range(3)))
    bs = {f"scripted:{n}": ScriptedBackend(n, default="ok") for n in "ab"}
    cfg = parse_config({"method": method, "task": str(p), "models": list(bs), "params": params})
    with pytest.raises(ConfigError, match="final 'vote' needs a task with definite answers"):
        run_experiment(cfg, tmp_path / "run", cache=cache, backends=bs)
    assert all(not b.calls for b in bs.values())
