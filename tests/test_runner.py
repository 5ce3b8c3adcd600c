"""Runner and run directory: files, determinism, cache reuse, failed calls, interruption status."""
from __future__ import annotations

import json

import httpx
import pytest
import yaml

from helpers import debater, scripted_config
from moco.cache import ResponseCache
from moco.config import parse_config
from moco.errors import CallsFailed
from moco.models.openai import OpenAIBackend
from moco.runner import run_experiment


def _tiny_cfg(models, task, method="text_multiagent_refine", seed=0, temp=0.9, params=None):
    return parse_config({"method": method, "task": {"name": str(task)}, "models": [str(m) for m in models],
                         "params": params if params is not None else {"rounds": 1},
                         "decoding": {"max_new_tokens": 12, "temperature": temp}, "hardware": {"batch_size": 4}, "seed": seed})


def test_run_directory_contents(tiny_task, cache, tmp_path):
    backends = {f"scripted:{n}": debater(n, ok) for n, ok in dict(a=False, b=True, c=True).items()}
    res = run_experiment(scripted_config("text_multiagent_refine", tiny_task, "abc", {"rounds": 1}),
                         tmp_path / "run", cache=cache, backends=backends)
    d = res.run_dir
    assert sorted(p.name for p in d.iterdir()) == ["artifacts", "calls.jsonl", "config.yaml", "manifest.json",
                                                   "metrics.json", "predictions.jsonl"]
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["params"] == {"rounds": 1, "final": "summarizer", "summarizer": None, "context": "message"}  # resolved: defaults written
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "finished" and man["seed"] == 0 and "torch" in man["versions"]
    assert man["fingerprints"]["a"].startswith("scripted:a:") and "hardware" in man and "git_commit" in man
    calls = [json.loads(x) for x in (d / "calls.jsonl").read_text().splitlines()]
    m = json.loads((d / "metrics.json").read_text())
    assert len(calls) == m["total"]["calls"] == 3 * 4 + 3 * 8 * 2 + 8
    assert {c["tag"] for c in calls} == {"answer", "round 1", "summary"}
    assert {c["phase"] for c in calls} == {"dev", "test"}
    assert all(set(c) >= {"model", "tokens_in", "tokens_out", "latency_s", "cache_hit"} for c in calls)
    preds = [json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8
    assert set(preds[0]) >= {"id", "prompt", "gold", "output", "extracted", "score", "strict_score", "trace"}
    # every item right: no bootstrap interval (a resample of identical scores is a point), and the note says so
    assert m["score"] == 1.0 and m["ci95"] is None and m["ci_note"] == "all scores equal" and m["n"] == 8
    assert m["unparsed"] == 0
    assert m["phases"]["dev"]["calls"] == 12 and m["total"]["tokens_out"] > 0


def test_same_config_and_seed_same_predictions_with_sampling(tiny_models, tiny_task, tmp_path):
    runs = []
    for i in range(2):
        c = ResponseCache(tmp_path / f"c{i}.sqlite")  # fresh caches: both runs really generate
        runs.append(run_experiment(_tiny_cfg(tiny_models, tiny_task), tmp_path / f"r{i}", cache=c))
        c.close()
    a, b = ((r.run_dir / "predictions.jsonl").read_bytes() for r in runs)
    assert a == b
    assert runs[0].metrics["total"]["generated_tokens"] > 0 and runs[1].metrics["total"]["cache_hits"] == 0
    c = ResponseCache(tmp_path / "c2.sqlite")
    other = run_experiment(_tiny_cfg(tiny_models, tiny_task, seed=1), tmp_path / "r2", cache=c)
    assert (other.run_dir / "predictions.jsonl").read_bytes() != a


def test_rerun_is_served_from_cache_with_identical_results(tiny_models, tiny_task, cache, tmp_path):
    first = run_experiment(_tiny_cfg(tiny_models, tiny_task), tmp_path / "r1", cache=cache)
    again = run_experiment(_tiny_cfg(tiny_models, tiny_task), tmp_path / "r2", cache=cache)
    assert again.metrics["total"]["cache_hits"] == again.metrics["total"]["calls"] > 0
    assert again.metrics["total"]["generated_tokens"] == 0
    assert again.metrics["total"]["tokens_out"] == first.metrics["total"]["tokens_out"]  # cost still charged
    assert (first.run_dir / "predictions.jsonl").read_bytes() == (again.run_dir / "predictions.jsonl").read_bytes()


def test_failed_calls_are_recorded_never_scored_and_retried_next_run(tiny_task, cache, tmp_path):
    broken = OpenAIBackend("http://x/v1", "m", max_retries=1, backoff_s=0.001,
                           transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    cfg = parse_config({"method": "single_model", "task": {"name": str(tiny_task)},
                        "models": [{"model": "m", "endpoint": {"base_url": "http://x/v1"}}],
                        "decoding": {"temperature": 0.0}})
    with pytest.raises(CallsFailed, match=r"model 'm' 8 failed calls \(8 of 8 test items affected\).*HTTP 500"):
        run_experiment(cfg, tmp_path / "r1", cache=cache, backends={"m": broken})
    run_dir = tmp_path / "r1"
    man, metrics = (json.loads((run_dir / f).read_text()) for f in ("manifest.json", "metrics.json"))
    assert man["status"] == "failed" and "8 failed calls" in man["error"]
    assert metrics["score"] is None and metrics["ci95"] is None and metrics["failed"] == 8 and metrics["n"] == 0
    assert metrics["failures"]["by_stage"] == {"test answer": {"m": 8}} and not metrics["failures"]["accepted"]
    preds = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert all(p["failed"] and "score" not in p for p in preds)  # a failure is not a wrong answer: never scored
    calls = [json.loads(x) for x in (run_dir / "calls.jsonl").read_text().splitlines()]
    assert all(c["error"] and "HTTP 500" in c["error"] for c in calls)
    ok = OpenAIBackend("http://x/v1", "m", transport=httpx.MockTransport(
        lambda r: httpx.Response(200, json={"choices": [{"message": {"content": "The answer is (A)"}}]})))
    res2 = run_experiment(cfg, tmp_path / "r2", cache=cache, backends={"m": ok})
    assert res2.metrics["failed"] == 0 and res2.metrics["total"]["cache_hits"] == 0
    assert res2.metrics["score"] == 0.25  # answers cycle A-D; "A" is right on 2 of 8


def test_interrupted_run_is_marked_and_keeps_finished_calls(tiny_task, cache, tmp_path, monkeypatch):
    backends = {f"scripted:{n}": debater(n, True) for n in "ab"}
    import moco.methods.text.shared as refine  # where the debate summary prompt is built

    real = refine.summary_prompt

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(refine, "summary_prompt", boom)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(scripted_config("text_multiagent_refine", tiny_task, "ab", {"rounds": 1}), tmp_path / "run",
                       cache=cache, backends=backends)
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["status"] == "interrupted"
    done = sum(len(b.calls) for b in backends.values())
    monkeypatch.setattr(refine, "summary_prompt", real)
    res = run_experiment(scripted_config("text_multiagent_refine", tiny_task, "ab", {"rounds": 1}), tmp_path / "run",
                         cache=cache, backends=backends)
    assert res.metrics["total"]["cache_hits"] == done  # everything before the interruption is reused
    assert sum(len(b.calls) for b in backends.values()) == done + 8  # only the summaries are new
