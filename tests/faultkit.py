"""Fault-injection harness: run `moco run` in a subprocess, kill it at named sites (MOCO_FAULT) or at random
times, re-run the same command, and check the run directory, the cache and the calls afterwards."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from reliability import tally

RUN_FILES = {"artifacts", "calls.jsonl", "config.yaml", "manifest.json", "metrics.json", "predictions.jsonl",
             "data_problems.json"}


@dataclass
class Attempt:
    returncode: int
    stderr: str
    fault: str | None  # the site that fired, from MOCO_FAULT_LOG


@dataclass
class Runner:
    """One config, one run directory and one cache: `attempt()` runs the same command again each time."""

    config: Path
    run_dir: Path
    cache: Path
    env: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    def _cmd(self) -> list[str]:
        return [sys.executable, "-m", "moco", "run", str(self.config), "--out", str(self.run_dir), "--no-progress"]

    def _env(self, fault: str | None) -> dict[str, str]:
        env = {**os.environ, **self.env, "MOCO_RESPONSE_CACHE": str(self.cache),
               "MOCO_FAULT_LOG": str(self.run_dir.parent / f"{self.run_dir.name}.faults")}
        env.pop("MOCO_FAULT", None)
        if fault:
            env["MOCO_FAULT"] = fault
        return env

    def _fired(self) -> list[str]:
        log = self.run_dir.parent / f"{self.run_dir.name}.faults"
        return log.read_text().splitlines() if log.exists() else []

    def attempt(self, fault: str | None = None, timeout: float = 300, must_fire: bool = True) -> Attempt:
        """Run once (with MOCO_FAULT=`fault` when given); a planned fault must fire, unless `must_fire` is
        False (a resumed run passes a site fewer times: the run may then finish)."""
        before = len(self._fired())
        p = subprocess.run(self._cmd(), env=self._env(fault), capture_output=True, text=True, timeout=timeout,
                           preexec_fn=default_sigint)
        fired = self._fired()[before:]
        a = Attempt(p.returncode, p.stderr, fired[0] if fired else None)
        self.attempts.append(a)
        if fault and (must_fire or a.fault):
            assert a.fault is not None, f"fault {fault} never fired (exit {p.returncode}): {p.stderr[-500:]}"
            tally("faults injected")
        return a

    def kill_after(self, n_calls: int, timeout: float = 300) -> Attempt:
        """Start the run and SIGKILL it from outside once calls.jsonl has `n_calls` more lines."""
        start = len(read_calls(self.run_dir))
        p = subprocess.Popen(self._cmd(), env=self._env(None), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        try:
            deadline = time.time() + timeout
            while p.poll() is None and len(read_calls(self.run_dir, strict=False)) - start < n_calls:
                assert time.time() < deadline, "the run made no progress"
                time.sleep(0.02)
            assert p.poll() is None, "the run finished before it could be killed"
        finally:
            sigkill(p)
        a = Attempt(p.returncode, p.stderr.read(), f"external SIGKILL after {n_calls} calls")
        self.attempts.append(a)
        return a

    def finish(self, timeout: float = 300) -> Attempt:
        a = self.attempt(timeout=timeout)
        assert a.returncode == 0, a.stderr[-2000:]
        return a


def default_sigint() -> None:
    """A terminal's Ctrl-C reaches the run even when the tests run as a background job (which ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # nor blocked by the thread that started it


def sigkill(p: subprocess.Popen) -> None:
    """SIGKILL a process we started (if it still runs), reap it, and count the fault."""
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        tally("faults injected")


def read_calls(run_dir: Path, strict: bool = True) -> list[dict]:
    """Every line of calls.jsonl; strict: each one must be valid JSON (no torn lines)."""
    f = run_dir / "calls.jsonl"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines(keepends=True):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if strict:
                raise AssertionError(f"corrupt line in calls.jsonl: {line!r}") from None
            continue
        if strict:
            assert line.endswith("\n"), f"unterminated last line in calls.jsonl: {line!r}"
    return out


def assert_no_recomputation(run_dir: Path) -> None:
    """No call that finished (was cached) in an earlier attempt was generated again in a later one."""
    generated: dict[str, int] = {}
    for c in read_calls(run_dir):
        if not c["cache_hit"] and not c["error"]:
            assert c["key"] not in generated or generated[c["key"]] == c["attempt"], (
                f"call {c['key']} finished in attempt {generated[c['key']]} and was generated again in attempt "
                f"{c['attempt']}")
            generated[c["key"]] = c["attempt"]


def assert_clean_run_dir(run_dir: Path) -> None:
    """Finished, only the run's own files, each JSON file parses, no temporary files left behind."""
    names = {p.name for p in run_dir.iterdir()}
    assert names <= RUN_FILES, f"unexpected files in the run directory: {sorted(names - RUN_FILES)}"
    for f in ("manifest.json", "metrics.json"):
        json.loads((run_dir / f).read_text())
    for line in (run_dir / "predictions.jsonl").read_text().splitlines():
        json.loads(line)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"


def assert_cache_intact(path: Path) -> int:
    """SQLite says the cache is sound; returns its number of rows."""
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    finally:
        db.close()


def same_results(run_dir: Path, ref_dir: Path) -> None:
    """Byte-identical predictions and the same score, interval and cost as the uninterrupted run; the items
    whose prediction is missing or differs are counted as lost (the README reports the total: 0)."""
    got = (run_dir / "predictions.jsonl").read_text().splitlines()
    ref = (ref_dir / "predictions.jsonl").read_text().splitlines()
    lost = sum(1 for i, line in enumerate(ref) if i >= len(got) or got[i] != line)
    tally("items lost", lost)
    assert lost == 0 and len(got) == len(ref)
    assert (run_dir / "predictions.jsonl").read_bytes() == (ref_dir / "predictions.jsonl").read_bytes()
    m1 = json.loads((run_dir / "metrics.json").read_text())
    m0 = json.loads((ref_dir / "metrics.json").read_text())
    for key in ("score", "ci95", "n", "failed", "unparsed"):
        assert m1[key] == m0[key], key
    assert m1["total"]["tokens_out"] == m0["total"]["tokens_out"]
    assert m1["total"]["calls"] == m0["total"]["calls"]
    tally("items checked after faults", m1["n_test"])
