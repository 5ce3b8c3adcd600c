"""Storage faults: a corrupt response cache, a full disk and a read-only folder under the run directory or the
cache. Each is one line (exit 2 from the CLI) and a consistent state: a corrupt cache is moved aside and the
run goes on; a full disk leaves the manifest `failed` with the reason and no temporary files; re-running
the same command once there is room finishes the run."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from moco.cache import ResponseCache
from moco.config import parse_config
from moco.errors import StorageError
from moco.models.base import GenResult
from moco.runner import run_experiment
from reliability import tally
from serve_util import moco_env
from storage_faults import fill, full_disk, read_only

N = 40
REPLY = "The answer is (A) " + "because " * 60


@pytest.fixture
def task(tmp_path):
    rows = [{"id": f"q{i}", "question": f"Question {i}?", "choices": {"A": "x", "B": "y"}, "answer": "A"} for i in range(N)]
    p = tmp_path / "mc.json"
    p.write_text(json.dumps({"task_type": "multiple_choice", "test": rows}))
    return p


def _cfg(task):
    return parse_config({"method": "single_model", "models": [{"model": "scripted:a", "script": {"default": REPLY}}],
                         "task": str(task), "decoding": {"temperature": 0.0}})


def _filled_cache(path) -> None:
    c = ResponseCache(path)
    c.put_many([(f"k{i}", "fp", GenResult("x" * 400, 1, 1, "stop", 0.1)) for i in range(1500)])
    c.close()


def _random(p):
    p.write_bytes(os.urandom(p.stat().st_size))


def _truncated(p):
    os.truncate(p, p.stat().st_size // 2)


def _middle(p):
    with open(p, "r+b") as f:
        f.seek(p.stat().st_size // 2)
        f.write(os.urandom(8192))


def _header(p):
    with open(p, "r+b") as f:
        f.write(b"not a database!!")


def _text(p):
    p.write_text("hello, I am a text file\n")


@pytest.mark.parametrize("damage", [_random, _truncated, _header, _text])  # _middle: found mid-run (below)
def test_a_corrupt_cache_is_moved_aside_and_the_run_goes_on(tmp_path, task, damage, caplog):
    path = tmp_path / "cache" / "responses.sqlite"
    _filled_cache(path)
    for extra in ("-wal", "-shm"):  # a cleanly closed WAL database keeps only the main file
        assert not (tmp_path / "cache" / f"responses.sqlite{extra}").exists()
    damage(path)
    cache = ResponseCache(path)
    try:
        res = run_experiment(_cfg(task), tmp_path / "run", cache=cache)
    finally:
        cache.close()
    assert res.metrics["score"] == 1.0 and res.metrics["n"] == N
    aside = [p for p in (tmp_path / "cache").iterdir() if ".corrupt-" in p.name]
    assert len(cache.moved_aside) == 1 and aside and all(p.name.startswith("responses.sqlite.corrupt-") for p in aside)
    lines = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and str(path) in lines[0]
    db = sqlite3.connect(path)  # the new cache holds this run's answers and is sound
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == N
    db.close()
    tally("faults injected")


def test_corruption_found_mid_run_moves_the_cache_aside_and_regenerates(tmp_path):
    path = tmp_path / "responses.sqlite"
    _filled_cache(path)
    cache = ResponseCache(path)
    try:
        assert len(cache.get_many(["k1", "k2"])) == 2
        _middle(path)  # overwritten under an open connection
        got = cache.get_many([f"k{i}" for i in range(1500)])
        assert got == {} or len(got) == 1500  # never a partial answer from a broken file
        cache.put_many([("new", "fp", GenResult("y", 1, 1, "stop", 0.1))])
        assert "new" in cache.get_many(["new"])
    finally:
        cache.close()
    tally("faults injected")


def _moco_run(cfg_path, out, **env):
    return subprocess.run([sys.executable, "-m", "moco", "run", str(cfg_path), "--out", str(out), "--no-progress"],
                          env=moco_env(**env), capture_output=True, text=True, timeout=300)


def _write_cfg(tmp_path, task):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"method": "single_model", "task": str(task), "decoding": {"temperature": 0.0},
                             "models": [{"model": "scripted:a", "script": {"default": REPLY}}]}))
    return p


def _no_temporaries(folder) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp" in p.name]


def test_a_full_disk_under_the_run_directory_is_one_line_from_the_cli(tmp_path, task):
    cfg = _write_cfg(tmp_path, task)
    with full_disk(tmp_path / "disk", "8k") as disk:  # calls.jsonl fills it
        r = _moco_run(cfg, disk / "run", MOCO_RESPONSE_CACHE=str(tmp_path / "cache.sqlite"))
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "disk full" in r.stderr and "Traceback" not in r.stderr
        man = json.loads((disk / "run" / "manifest.json").read_text())
        assert man["status"] == "failed" and "disk full" in man["error"]
        assert _no_temporaries(disk) and not (disk / "run" / "metrics.json").exists()
    tally("faults injected")


@pytest.mark.parametrize("size", ["8k", "24k", "48k"])  # calls.jsonl / predictions.jsonl / metrics.json fill it
def test_a_full_disk_under_the_run_directory_leaves_a_failed_manifest(tmp_path, task, size):
    with full_disk(tmp_path / "disk", size) as disk:
        with pytest.raises(StorageError, match="disk full") as e:
            run_experiment(_cfg(task), disk / "run", cache=ResponseCache(tmp_path / "c.sqlite"))
        assert "\n" not in str(e.value)
        man = json.loads((disk / "run" / "manifest.json").read_text())
        assert man["status"] == "failed" and "disk full" in man["error"]
        assert _no_temporaries(disk) and not (disk / "run" / "metrics.json").exists()
    tally("faults injected")


def test_a_full_disk_under_the_cache_is_one_line_not_cannot_rollback(tmp_path, task):
    with full_disk(tmp_path / "disk", "96k") as disk:
        cache = ResponseCache(disk / "responses.sqlite")
        try:
            with pytest.raises(StorageError, match="database or disk is full") as e:
                run_experiment(_cfg(task), tmp_path / "run", cache=cache)
        finally:
            cache.close()
        assert "\n" not in str(e.value) and "rollback" not in str(e.value)
        man = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert man["status"] == "failed" and "disk is full" in man["error"] and _no_temporaries(tmp_path / "run")
        db = sqlite3.connect(disk / "responses.sqlite")  # what was committed is intact
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.close()
    tally("faults injected")


def test_a_cache_that_fills_up_mid_batch_keeps_its_committed_rows(tmp_path):
    with full_disk(tmp_path / "disk", "128k") as disk:
        cache = ResponseCache(disk / "r.sqlite")
        cache.put_many([("first", "fp", GenResult("ok", 1, 1, "stop", 0.1))])
        fill(disk)
        with pytest.raises(StorageError, match="cannot be used: database or disk is full") as e:
            cache.put_many([(f"k{i}", "fp", GenResult("z" * 4000, 1, 1, "stop", 0.1)) for i in range(50)])
        assert "\n" not in str(e.value)
        assert list(cache.get_many(["first", "k0"])) == ["first"]  # the batch is stored whole or not at all
        cache.close()
    tally("faults injected")


@pytest.mark.parametrize("where", ["run", "cache"])
def test_a_read_only_folder_is_one_line_before_anything_is_written(tmp_path, task, where, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "old-run").mkdir()
    out = ro / "old-run" if where == "run" else tmp_path / "run"
    cache = tmp_path / "c.sqlite" if where == "run" else ro / "responses.sqlite"
    monkeypatch.setenv("MOCO_RESPONSE_CACHE", str(cache))
    with read_only(ro):
        with pytest.raises(StorageError) as e:
            run_experiment(_cfg(task), out)
    msg = str(e.value)
    assert "\n" not in msg and ("read-only" in msg or "unable to open" in msg or "readonly" in msg), msg
    assert not (tmp_path / "run").exists()  # an unusable cache fails before the run directory is made
    tally("faults injected")


# file.write passes: 1 config.yaml, 2 the first manifest (both before the run starts: no manifest is left),
# 3 predictions.jsonl, 4 metrics.json, 5 the final manifest
@pytest.mark.parametrize("fault", ["file.write:1:EROFS", "file.write:2:ENOSPC", "file.write:3:ENOSPC",
                                   "file.write:4:ENOSPC", "file.write:5:ENOSPC", "cache.commit:1:ENOSPC"])
def test_injected_storage_faults_without_root(tmp_path, task, fault, monkeypatch):
    """The same faults by injection (MOCO_FAULT's ENOSPC/EROFS), for machines where no tmpfs can be mounted;
    then the same run, with room again, finishes with every item."""
    from moco import faults

    monkeypatch.setattr(faults, "_PLAN", faults.parse(fault))
    monkeypatch.setattr(faults, "_COUNTS", faults.Counter())
    monkeypatch.setattr(faults, "hit", faults._hit)
    cache = ResponseCache(tmp_path / "c.sqlite")
    try:
        with pytest.raises(StorageError) as e:
            run_experiment(_cfg(task), tmp_path / "run", cache=cache)
        assert "\n" not in str(e.value) and ("No space left" in str(e.value) or "read-only" in str(e.value))
        man = tmp_path / "run" / "manifest.json"
        early = fault.startswith(("file.write:1:", "file.write:2:"))
        assert (not man.exists()) if early else json.loads(man.read_text())["status"] == "failed"
        assert _no_temporaries(tmp_path / "run") and not (tmp_path / "run" / "metrics.json").exists()
        monkeypatch.setattr(faults, "_PLAN", {})
        res = run_experiment(_cfg(task), tmp_path / "run", cache=cache)
    finally:
        cache.close()
    assert json.loads(man.read_text())["status"] == "finished" and res.metrics["n"] == N
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == N
    tally("faults injected")


def test_a_model_answer_that_is_not_unicode_is_written_and_not_cached(tmp_path, task, caplog):
    """A lone surrogate from a model (an endpoint's JSON can carry one) crashed the cache and the result
    files; now the run finishes, the files hold it as a JSON escape (the same string read back), and the
    call is simply not cached."""
    from moco.models.scripted import ScriptedBackend

    model = ScriptedBackend("a", fn=lambda r: "The answer is (A) \ud800")
    cache = ResponseCache(tmp_path / "c.sqlite")
    try:
        res = run_experiment(_cfg(task), tmp_path / "run", cache=cache, backends={"scripted:a": model})
        assert len(cache) == 0
    finally:
        cache.close()
    assert res.metrics["score"] == 1.0 and res.metrics["n"] == N
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == N and rows[0]["output"] == "The answer is (A) \ud800"
    assert any("not cached" in r.getMessage() for r in caplog.records)
    tally("faults injected")
