"""Failed model calls never become a score (issue 25), against real OpenAI-compatible servers on loopback
(tests/chat_server.py, its own process): a server that exits mid-run stops the run within seconds (exit 3,
manifest `failed`, no score anywhere), and the same command against a healthy server then finishes with the
predictions of a run that was never interrupted, reusing every call answered before the crash; a server that
fails a tenth of its calls fails the run by default, and under `--max-failed` the score says over how many
items it was taken; in a sweep the failed cell reads "failed (reason)" in Table 1 and is left out of the share."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from moco.analysis import load, run_sweep
from moco.analysis.sweep_config import parse_sweep
from moco.analysis.table1 import build, to_markdown
from moco.cache import ResponseCache
from moco.config import parse_config
from moco.errors import CallsFailed, ConfigError
from moco.failures import account, allowed, parse_max_failed, FailedCall
from moco.runner import run_experiment
from moco.tasks.base import Example, Task
from moco.testing import mc_dataset
from serve_util import free_port, moco_env

SERVER = Path(__file__).with_name("chat_server.py")


class Served(str):
    """The base URL of a running chat server; `exited` is when its process ended (None while it runs)."""

    exited: float | None = None


@contextmanager
def chat_server(port: int, *args: str):
    """tests/chat_server.py on 127.0.0.1:port (its own process), until it exits or the block ends."""
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port), *args], stdout=subprocess.PIPE, text=True)
    url = Served(f"http://127.0.0.1:{port}/v1")

    def watch() -> None:
        proc.wait()
        url.exited = time.time()

    try:
        assert proc.stdout.readline().strip() == "ready"
        threading.Thread(target=watch, daemon=True).start()
        yield url
    finally:
        proc.kill()
        proc.wait()


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/stats", timeout=5).json()


def _config(tmp: Path, port: int, n_test: int = 30, **extra) -> Path:
    """Majority vote of three served models (dev answers break ties), as in the issue: 5 dev + n_test items."""
    task = tmp / "task.json"
    task.write_text(json.dumps(mc_dataset(n_dev=5, n_test=n_test)))
    cfg = tmp / "cfg.json"
    cfg.write_text(json.dumps({
        "method": "text_majority_vote", "task": {"name": str(task)},
        "models": [{"model": m, "endpoint": {"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 3}}
                   for m in ("m1", "m2", "m3")],
        "decoding": {"temperature": 0.0, "max_new_tokens": 16}, **extra}))
    return cfg


def _moco_run(cfg: Path, out: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moco", "run", str(cfg), "--out", str(out), "--no-progress", *args],
                          env=moco_env(MOCO_RESPONSE_CACHE=str(cache)), capture_output=True, text=True, timeout=600)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _answers(run_dir: Path) -> list[tuple]:
    return [(p["id"], p["output"], p.get("extracted"), p.get("score"), p["failed"])
            for p in _jsonl(run_dir / "predictions.jsonl")]


def test_a_server_that_dies_mid_run_stops_it_fast_and_the_rerun_resumes(tmp_path):
    port = free_port()
    cfg = _config(tmp_path, port)
    with chat_server(port) as url:  # the reference: a run that was never interrupted
        ref = _moco_run(cfg, tmp_path / "ref", tmp_path / "ref.sqlite")
        assert ref.returncode == 0, ref.stdout + ref.stderr
        total = _stats(url)["answered"]
    assert total == 105  # 3 models x (5 dev + 30 test items)

    with chat_server(port, "--exit-after", "40") as url:
        t0 = time.time()
        dead = _moco_run(cfg, tmp_path / "run", tmp_path / "run.sqlite")
        end = time.time()
    assert url.exited is not None  # the server did die mid-run
    stop_s = end - url.exited
    print(f"\nserver exited after 40 of 105 answers: moco stopped {stop_s:.2f} s later "
          f"(whole command {end - t0:.1f} s, process start included)")
    assert dead.returncode == 3, dead.stdout + dead.stderr
    assert end - t0 < 120 and stop_s < 30
    err = dead.stderr.strip().splitlines()
    assert len(err) == 1 and "is down" in err[0] and "model 'm" in err[0] and "model calls failed" in err[0], err
    assert "connection failures in a row" in err[0] and "GET /models does not answer" in err[0]
    assert "accuracy" not in dead.stdout  # no headline score
    run = tmp_path / "run"
    man = json.loads((run / "manifest.json").read_text())
    assert man["status"] == "failed" and "BackendDown" in man["error"]
    assert not (run / "metrics.json").exists()  # stopped in the method: nothing was scored
    first = _jsonl(run / "calls.jsonl")
    answered = {c["key"] for c in first if c["error"] is None}
    last_call = max(c["t"] for c in first)
    print(f"last call recorded {last_call - url.exited:.2f} s after the server died")
    assert 0 < len(answered) <= 40 and any(c["error"] for c in first)

    with chat_server(port) as url:  # the same command, the server back
        again = _moco_run(cfg, run, tmp_path / "run.sqlite")
        assert again.returncode == 0, again.stdout + again.stderr
        new_calls = _stats(url)["answered"]
    assert _answers(run) == _answers(tmp_path / "ref")
    assert json.loads((run / "metrics.json").read_text())["score"] == json.loads(
        (tmp_path / "ref" / "metrics.json").read_text())["score"]
    second = [c for c in _jsonl(run / "calls.jsonl") if c["attempt"] == 2]
    assert all(c["cache_hit"] for c in second if c["key"] in answered)  # every answered call reused
    assert new_calls == total - len(answered)  # and only the others asked again
    print(f"re-run: {len(answered)} answered calls reused from the cache, {new_calls} asked again")


def test_a_server_failing_a_tenth_of_its_calls(tmp_path):
    """By default the run fails (exit 3, no score); tolerated, the score is over the items that did not fail,
    and every place that shows it says so."""
    port = free_port()
    cfg = _config(tmp_path, port, n_test=20)
    with chat_server(port, "--fail-tenth"):
        strict = _moco_run(cfg, tmp_path / "strict", tmp_path / "c.sqlite")
        assert strict.returncode == 3, strict.stdout + strict.stderr
        line = strict.stderr.strip().splitlines()
        assert len(line) == 1 and "failed calls" in line[0] and "HTTP 500" in line[0] and "no score" in line[0]
        m = json.loads((tmp_path / "strict" / "metrics.json").read_text())
        assert m["score"] is None and m["ci95"] is None and "no score" in m["score_note"]
        assert json.loads((tmp_path / "strict" / "manifest.json").read_text())["status"] == "failed"
        f = m["failures"]
        assert f["failed_calls"] > 0 and "test answer" in f["by_stage"] and not f["accepted"]
        assert set(f["by_stage"]) <= {"dev answer", "test answer"}
        # a failed member's item is failed even when the other two voters answered: never a one-model "vote"
        preds = _jsonl(tmp_path / "strict" / "predictions.jsonl")
        lost = [p for p in preds if p["failed"]]
        assert len(lost) == m["failed"] == f["test_items_failed"] and all("score" not in p for p in lost)
        assert all(any(w.startswith("lost m") for w in p["failure"]) for p in lost)
        assert f["degraded_test_items"] == len(lost)  # each lost one member, none lost all three

        ok = _moco_run(cfg, tmp_path / "tolerant", tmp_path / "c.sqlite", "--max-failed", "0.5")
        assert ok.returncode == 0, ok.stdout + ok.stderr
    m = json.loads((tmp_path / "tolerant" / "metrics.json").read_text())
    k, n, fails = m["n"], m["n_test"], m["failed"]
    assert fails == len(lost) and k == n - fails and m["score"] is not None
    assert m["score_note"] == f"over {k} of {n} items, {fails} failed"
    assert m["score_note"] in ok.stdout
    assert json.loads((tmp_path / "tolerant" / "manifest.json").read_text())["status"] == "finished"
    rep = subprocess.run([sys.executable, "-m", "moco", "report", str(tmp_path / "tolerant"), "--out",
                          str(tmp_path / "r.html"), "--md", str(tmp_path / "r.md")], env=moco_env(),
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    for page in ("r.md", "r.html"):  # the report says over how many items the score is, as the CLI does
        assert m["score_note"] in (tmp_path / page).read_text()
    scored = [p["score"] for p in _jsonl(tmp_path / "tolerant" / "predictions.jsonl") if not p["failed"]]
    assert len(scored) == k and m["score"] == pytest.approx(sum(scored) / k)


def test_a_sweep_shows_the_failed_cell_and_leaves_it_out_of_the_share(tmp_path):
    port = free_port()
    task = tmp_path / "task.json"
    task.write_text(json.dumps(mc_dataset(n_dev=2, n_test=6)))
    ep = {"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 0}
    sweep = parse_sweep({
        "name": "dead-cell", "methods": ["text_majority_vote"], "tasks": [str(task)],
        "pools": {"scripted": [{"model": f"scripted:{n}", "script": {"default": f"The answer is ({x})"}}
                               for n, x in (("a", "A"), ("b", "A"), ("c", "B"))],
                  "served": [{"model": m, "endpoint": ep} for m in ("m1", "m2", "m3")]},
        "decoding": {"temperature": 0.0, "max_new_tokens": 8}, "matched_baselines": False})
    with chat_server(port, "--fail-tenth"):
        res = run_sweep(sweep, tmp_path / "sweep", cache=ResponseCache(tmp_path / "c.sqlite"))
    failed = [s for s in res.states if s.status == "failed"]
    assert failed and all("failed call" in s.reason for s in failed)  # "1 failed call" or "N failed calls"
    assert all(s.cell.uses[0]["pool"] == "served" for s in failed)
    t = build(load([tmp_path / "sweep"]))
    md = to_markdown(t)
    row = next(x for x in md.splitlines() if x.startswith("| text_majority_vote"))
    assert "failed (CallsFailed: model 'm" in row
    cells = [v for (r, pool, _c), v in t.values.items() if r == "text_majority_vote" and pool == "served"]
    assert all(v.value is None for v in cells)
    assert t.comparable == 1  # the scripted pool's setting only: the failed one is not counted

    with chat_server(port) as url:  # `moco compare` again, the server healthy: only the failed cells run again
        again = run_sweep(sweep, tmp_path / "sweep", cache=ResponseCache(tmp_path / "c.sqlite"))
        asked = _stats(url)["answered"]
    assert again.count("failed") == 0 and {s.resumed for s in again.states if s.cell.uses[0]["pool"] == "scripted"} \
        == {True}
    assert 0 < asked < 3 * 8 * len(failed)  # the calls answered before are not asked again
    assert "failed" not in to_markdown(build(load([tmp_path / "sweep"])))


def test_items_are_traced_from_the_failed_calls_text():
    """The context knows no item numbers: a failed call belongs to the items whose prompt (or question) it
    carries; test calls look at test items first, dev calls at dev items; a call matching none still counts."""
    def ex(i: int, split: str, q: str) -> Example:
        return Example(f"{split}{i}", i, split, f"{q}\nAnswer with a letter.", q)

    task = Task("t", "multiple_choice", dev=[ex(0, "dev", "What is 1+1?")],
                test=[ex(0, "test", "What is 2+2?"), ex(1, "test", "What is 2+2+2?"), ex(2, "test", "What is 3+3?")])
    calls = [FailedCall("test", "answer", "m", "HTTP 500", "be brief\nWhat is 2+2+2?\nAnswer with a letter."),
             FailedCall("test", "round 1", "m", "HTTP 500", "Others said (B). Question: What is 2+2?"),
             FailedCall("dev", "answer", "m", "HTTP 500", "What is 1+1?\nAnswer with a letter."),
             FailedCall("test", "summary", "m", "HTTP 500", "Summarize the debate.")]
    f = account(calls, task, [False, False, False])
    assert f.test_items == {1: ["lost m (test answer)"], 0: ["lost m (test round 1)"]}
    assert f.dev_items == {0: ["lost m (dev answer)"]} and f.unattributed == {"test": 1}
    assert f.failed("test") == 3 and f.failed("dev") == 1 and not f.accepted  # the untraced call counts as an item
    traced, ok = calls[:3], [False, False, False]
    assert account(traced, task, ok, max_failed=2).accepted
    assert not account(traced, task, ok, max_failed=0.7).accepted  # dev counts too: its one item failed (1 > 0.7)
    assert not account(traced, task, ok, max_failed=0.5).accepted  # 2 of 3 test items > half
    assert not account(traced, task, [False, False, True], max_failed=5).accepted  # no test item left to score
    assert f.to_dict()["by_stage"] == {"test answer": {"m": 1}, "test round 1": {"m": 1}, "dev answer": {"m": 1},
                                       "test summary": {"m": 1}}


def test_max_failed_values():
    assert parse_max_failed("3") == 3 and parse_max_failed("0.1") == 0.1 and parse_max_failed("10%") == 0.1
    assert parse_max_failed("0") == 0
    for bad in ("-1", "1.5", "lots"):
        with pytest.raises(ValueError, match="--max-failed"):
            parse_max_failed(bad)
    assert allowed(0, 30) == 0 and allowed(3, 30) == 3 and allowed(0.1, 30) == pytest.approx(3)
    with pytest.raises(ConfigError, match="max_failed must be a count"):
        parse_config({"method": "single_model", "task": "t", "models": ["scripted:a"], "max_failed": 2.5})


def test_a_failed_judge_call_fails_the_item_not_scores_it(tmp_path):
    """The scorer's own model calls count: a judge that never answers makes every item failed, not wrong."""
    from moco.models.base import GenResult
    from moco.models.scripted import ScriptedBackend

    class Dead(ScriptedBackend):
        def generate(self, requests):
            return [GenResult("", finish_reason="error", error="HTTP 503") for _ in requests]

    task = tmp_path / "t.json"
    task.write_text(json.dumps(mc_dataset(n_dev=0, n_test=3)))
    cfg = parse_config({"method": "single_model", "task": {"name": str(task), "scorer": "llm_judge"},
                        "models": [{"model": "scripted:a", "script": {"default": "The answer is (A)"}}],
                        "roles": {"judge": {"model": "scripted:judge"}}, "decoding": {"temperature": 0.0}})
    with pytest.raises(CallsFailed, match="model 'judge' 3 failed calls.*first error \\(judge, score llm_judge\\)"):
        run_experiment(cfg, tmp_path / "r", backends={"scripted:judge": Dead("judge", default="x")})
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["score"] is None and m["failed"] == 3 and m["n"] == 0 and m["unparsed"] == 0
    assert m["failures"]["by_stage"] == {"score llm_judge": {"judge": 3}}
    preds = _jsonl(tmp_path / "r" / "predictions.jsonl")
    assert all(p["failed"] and p["failure"] == ["lost judge (score llm_judge)"] and "score" not in p for p in preds)


def test_table1_cells_say_what_failed():
    from moco.analysis.table1 import Table1, Value, _count_failed, cell_text
    from moco.records_schema import MetricsRecord

    def rec(**kw):  # the typed metrics.json the analyses read
        return MetricsRecord(method="m", task="t", score=0.5, **kw)

    t = Table1([], {}, [], {}, [])
    v = Value(0.5)
    _count_failed(v, rec(n=27, n_test=30, failed=3))  # a run that finished under --max-failed
    _count_failed(v, rec(n=10, n_test=10, failed=0))  # a second task of the domain, complete
    assert cell_text(t, v, markdown=False) == "0.500 (over 37 of 40 items, 3 failed)"
    assert cell_text(t, Value(unfinished=["failed"], failures=["CallsFailed: model 'm' 3 failed | x"])) == \
        "failed (CallsFailed: model 'm' 3 failed / x)"
