"""`moco compare` on scripted models: cells, incompatibilities found before loading, sharing through the cache,
resume (also after SIGKILL), the scripted liar, and model selection."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from faultkit import default_sigint

from moco.analysis import load, parse_sweep, run_sweep
from moco.analysis import studies, table1
from moco.analysis.adversary import LiarBackend
from moco.analysis.sweep_cells import expand
from moco.cache import ResponseCache
from moco.context import Output
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.models.base import Capabilities
from moco.testing import mc_dataset


class _NoParams(MethodParams):
    pass


@method("_test_needs_logits", params=_NoParams, level="logit", summary="test only: needs full logits",
        needs=Capabilities(chat=True, logits=True))
async def _needs_logits(ctx, params):  # pragma: no cover - never runs: plan() rejects it on scripted models
    return [Output("") for _ in ctx.task.test]


def scripted(name: str, replies: list[str], desc: str = "") -> dict:
    return {"model": f"scripted:{name}", "script": {"default": replies}, "description": desc or f"model {name}"}


TRIO = [scripted("a", ["The answer is (A)", "The answer is (B)"]),
        scripted("b", ["The answer is (B)", "The answer is (A)", "The answer is (C)"]),
        scripted("c", ["The answer is (C)", "The answer is (D)", "The answer is (A)", "The answer is (B)"])]


def sweep_raw(task: Path, **extra) -> dict:
    raw = {"name": "t", "methods": ["text_majority_vote", {"method": "text_majority_vote", "params": {"tie": "model-order"}},
                                    {"method": "text_multiagent_refine", "label": "refine", "params": {"rounds": 1}}],
           "pools": {"trio": TRIO, "solo": [TRIO[0]]},
           "tasks": [{"name": str(task)}, {"name": "moco_demo", "test_limit": 8, "dev_limit": 4}],
           "decoding": {"max_new_tokens": 16, "temperature": 0.7}, "seed": 3,
           "matched_baselines": False}  # the compute-matched rows have their own test
    raw.update(extra)
    return raw


@pytest.fixture
def mc_task(tmp_path) -> Path:
    p = tmp_path / "mc.json"
    p.write_text(json.dumps(mc_dataset(n_dev=4, n_test=12, name="mc")))
    return p


def test_sweep_config_is_strict_and_labels_are_unique(mc_task):
    with pytest.raises(ConfigError, match="unknown key 'modles'"):
        parse_sweep({**sweep_raw(mc_task), "pools": {"p": {"modles": []}}})
    with pytest.raises(ConfigError, match="did you mean 'decoding'"):
        parse_sweep({**sweep_raw(mc_task), "decodng": {}})
    with pytest.raises(ConfigError, match="sweep: generation.temperature is 0.2 but decoding.temperature is 0.7"):
        parse_sweep({**sweep_raw(mc_task), "generation": {"temperature": 0.2}})
    old = parse_sweep({**{k: v for k, v in sweep_raw(mc_task).items() if k != "decoding"},
                       "generation": {"temperature": 0.2, "batch_size": 3}})
    assert old.decoding.temperature == 0.2 and old.hardware.batch_size == 3
    with pytest.raises(ConfigError, match="no pool 'nope'"):
        parse_sweep({**sweep_raw(mc_task), "analyses": {"scaling": {"pool": "nope"}}})
    with pytest.raises(ConfigError, match="both labelled"):
        expand(parse_sweep({**sweep_raw(mc_task), "methods": ["text_majority_vote", "majority_vote"]}))
    with pytest.raises(ConfigError, match="unknown method"):
        expand(parse_sweep({**sweep_raw(mc_task), "methods": ["text_majority_vot"]}))
    with pytest.raises(ConfigError, match="unknown task"):
        expand(parse_sweep({**sweep_raw(mc_task), "tasks": ["no_such_task"]}))


def test_cells_deduplicate_across_analyses_and_plan_finds_incompatible_cells(mc_task, tmp_path):
    sw = parse_sweep(sweep_raw(mc_task, methods=[*sweep_raw(mc_task)["methods"], "_test_needs_logits"],
                               analyses={"scaling": {"pool": "trio", "sizes": [2, 3, 4]}}))
    cells = expand(sw)
    labels = {c.uses[0]["label"] for c in cells}
    assert {"single_model", "text_majority_vote", "text_majority_vote(tie=model-order)", "refine"} <= labels
    full = [c for c in cells if any(u["analysis"] == "scaling" and u["n_models"] == 3 for u in c.uses)]
    assert full and all({u["analysis"] for u in c.uses} == {"table", "scaling"} for c in full)  # one run, two uses
    res = run_sweep(sw, tmp_path / "sw", plan_only=True, cache=ResponseCache(tmp_path / "c.sqlite"))
    reasons = {(s.cell.uses[0]["pool"], s.cell.uses[0]["label"], s.cell.uses[0]["task"]): s.reason
               for s in res.states if s.status == "incompatible"}
    assert reasons[("solo", "refine", "moco_demo")] == "method text_multiagent_refine needs at least 2 models, the config has 1"
    assert "needs logits" in reasons[("trio", "_test_needs_logits", "moco_demo")]
    assert "pool of at least 4" in reasons[("trio[:4]", "refine", "moco_demo")]
    assert ("solo", "single_model", "moco_demo") not in reasons
    assert not (tmp_path / "sw" / "cells").exists()  # nothing ran
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert sum(c["status"] == "incompatible" for c in index["cells"]) == len(reasons)


def test_sweep_shares_outputs_resumes_and_writes_table1(mc_task, tmp_path):
    sw = parse_sweep(sweep_raw(mc_task))
    cache = ResponseCache(tmp_path / "cache.sqlite")
    res = run_sweep(sw, tmp_path / "sw", cache=cache)
    assert res.count("failed") == 0 and res.count("finished") == 10 and res.count("incompatible") == 6
    s = res.sharing
    # every cell alone would generate its own answers; the sweep generates each shared answer once
    assert s["sweep_tokens_out"] < 0.6 * s["alone_tokens_out"]
    assert s["generated_tokens_measured"] == s["sweep_tokens_out"]  # a cold cache decodes exactly that
    # "alone" is what each cell really decodes when it runs by itself with an empty cache
    from moco.analysis.sharing import distinct, read_calls
    from moco.runner import run_experiment

    alone = 0
    for i, st in enumerate(x for x in res.states if x.status == "finished"):
        fresh = ResponseCache(tmp_path / f"alone{i}.sqlite")
        m = run_experiment(st.cell.config, tmp_path / f"alone{i}", cache=fresh).metrics
        fresh.close()
        assert m["total"]["generated_tokens"] == sum(
            v[1] for v in distinct(read_calls(tmp_path / "sw" / "cells" / st.cell.dir_name)).values())
        alone += m["total"]["generated_tokens"]
    assert alone == s["alone_tokens_out"]
    # --plan on a finished sweep lists its cells as finished and leaves the index (and the report) intact
    planned = run_sweep(sw, tmp_path / "sw", plan_only=True, cache=cache)
    assert planned.count("finished") == 10 and planned.count("pending") == 0
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert sum(c["status"] == "finished" for c in index["cells"]) == 10
    # the dev answers and first-round answers are shared: vote and refine decode only what is new to them
    col = load([tmp_path / "sw"])
    vote = next(e for e in col.where("table", pool="trio", label="text_majority_vote(tie=model-order)", task="mc"))
    single = next(e for e in col.where("table", pool="trio", label="single_model", task="mc"))
    # the cells ran together (lockstep): whichever cell asked first decoded an answer, the others got it shared
    vote_calls, single_calls = (distinct(read_calls(e.run.dir)) for e in (vote, single))
    assert set(vote_calls) <= set(single_calls)  # vote asks nothing single_model does not
    decoded_by = {}
    for d in (tmp_path / "sw" / "cells").iterdir():
        for c in read_calls(d):
            if not c["cache_hit"]:
                decoded_by.setdefault(c["key"], set()).add(d.name)
    assert all(len(decoded_by[k]) == 1 for k in vote_calls)  # each answer decoded by exactly one cell
    assert vote.run.metrics["total"]["cache_hits"] + single.run.metrics["total"]["cache_hits"] >= len(vote_calls)
    # single_model records every model's score on every item (what collaborative emergence needs)
    from moco.scoring.multiple_choice import MultipleChoiceScorer
    from moco.tasks.registry import resolve_task

    exs = {ex.index: ex for ex in resolve_task(str(mc_task)).loader().test}
    for p in single.run.predictions():
        tr = p.trace  # a typed moco.records_schema.PredictionRecord
        assert set(tr["scores"]) == {"a", "b", "c"}
        assert tr["scores"] == {m: MultipleChoiceScorer().score(exs[p.index], tr["answers"][m]).score for m in tr["answers"]}
    t = table1.build(col)
    assert t.pools == ["trio", "solo"] and t.get("refine", "solo", "avg").value is None
    assert t.get("Best single", "trio", "avg").value is not None
    assert (tmp_path / "sw" / "sweep.yaml").exists()
    # re-run: nothing is recomputed, no new call is recorded
    before = {p: p.read_bytes() for p in (tmp_path / "sw" / "cells").rglob("*.jsonl")}
    again = run_sweep(sw, tmp_path / "sw", cache=cache)
    assert all(st.resumed for st in again.states if st.status == "finished")
    assert {p: p.read_bytes() for p in (tmp_path / "sw" / "cells").rglob("*.jsonl")} == before
    # changing one method's params reruns that row only (new cells), the rest stays
    raw = sweep_raw(mc_task)
    raw["methods"][2]["params"] = {"rounds": 2}
    third = run_sweep(parse_sweep(raw), tmp_path / "sw", cache=cache)
    fresh = [st for st in third.states if st.status == "finished" and not st.resumed]
    assert {st.cell.uses[0]["label"] for st in fresh} == {"refine"} and len(fresh) == 2
    cache.close()


def test_scripted_liar_gives_confident_wrong_answers(mc_task, tmp_path):
    from moco.scoring import scorer_for
    from moco.tasks.registry import resolve_task

    for name in (str(mc_task), "moco_demo"):
        task = resolve_task(name).loader()
        liar = LiarBackend(task, scorer_for(task.task_type))
        for ex in task.test:
            reply = liar.wrong_answer(ex)
            assert "certain" in reply and scorer_for(task.task_type).score(ex, reply).score == 0.0
    raw = sweep_raw(mc_task, analyses={"adversarial": {"pool": "trio", "kind": "liar", "replace": 1,
                                                       "methods": ["text_majority_vote"]}})
    raw["pools"]["trio"] = [scripted(n, ["The answer is (A)"]) for n in "abc"]
    raw["tasks"] = [{"name": str(mc_task)}]
    raw["methods"] = ["text_majority_vote"]
    run_sweep(parse_sweep(raw), tmp_path / "sw", cache=ResponseCache(tmp_path / "c.sqlite"))
    col = load([tmp_path / "sw"])
    attacked = next(e for e in col.where("adversarial", variant="attacked", label="text_majority_vote"))
    assert attacked.run.models == ["a", "liar", "c"]
    for p in attacked.run.predictions():
        assert p.trace["votes"]["liar"] not in (None, p.gold)  # the liar always argues for a wrong option
    rob = {r["label"]: r for r in studies.robustness(col)}
    assert rob["text_majority_vote"]["clean"] == rob["text_majority_vote"]["attacked"] == 0.25  # a and c outvote it


def test_model_selection_by_prompt_embedding_and_random(mc_task, tmp_path):
    cands = [scripted("algebra", ["The answer is (A)"], "an expert in algebra and calculus"),
             scripted("calculus", ["The answer is (B)"], "an expert in calculus and algebra"),
             scripted("chef", ["The answer is (C)"], "a chef who cooks Italian pasta dishes"),
             scripted("judge", ["Models: 4, 1, 2"], "a neutral judge")]
    raw = sweep_raw(mc_task, methods=["text_majority_vote"], pools={"cands": {"models": cands, "in_table": False}},
                    tasks=[{"name": str(mc_task)}],
                    analyses={"selection": {"pool": "cands", "k": 2, "selector": "judge", "random_repeats": 2}})
    sw = parse_sweep(raw)
    res = run_sweep(sw, tmp_path / "sw", cache=ResponseCache(tmp_path / "c.sqlite"))
    assert res.count("failed") == 0
    rec = json.loads((tmp_path / "sw" / "selection" / "mc.json").read_text())
    assert rec["subsets"]["prompt"] == [[0, 3]]  # "Models: 4, 1, 2": the first two valid picks
    assert "a chef who cooks" in rec["prompt"]["prompt"] and rec["prompt"]["filled_in_pool_order"] == 0
    emb = rec["subsets"]["embedding"][0]
    assert 2 in emb and len({0, 1} & set(emb)) <= 1  # the chef, and not both near-identical math experts
    assert len(rec["subsets"]["random"]) == 2
    rows = studies.selection(load([tmp_path / "sw"]))
    assert rows[0]["prompt_chosen"] == [["algebra", "judge"]] and rows[0]["no_collaboration"] is not None
    # the selector's call went through ctx.generate: traced, and cached for the next run
    calls = [json.loads(x) for x in (tmp_path / "sw" / "selection" / "mc.calls.jsonl").read_text().splitlines()]
    assert len(calls) == 1 and calls[0]["tag"] == "select"


BLOCKING = textwrap.dedent('''
    """Runs `moco` with one extra method that answers, then blocks on its first run (so a test can kill it)."""
    import os, pathlib, sys, time
    from moco.context import Output
    from moco.methods.registry import MethodParams, method

    class P(MethodParams):
        pass

    @method("_test_blocking", params=P, level="text", summary="answers, then blocks the first time")
    async def run(ctx, params):
        with ctx.phase("test"):
            answers = await ctx.answer_all(ctx.task.test)
        flag = pathlib.Path(os.environ["BLOCK_FLAG"])
        if not flag.exists():
            flag.write_text("blocked")
            time.sleep(600)
        return [Output(answers[0][j].text) for j in range(len(ctx.task.test))]

    from moco.cli import main
    main()
''')


def _compare(script: Path, sweep: Path, out: Path, cache: Path, flag: Path) -> subprocess.Popen:
    env = {**os.environ, "MOCO_RESPONSE_CACHE": str(cache), "BLOCK_FLAG": str(flag)}
    return subprocess.Popen([sys.executable, str(script), "compare", str(sweep), "--out", str(out), "--no-progress",
                             "--no-report"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # Ctrl-C reaches it even from a background test run


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_sigkill_midway_then_rerun_recomputes_no_finished_cell(mc_task, tmp_path, sig):
    script = tmp_path / "moco_blocking.py"
    script.write_text(BLOCKING)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"methods": ["text_majority_vote", "_test_blocking",
                                             {"method": "text_multiagent_refine", "params": {"rounds": 1}}],
                                 "pools": {"trio": TRIO}, "tasks": [str(mc_task)],
                                 "decoding": {"max_new_tokens": 16, "temperature": 0.7}, "seed": 5,
                                 "matched_baselines": False}))
    out, cache, flag = tmp_path / "sw", tmp_path / "cache.sqlite", tmp_path / "flag"
    p = _compare(script, sweep, out, cache, flag)
    deadline = time.time() + 120
    while not flag.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()
    p.send_signal(sig)  # killed (or Ctrl-C) while the blocking cell holds the baton
    _out, err = p.communicate(timeout=60)  # drains the pipes: a full stderr pipe must not hold the exit up
    assert p.returncode == (-9 if sig == signal.SIGKILL else 130), err[-2000:]  # Ctrl-C: not held up by the cells
    index = json.loads((out / "index.json").read_text())
    status = {c["uses"][0]["label"]: c["status"] for c in index["cells"]}
    # the four cells run together on one loop (moco.scheduler): vote needs only the answers of the first merged
    # round and finished before the blocking cell blocked the loop; single_model may still have been scoring
    # (it awaits its per-model score batches together); refine waits for its next merged batch
    assert status["text_majority_vote"] == "finished" and status["single_model"] in ("finished", "pending")
    assert status["_test_blocking"] == status["text_multiagent_refine"] == "pending"
    done = {c["uses"][0]["label"]: out / c["dir"] for c in index["cells"] if c["status"] == "finished"}
    snapshot = {lab: {f.name: f.read_bytes() for f in d.iterdir() if f.is_file()} for lab, d in done.items()}
    blocked = out / next(c["dir"] for c in index["cells"] if c["uses"][0]["label"] == "_test_blocking")
    # killed: nothing could write; Ctrl-C: the cell it interrupted says so (the loop runs the cells, no thread hides it)
    assert json.loads((blocked / "manifest.json").read_text())["status"] == (
        "running" if sig == signal.SIGKILL else "interrupted")
    q = _compare(script, sweep, out, cache, flag)
    stdout, stderr = q.communicate(timeout=300)
    assert q.returncode == 0, stderr
    assert stdout.count("already finished, not recomputed") == len(done) >= 1
    for lab, d in done.items():  # finished cells untouched: same files, same bytes
        assert {f.name: f.read_bytes() for f in d.iterdir() if f.is_file()} == snapshot[lab]
    index = json.loads((out / "index.json").read_text())
    assert all(c["status"] == "finished" for c in index["cells"])
    calls = [json.loads(x) for x in (blocked / "calls.jsonl").read_text().splitlines()]
    assert calls and all(c["cache_hit"] for c in calls[len(calls) // 2:])  # its answers came from the cache
    assert "| method |" in stdout and "generated tokens:" in stdout


def test_sweep_with_seeds_runs_each_cell_per_seed_and_shares_within_a_seed(mc_task, tmp_path):
    raw = sweep_raw(mc_task, seeds=[0, 1], methods=["text_majority_vote"], pools={"trio": TRIO})
    raw.pop("seed")
    raw["tasks"] = [{"name": str(mc_task)}]
    with pytest.raises(ConfigError, match="either `seed` or `seeds`"):
        parse_sweep({**raw, "seed": 5})
    with pytest.raises(ConfigError, match="listed twice"):
        parse_sweep({**raw, "seeds": [1, 1]})
    sw = parse_sweep(raw)
    cells = expand(sw)
    assert sorted((c.uses[0]["label"], c.config.seed) for c in cells) == [
        ("single_model", 0), ("single_model", 1), ("text_majority_vote", 0), ("text_majority_vote", 1)]
    cache = ResponseCache(tmp_path / "cache.sqlite")
    res = run_sweep(sw, tmp_path / "sw", cache=cache)
    cache.close()
    assert res.count("finished") == 4
    assert all(f"__seed{st.cell.config.seed}__" in st.cell.dir_name for st in res.states)
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert index["seeds"] == [0, 1] and {u["seed"] for c in index["cells"] for u in c["uses"]} == {0, 1}
    from moco.analysis.sharing import distinct, read_calls

    col = load([tmp_path / "sw"])
    calls = {(e["label"], e["seed"]): distinct(read_calls(e.run.dir)) for e in col.where("table") if e.ok}
    # sampling at temperature 0.7: the two seeds ask different calls (the cache keeps them apart)...
    assert not set(calls[("single_model", 0)]) & set(calls[("single_model", 1)])
    # ...and within one seed, the vote reuses every answer single_model decoded (generated once per seed)
    for seed in (0, 1):
        assert set(calls[("text_majority_vote", seed)]) <= set(calls[("single_model", seed)])
        vote = next(e for e in col.where("table", label="text_majority_vote") if e["seed"] == seed)
        assert vote.run.metrics["total"]["generated_tokens"] == 0
    t = table1.build(col)
    v = t.get("text_majority_vote", "trio", "avg")
    scores = {e["seed"]: e.run.score for e in col.where("table", label="text_majority_vote")}
    assert v.per_seed == scores and v.value == pytest.approx(sum(scores.values()) / 2)
    assert v.std is not None and " ± " in table1.to_markdown(t) and "mean ± std over seeds 0, 1" in table1.to_markdown(t)


def test_compute_matched_baselines_are_table_rows_by_default(mc_task):
    raw = sweep_raw(mc_task, methods=[{"method": "text_multiagent_refine", "label": "refine", "params": {"rounds": 1}}],
                    analyses={"scaling": {"pool": "trio", "sizes": [2]}})
    raw.pop("matched_baselines")
    cells = expand(parse_sweep(raw))
    table = {(u["label"], u["pool"]) for c in cells for u in c.uses if u["analysis"] == "table"}
    assert {("majority vote (same samples)", "trio"), ("Self-MoA (compute-matched)", "trio"),
            ("Self-MoA (compute-matched)", "solo")} <= table
    moa = next(c for c in cells if c.uses[0]["label"] == "Self-MoA (compute-matched)")
    # no MoA row: Self-MoA's own default, (3 - 1) x pool size samples = MoA's calls at its default 3 layers
    assert moa.config.method == "text_self_moa" and moa.config.params["samples"] is None
    scaling = {u["label"] for c in cells for u in c.uses if u["analysis"] == "scaling"}
    assert scaling == {"single_model", "refine"}  # the analyses run only the sweep's own rows
    # a sweep that has the method already keeps its own row; `matched_baselines: false` adds none
    mine = expand(parse_sweep({**raw, "methods": ["text_majority_vote"]}))
    assert not any(u["label"] == "majority vote (same samples)" for c in mine for u in c.uses)
    off = expand(parse_sweep({**raw, "matched_baselines": False}))
    assert {u["label"] for c in off for u in c.uses} == {"single_model", "refine"}


def test_matched_self_moa_spends_the_calls_of_the_sweeps_moa(mc_task, tmp_path):
    """With a MoA row, the matched Self-MoA samples (L-1) x proposers per question on each pool: measured, the
    two runs make the same number of model calls per question."""
    from moco.runner import run_experiment

    moa2 = {"method": "text_mixture_of_agents", "label": "moa-2", "params": {"layers": 2}}
    raw = sweep_raw(mc_task, methods=[moa2], tasks=[{"name": str(mc_task), "test_limit": 3, "dev_limit": 2}])
    raw.pop("matched_baselines")
    cells = expand(parse_sweep(raw))
    by = {(c.uses[0]["label"], c.uses[0]["pool"]): c for c in cells}
    assert by[("Self-MoA (compute-matched)", "trio")].config.params["samples"] == 3  # (2 - 1) x 3 models
    assert by[("Self-MoA (compute-matched)", "solo")].config.params["samples"] == 1
    calls = {}
    cache = ResponseCache(tmp_path / "c.sqlite")
    for label in ("moa-2", "Self-MoA (compute-matched)"):
        res = run_experiment(by[(label, "trio")].config, tmp_path / label, cache=cache)
        m = res.metrics
        calls[label] = m["total"]["calls"], m["phases"]["test"]["calls"], m["calls_per_question"]
    cache.close()
    # test: 3 items x (3 proposals + 1 aggregation); both pick the dev-best model first (3 models x 2 dev items)
    assert calls["moa-2"] == calls["Self-MoA (compute-matched)"] == (3 * 4 + 3 * 2, 3 * 4, 4)
    # two MoA budgets: one matched Self-MoA each, named after the MoA it matches
    two = expand(parse_sweep({**raw, "methods": [moa2, {"method": "text_mixture_of_agents", "label": "moa-3"},
                                                 {"method": "text_mixture_of_agents", "label": "moa-3b",
                                                  "params": {"proposers": [0, 1]}}]}))
    samples = {c.uses[0]["label"]: c.config.params["samples"] for c in two
               if c.uses[0]["pool"] == "trio" and c.config.method == "text_self_moa"}
    assert samples == {"Self-MoA (compute-matched to moa-2)": 3, "Self-MoA (compute-matched to moa-3)": 6,
                       "Self-MoA (compute-matched to moa-3b)": 4}
