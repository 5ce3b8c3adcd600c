"""Dev-based selection (`moco.selection`): greedy dev answers or the mean of `dev_repeats` samples, and every
candidate's dev score with its interval recorded next to the choice."""
from __future__ import annotations

from helpers import letter_for, scripted_config
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment


def _lucky(req) -> str:
    """Wrong when greedy; when sampling, right or wrong by the request's seed (a coin per sample)."""
    letter = letter_for(req.messages[-1][1])
    right = req.sampling.temperature > 0 and req.seed % 2 == 0
    return f"The answer is ({letter if right else 'ABCD'[('ABCD'.index(letter) + 1) % 4]})"


def _steady(req) -> str:
    """Right on even questions, whatever the decoding."""
    import re

    q = int(re.search(r"Question (\d+):", req.messages[-1][1]).group(1))
    letter = letter_for(req.messages[-1][1])
    return f"The answer is ({letter if q % 2 == 0 else 'ABCD'[('ABCD'.index(letter) + 1) % 4]})"


def _backends():
    return {"scripted:lucky": ScriptedBackend("lucky", fn=_lucky), "scripted:steady": ScriptedBackend("steady", fn=_steady)}


def _run(tmp_path, cache, tiny_task, name, **generation):
    cfg = scripted_config("prompt_routing", tiny_task, ["lucky", "steady"], {"model_descriptions": ["x", "y"]})
    cfg = cfg.model_copy(update={"decoding": cfg.decoding.model_copy(update={"temperature": 0.7, **generation})})
    backends = _backends()
    return run_experiment(cfg, tmp_path / name, cache=cache, backends=backends), backends


def test_dev_best_records_every_candidate_with_its_interval(tiny_task, cache, tmp_path):
    res, backends = _run(tmp_path, cache, tiny_task, "one")
    sel = res.metrics["dev_selection"]["dev_best"]
    assert (sel["decoding"], sel["repeats"]) == ("sampled", 1)
    rows = {r["candidate"]: r for r in sel["candidates"]}
    # steady is right on dev questions 0 and 2 of 0..3: 0.5, interval over the 4 items around it
    assert rows["steady"]["dev_score"] == 0.5 and rows["steady"]["items"] == 4
    assert rows["steady"]["ci95"][0] <= 0.5 <= rows["steady"]["ci95"][1]
    assert sel["chosen"] == max(rows, key=lambda n: (rows[n]["dev_score"], n == "lucky"))
    assert sel["margin"] == rows[sel["chosen"]]["dev_score"] - min(r["dev_score"] for r in rows.values())
    assert len([c for c in backends["scripted:lucky"].calls if "Question 0:" in c.prompt]) == 1


def test_dev_repeats_average_samples_and_greedy_decodes_once(tiny_task, cache, tmp_path):
    res, backends = _run(tmp_path, cache, tiny_task, "rep", dev_repeats=4)
    sel = res.metrics["dev_selection"]["dev_best"]
    assert sel["repeats"] == 4
    lucky_dev = [c for c in backends["scripted:lucky"].calls if any(f"Question {q}:" in c.prompt for q in range(4))]
    assert len(lucky_dev) == 16 and len({c.seed for c in lucky_dev}) == 16  # 4 independent samples per item
    wins = sum(c.reply == f"The answer is ({letter_for(c.prompt)})" for c in lucky_dev)
    assert {r["candidate"]: r["dev_score"] for r in sel["candidates"]}["lucky"] == wins / 16
    # greedy dev answers: one pass at temperature 0; lucky is then always wrong and steady wins
    res, backends = _run(tmp_path, cache, tiny_task, "greedy", dev_decoding="greedy", dev_repeats=4)
    sel = res.metrics["dev_selection"]["dev_best"]
    assert (sel["decoding"], sel["repeats"], sel["chosen"], sel["margin"]) == ("greedy", 1, "steady", 0.5)
    dev_calls = [c for c in backends["scripted:lucky"].calls if any(f"Question {q}:" in c.prompt for q in range(4))]
    assert len(dev_calls) == 4
