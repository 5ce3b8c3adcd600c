"""Mixture-of-Agents and Self-MoA on scripted models: which layer saw which responses, who aggregated."""
from __future__ import annotations

import re

from helpers import assert_dev_best, letter_for, scripted_config
from moco.models.scripted import ScriptedBackend
from moco.runner import run_experiment
from text_agents import wrong


def layered(name: str, correct: bool) -> ScriptedBackend:
    """Without a system prompt: '<name>@1 ...'; with the aggregate prompt: '<name>@<depth>[authors] ...' where
    depth = 1 + the deepest response shown and authors are the shown responses' writers."""

    def reply(req) -> str:
        system = next((c for r, c in req.messages if r == "system"), "")
        letter = letter_for(req.messages[-1][1])
        letter = letter if correct else wrong(letter)
        if "Responses from models:" not in system:
            return f"{name}@1#{req.seed % 1000} The answer is ({letter})"
        shown = re.findall(r"^\d+\. (\w+)@(\d+)", system, re.M)
        depth = 1 + max(int(d) for _, d in shown)
        return f"{name}@{depth}[{','.join(a for a, _ in shown)}] The answer is ({letter})"

    return ScriptedBackend(name, fn=reply)


def test_moa_layers_see_the_previous_layer(tiny_task, cache, tmp_path):
    bk = {f"scripted:{n}": layered(n, n == "c") for n in "abc"}
    res = run_experiment(scripted_config("text_mixture_of_agents", tiny_task, "abc", {"layers": 3}), tmp_path / "run",
                         cache=cache, backends=bk)
    for n in "abc":
        b = bk[f"scripted:{n}"]
        layer2 = [c for c in b.calls if "Responses from models:" in c.prompt and c.reply.startswith(f"{n}@2")]
        assert len(layer2) == 8  # every proposer aggregates layer 1 (all three proposers) in layer 2
        assert all(re.search(r"1\. a@1.*\n2\. b@1.*\n3\. c@1", c.messages[0][1]) for c in layer2)
    finals = bk["scripted:c"].received("Responses from models:")  # c is the dev-best: the aggregator
    agg = [c for c in finals if c.reply.startswith("c@3")]
    assert len(agg) == 8 and all(c.reply.startswith("c@3[a,b,c]") for c in agg)
    tr = res.predictions[0]["trace"]
    assert tr["aggregator"] == "c" and len(tr["layers"]) == 2
    assert tr["layers"][1]["a"].startswith("a@2[a,b,c]") and res.predictions[0]["output"].startswith("c@3[a,b,c]")
    assert res.metrics["score"] == 1.0 and res.metrics["calls_per_question"] == 7
    assert res.metrics["phases"]["test"]["calls"] == 8 * 7
    assert_dev_best(res.metrics, "c", 3)  # the aggregator, chosen on these dev scores


def test_moa_lite_with_chosen_proposers_and_aggregator_role(tiny_task, cache, tmp_path):
    bk = {f"scripted:{n}": layered(n, n == "c") for n in "abc"}
    cfg = scripted_config("text_mixture_of_agents", tiny_task, "abc", {"layers": 2, "proposers": ["a", "b"]},
                          roles={"aggregator": "b"})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bk)
    assert not bk["scripted:c"].calls  # neither proposer nor aggregator, and no dev-best selection needed
    assert res.predictions[0]["output"].startswith("b@2[a,b]") and "dev" not in res.metrics["phases"]


def test_self_moa_aggregates_one_models_samples(tiny_task, cache, tmp_path):
    """Compute-matched to MoA's default (3 layers over 3 models = 2 x 3 proposals + 1 aggregation = 7 calls per
    question): the dev-best samples 6 answers and aggregates all of them in one call."""
    bk = {f"scripted:{n}": layered(n, n == "b") for n in "abc"}
    res = run_experiment(scripted_config("text_self_moa", tiny_task, "abc", decoding={"temperature": 0.7,
                                                                                       "max_new_tokens": 32}),
                         tmp_path / "run", cache=cache, backends=bk)
    tr = res.predictions[0]["trace"]
    assert tr["proposer"] == tr["aggregator"] == "b"  # the dev-best samples and aggregates
    assert_dev_best(res.metrics, "b", 3)
    assert len(tr["samples"]) == 6 and len(set(tr["samples"])) == 6  # distinct seeded samples
    agg = bk["scripted:b"].received("Responses from models:")
    assert len(agg) == 8 and all(c.reply.startswith("b@2[b,b,b,b,b,b]") for c in agg)
    assert all(len(bk[f"scripted:{n}"].calls) == 4 for n in "ac")  # only their dev answers
    moa = run_experiment(scripted_config("text_mixture_of_agents", tiny_task, "abc"), tmp_path / "moa", cache=cache,
                         backends={f"scripted:{n}": layered(n, n == "b") for n in "abc"})
    assert res.metrics["calls_per_question"] == moa.metrics["calls_per_question"] == 7
    assert res.metrics["self_moa"] == {"variant": "parallel", "samples": 6, "aggregations": 1,
                                       "moa_default_calls_per_question": 7}
    assert res.metrics["score"] == 1.0 and res.metrics["phases"]["test"]["calls"] == 8 * 7


def test_self_moa_seq_slides_a_window_over_the_samples(tiny_task, cache, tmp_path):
    """Self-MoA-Seq with 6 samples and a window of 2: step 1 aggregates samples 1-2, steps 2 and 3 each see the
    previous synthesis first and then the next two samples; the last synthesis is the output."""
    bk = {f"scripted:{n}": layered(n, n == "b") for n in "abc"}
    cfg = scripted_config("text_self_moa", tiny_task, "abc", {"variant": "seq", "window": 2},
                          decoding={"temperature": 0.7, "max_new_tokens": 32})
    res = run_experiment(cfg, tmp_path / "run", cache=cache, backends=bk)
    tr = res.predictions[0]["trace"]
    assert [s["samples"] for s in tr["steps"]] == [[0, 1], [2, 3], [4, 5]]
    assert [s["with_previous"] for s in tr["steps"]] == [False, True, True]
    # depth grows by one per step: each step aggregated the previous step's synthesis (shown first)
    assert [s["output"].split("[")[0] for s in tr["steps"]] == ["b@2", "b@3", "b@4"]
    agg = [c for c in bk["scripted:b"].received("Responses from models:") if "Question 4:" in c.prompt]
    shown = [re.findall(r"^\d+\. (\S+)", c.messages[0][1], re.M) for c in agg]
    assert [len(x) for x in shown] == [2, 3, 3] and shown[1][0].startswith("b@2[") and shown[2][0].startswith("b@3[")
    assert res.predictions[0]["output"] == tr["steps"][-1]["output"]
    assert res.metrics["calls_per_question"] == 6 + 3 and res.metrics["self_moa"]["aggregations"] == 3
