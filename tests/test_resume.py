"""A run killed with SIGKILL and re-run with the same command finishes with the same result as an
uninterrupted run, and recomputes no model call that had finished."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from moco.testing import mc_dataset


def _start(cfg: Path, out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "MOCO_RESPONSE_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "moco", "run", str(cfg), "--out", str(out), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _calls(run: Path) -> list[dict]:
    f = run / "calls.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []


def test_sigkill_then_rerun_matches_uninterrupted_run(tiny_models, tmp_path):
    task = tmp_path / "task.json"
    task.write_text(json.dumps(mc_dataset(n_dev=4, n_test=24)))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"method": "text_multiagent_refine", "task": {"name": str(task)},
                               "models": [str(m) for m in tiny_models], "params": {"rounds": 1},
                               "generation": {"max_new_tokens": 48, "temperature": 0.8, "batch_size": 2}, "seed": 3}))
    # the reference: one uninterrupted run with its own cache
    ref = _start(cfg, tmp_path / "ref", tmp_path / "ref.sqlite")
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    total = len(_calls(tmp_path / "ref"))
    # the interrupted run: kill it once a third of the calls are done
    run, cache = tmp_path / "run", tmp_path / "run.sqlite"
    p = _start(cfg, run, cache)
    deadline = time.time() + 300
    while len(_calls(run)) < total // 3 and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = [c for c in _calls(run) if not c["cache_hit"]]
    assert 0 < len(first) < total
    assert not (run / "metrics.json").exists()
    # the same command again resumes
    q = _start(cfg, run, cache)
    assert q.wait(timeout=600) == 0, q.stderr.read()
    second = _calls(run)[len(_calls(run)) - total:]
    recomputed = {c["key"] for c in second if not c["cache_hit"]}
    assert not recomputed & {c["key"] for c in first}, "a finished call was computed again"
    assert len([c for c in second if c["cache_hit"]]) >= len(first)
    assert (run / "predictions.jsonl").read_bytes() == (tmp_path / "ref" / "predictions.jsonl").read_bytes()
    m1 = json.loads((run / "metrics.json").read_text())
    m0 = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert (m1["score"], m1["ci95"], m1["total"]["tokens_out"]) == (m0["score"], m0["ci95"], m0["total"]["tokens_out"])
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
