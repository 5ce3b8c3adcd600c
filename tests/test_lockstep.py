"""`moco compare` runs the cells on the same models together (lockstep, moco.scheduler): their model calls share batches, a
request two cells ask for at once is decoded once, the answers are those of cells run one by one, and a cell
that fails loses no other cell's work."""
from __future__ import annotations

import json

import pytest

from moco.analysis import parse_sweep, run_sweep
from moco.analysis.sharing import read_calls
from moco.cache import ResponseCache
from moco.methods.registry import MethodParams, method
from moco.models.pool import unload_all
from moco.models.scripted import ScriptedBackend
from moco.testing import mc_dataset

TRIO = [{"model": f"scripted:{n}", "script": {"default": [f"The answer is ({x})" for x in xs]}}
        for n, xs in (("a", "AB"), ("b", "BAC"), ("c", "CDAB"))]


class _NoParams(MethodParams):
    pass


@method("_test_fails_after_answers", params=_NoParams, level="text", summary="test only: answers, then raises")
async def _fails(ctx, params):
    with ctx.phase("test"):
        await ctx.answer_all(ctx.task.test)
    raise RuntimeError("this method is broken")


def _sweep(task, methods, **extra) -> dict:
    raw = {"name": "ls", "methods": methods, "pools": {"trio": TRIO}, "tasks": [str(task)],
           "decoding": {"max_new_tokens": 16, "temperature": 0.7}, "hardware": {"batch_size": 8}, "seed": 11,
           "matched_baselines": False}  # these tests count cells: only the rows they name
    raw.update(extra)
    return raw


METHODS = ["text_majority_vote", {"method": "text_multiagent_refine", "params": {"rounds": 2}},
           {"method": "text_multiagent_feedback", "params": {"rounds": 1}}, "text_self_moa"]


@pytest.fixture
def task(tmp_path):
    p = tmp_path / "mc.json"
    p.write_text(json.dumps(mc_dataset(n_dev=4, n_test=12, name="mc")))
    return p


@pytest.fixture
def batches(monkeypatch):
    """Sizes of the batches the scripted backends receive."""
    seen: list[int] = []
    real = ScriptedBackend.generate

    def generate(self, requests):
        seen.append(len(requests))
        return real(self, requests)

    monkeypatch.setattr(ScriptedBackend, "generate", generate)
    unload_all()
    yield seen
    unload_all()


def _run(task, tmp_path, name: str, **extra):
    cache = ResponseCache(tmp_path / f"{name}.sqlite")
    res = run_sweep(parse_sweep(_sweep(task, METHODS, **extra)), tmp_path / name, cache=cache)
    cache.close()
    return res


def _predictions(res) -> dict[str, list]:
    out = {}
    for st in res.states:
        d = res.root / "cells" / st.cell.dir_name
        out[st.cell.uses[0]["label"]] = [(p["index"], p["output"], p["score"], p["trace"])
                                         for p in map(json.loads, (d / "predictions.jsonl").read_text().splitlines())]
    return out


def test_cells_share_batches_and_answer_as_if_alone(task, tmp_path, batches):
    one = _run(task, tmp_path, "one_by_one", parallel_cells=1)
    sizes_alone = list(batches)
    batches.clear()
    unload_all()
    together = _run(task, tmp_path, "together")
    sizes_together = list(batches)
    assert one.count("finished") == together.count("finished") == 5
    # the same answers and scores, cell by cell
    assert _predictions(one) == _predictions(together)
    # the same work decoded (nothing twice, nothing lost), in fewer and fuller batches
    assert sum(sizes_together) == sum(sizes_alone) == one.sharing["sweep_calls"] == together.sharing["sweep_calls"]
    assert one.sharing["generated_tokens_measured"] == together.sharing["generated_tokens_measured"]
    assert len(sizes_together) < len(sizes_alone)
    assert max(sizes_together) == 8 and sum(s == 8 for s in sizes_together) > sum(s == 8 for s in sizes_alone)
    # merged batches held rows decoded for several cells (calls.jsonl numbers the merged batches of a sweep)
    cells_of_batch: dict[int, set[str]] = {}
    for st in together.states:
        for c in read_calls(together.root / "cells" / st.cell.dir_name):
            if not c["cache_hit"]:
                cells_of_batch.setdefault(c["batch"], set()).add(st.cell.uses[0]["label"])
    assert len(cells_of_batch) == len(sizes_together)
    assert max(len(v) for v in cells_of_batch.values()) >= 2


def test_a_request_two_cells_ask_at_once_is_decoded_once(task, tmp_path, batches):
    res = _run(task, tmp_path, "together")
    decoded: dict[str, set[str]] = {}
    hits: dict[str, set[str]] = {}
    for st in res.states:
        for c in read_calls(res.root / "cells" / st.cell.dir_name):
            (hits if c["cache_hit"] else decoded).setdefault(c["key"], set()).add(st.cell.uses[0]["label"])
    assert all(len(v) == 1 for v in decoded.values())  # no key decoded by two cells
    assert set(hits) <= set(decoded)  # every shared answer was decoded by some cell of this sweep
    # the first answers of all five cells came in the same merged round: decoded once, recorded as shared
    assert sum(len(v) for v in hits.values()) >= 4 * 12 * 3
    assert res.sharing["generated_tokens_measured"] == res.sharing["sweep_tokens_out"]


def test_a_failing_cell_loses_no_other_cell(task, tmp_path, batches):
    cache = ResponseCache(tmp_path / "c.sqlite")
    raw = _sweep(task, ["text_majority_vote", "_test_fails_after_answers",
                        {"method": "text_multiagent_refine", "params": {"rounds": 1}}])
    res = run_sweep(parse_sweep(raw), tmp_path / "sw", cache=cache)
    cache.close()
    status = {st.cell.uses[0]["label"]: (st.status, st.reason) for st in res.states}
    assert status["_test_fails_after_answers"] == ("failed", "RuntimeError: this method is broken")
    assert {k: v[0] for k, v in status.items() if k != "_test_fails_after_answers"} == {
        "single_model": "finished", "text_majority_vote": "finished", "text_multiagent_refine": "finished"}
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert sorted(c["status"] for c in index["cells"]) == ["failed", "finished", "finished", "finished"]


def test_a_model_that_fails_to_generate_fails_only_the_cells_that_use_it(task, tmp_path, monkeypatch):
    real = ScriptedBackend.generate

    def generate(self, requests):
        if self.name == "scripted:bad":
            raise RuntimeError("backend crashed")
        return real(self, requests)

    monkeypatch.setattr(ScriptedBackend, "generate", generate)
    unload_all()
    raw = _sweep(task, ["text_majority_vote"], pools={"trio": TRIO, "broken": TRIO[:2] + [
        {"model": "scripted:bad", "script": {"default": "x"}}]})
    raw["parallel_cells"] = 4
    cache = ResponseCache(tmp_path / "c.sqlite")
    res = run_sweep(parse_sweep(raw), tmp_path / "sw", cache=cache)
    cache.close()
    unload_all()
    by_pool = {(st.cell.uses[0]["pool"], st.cell.uses[0]["label"]): st.status for st in res.states}
    assert by_pool == {("trio", "single_model"): "finished", ("trio", "text_majority_vote"): "finished",
                       ("broken", "single_model"): "failed", ("broken", "text_majority_vote"): "failed"}


@pytest.mark.timeout(120)
def test_a_failure_outside_any_backend_fails_the_waiting_cells_instead_of_hanging(task, tmp_path, monkeypatch):
    """An error in the merge itself (not in a model) reaches every cell that waited for it; none waits for ever."""
    from moco.scheduler import Scheduler

    async def broken_run_group(self, group, errors, *, remote):
        raise RuntimeError("merge broke")

    monkeypatch.setattr(Scheduler, "_run_group", broken_run_group)
    unload_all()
    cache = ResponseCache(tmp_path / "c.sqlite")
    res = run_sweep(parse_sweep(_sweep(task, ["text_majority_vote"])), tmp_path / "sw", cache=cache)
    cache.close()
    unload_all()
    assert {(st.status, st.reason) for st in res.states} == {("failed", "RuntimeError: merge broke")}
    assert len(res.states) == 2


def test_a_remote_engine_in_the_pool_joins_the_merged_batches(task, tmp_path, batches):
    """One pool member is served over HTTP (`moco serve`, an OpenAI-compatible engine): in a sweep its requests
    run in threads while the local models decode, and every cell answers exactly as when cells run one by one."""
    import yaml
    from serve_util import served

    served_cfg = tmp_path / "remote.yaml"
    served_cfg.write_text(yaml.safe_dump({"method": "single_model", "models": [TRIO[2]], "name": "remote-c",
                                          "decoding": {"max_new_tokens": 16, "temperature": 0.0}}))
    methods = [{"method": "text_multiagent_refine", "params": {"rounds": 1}},
               {"method": "text_multiagent_feedback", "params": {"rounds": 1}}]
    with served(served_cfg) as url:
        pool = TRIO[:2] + [{"model": "remote-c", "endpoint": {"base_url": url, "seeded": True}}]

        def run(name: str, **extra):
            cache = ResponseCache(tmp_path / f"{name}.sqlite")
            res = run_sweep(parse_sweep(_sweep(task, methods, pools={"trio": pool}, **extra)), tmp_path / name,
                            cache=cache)
            cache.close()
            return res

        one = run("one_by_one", parallel_cells=1)
        together = run("together")
    assert one.count("finished") == together.count("finished") == 3
    assert _predictions(one) == _predictions(together)
    remote: dict[int, set[str]] = {}  # merged batch -> cells whose rows the remote engine decoded in it
    for st in together.states:
        for c in read_calls(together.root / "cells" / st.cell.dir_name):
            if c["model"] == "remote-c" and not c["cache_hit"]:
                remote.setdefault(c["batch"], set()).add(st.cell.uses[0]["label"])
    assert remote and max(len(v) for v in remote.values()) >= 2  # one remote batch served several cells
    assert one.sharing["generated_tokens_measured"] == together.sharing["generated_tokens_measured"]
