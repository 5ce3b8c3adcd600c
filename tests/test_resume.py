"""Interruption: a run killed (SIGKILL at named sites or at random times, Ctrl-C, SIGTERM) and re-run with the
same command finishes with the same predictions and metrics as an uninterrupted run, recomputes no model
call that had finished, and leaves no corrupt file (torn calls.jsonl lines are cut, final files are written
atomically, the SQLite cache passes its integrity check).

Sites (see moco.faults): generate.batch, cache.commit, calls.write, file.write, score.batch, train.step.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from faultkit import (Runner, assert_cache_intact, assert_clean_run_dir, assert_no_recomputation, read_calls,
                      same_results)
from moco import faults
from moco.testing import mc_dataset

SEED = 20261121


def _scripted_config(tmp: Path, n_test: int = 12) -> Path:
    """Debate of two sampled scripted models: dev answers and dev scoring (summarizer = dev-best), two
    revision rounds, a summary, then scoring; batches of 3 calls."""
    task = tmp / "task.json"
    task.write_text(json.dumps(mc_dataset(n_dev=4, n_test=n_test)))
    replies = {"a": ["The answer is (A)", "The answer is (B)", "I pick (C)"],
               "b": ["The answer is (D)", "(A) is right", "The answer is (B)"]}
    cfg = tmp / "cfg.json"
    cfg.write_text(json.dumps({
        "method": "text_multiagent_refine", "task": {"name": str(task)},
        "models": [{"model": f"scripted:{n}", "script": {"default": r}} for n, r in replies.items()],
        "params": {"rounds": 2}, "decoding": {"temperature": 0.8}, "hardware": {"batch_size": 3}, "seed": 5}))
    return cfg


@pytest.fixture(scope="module")
def scripted_ref(tmp_path_factory):
    """The uninterrupted reference run, and how often it passes each fault site."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = _scripted_config(tmp)
    ref = Runner(cfg, tmp / "ref", tmp / "ref.sqlite")
    ref.finish()
    calls = read_calls(ref.run_dir)
    batches = len({c["batch"] for c in calls if c["batch"] is not None})
    hits = {"generate.batch": batches, "cache.commit": batches, "calls.write": len(calls),
            "file.write": 5, "score.batch": 3}  # config, manifest, predictions, metrics, manifest; dev x2 + test
    return cfg, ref.run_dir, hits


def _check(r: Runner, ref_dir: Path) -> None:
    same_results(r.run_dir, ref_dir)
    assert_no_recomputation(r.run_dir)
    assert_clean_run_dir(r.run_dir)
    assert_cache_intact(r.cache)


def test_every_fault_site_once_then_resume(scripted_ref, tmp_path):
    """One run directory killed at each site in turn (seeded order and pass number), then finished."""
    cfg, ref_dir, hits = scripted_ref
    rng = random.Random(SEED)
    sites = list(hits)
    rng.shuffle(sites)
    r = Runner(cfg, tmp_path / "run", tmp_path / "run.sqlite")
    for site in sites:
        a = r.attempt(f"{site}:{rng.randint(1, hits[site])}")
        assert a.returncode == -9, a.stderr
        assert not (r.run_dir / "metrics.json").exists()
        read_calls(r.run_dir, strict=False)
    r.finish()
    _check(r, ref_dir)
    attempts = {c["attempt"] for c in read_calls(r.run_dir)}
    assert max(attempts) == json.loads((r.run_dir / "manifest.json").read_text())["attempt"] <= len(sites) + 1
    assert len(r.attempts) == len(sites) + 1


def test_random_fault_sequence(scripted_ref, tmp_path):
    """Seeded random (site, pass) faults, several in a row, until a run gets through."""
    cfg, ref_dir, hits = scripted_ref
    rng = random.Random(SEED + 1)
    r = Runner(cfg, tmp_path / "run", tmp_path / "run.sqlite")
    fired = 0
    for _ in range(5):
        site = rng.choice(sorted(hits))
        a = r.attempt(f"{site}:{rng.randint(1, hits[site])}", must_fire=False)
        if a.fault is None:  # fewer passes are left in a resumed run: it got through
            assert a.returncode == 0, a.stderr
            break
        assert a.returncode == -9
        fired += 1
    assert fired >= 2
    if r.attempts[-1].returncode != 0:
        r.finish()
    _check(r, ref_dir)


def test_torn_calls_line_is_cut_before_the_next_attempt(scripted_ref, tmp_path):
    cfg, ref_dir, hits = scripted_ref
    r = Runner(cfg, tmp_path / "run", tmp_path / "run.sqlite")
    r.attempt(f"calls.write:{hits['calls.write'] // 2}")
    raw = (r.run_dir / "calls.jsonl").read_bytes()
    assert not raw.endswith(b"\n")  # the kill really left half a line
    r.finish()
    assert [c["attempt"] for c in read_calls(r.run_dir)][-1] == 2
    _check(r, ref_dir)


def test_kill_between_temporary_copy_and_rename_leaves_old_or_no_file(scripted_ref, tmp_path):
    """file.write pass 3 is predictions.jsonl: its temporary copy is written, the rename never happens."""
    cfg, ref_dir, _ = scripted_ref
    r = Runner(cfg, tmp_path / "run", tmp_path / "run.sqlite")
    r.attempt("file.write:3")
    left = sorted(p.name for p in r.run_dir.iterdir())
    assert "predictions.jsonl" not in left and any(n.startswith(".predictions.jsonl.tmp") for n in left)
    r.finish()
    _check(r, ref_dir)  # the stale temporary copy is gone


@pytest.mark.parametrize("sig, code, word", [("INT", 130, "Ctrl-C"), ("TERM", 143, "SIGTERM")])
def test_ctrl_c_and_sigterm_stop_cleanly_and_say_how_to_resume(scripted_ref, tmp_path, sig, code, word):
    cfg, ref_dir, _ = scripted_ref
    r = Runner(cfg, tmp_path / "run", tmp_path / "run.sqlite")
    a = r.attempt(f"generate.batch:4:{sig}")
    assert a.returncode == code
    lines = [x for x in a.stderr.splitlines() if x.strip()]
    assert lines == [f"interrupted ({word}). Finished model calls are cached: run the same command again to resume."]
    man = json.loads((r.run_dir / "manifest.json").read_text())
    assert man["status"] == "interrupted" and "KeyboardInterrupt" in man["error"]
    r.finish()
    _check(r, ref_dir)


def test_fault_spec_typos_are_errors():
    assert faults.parse("generate.batch:3,calls.write:1:INT") == {"generate.batch": (3, "KILL"),
                                                                  "calls.write": (1, "INT")}
    for bad in ("generate:3", "generate.batch:0", "generate.batch", "file.write:2:HUP"):
        with pytest.raises(ValueError, match="MOCO_FAULT"):
            faults.parse(bad)


def test_fault_sites_are_no_ops_when_unset():
    assert faults.hit is faults._noop and faults.torn_write is faults._plain_write


# ----------------------------------------------------------------------------------- real (tiny) models
def test_tiny_models_killed_at_a_random_time(tiny_models, tmp_path):
    """Tiny random Llamas sampling at temperature 0.8: an external SIGKILL at a seeded random point, then the
    same command finishes identically to an uninterrupted run (the fault sites are covered by the scripted
    runs above; the slow variant below also kills at a generation batch)."""
    _tiny_kill(tiny_models, tmp_path, at_batch=False)


@pytest.mark.slow  # one more run of four subprocesses that import torch
def test_tiny_models_killed_at_a_random_time_and_at_a_batch(tiny_models, tmp_path):
    _tiny_kill(tiny_models, tmp_path, at_batch=True)


def _tiny_kill(tiny_models, tmp_path: Path, at_batch: bool) -> None:
    task = tmp_path / "task.json"
    task.write_text(json.dumps(mc_dataset(n_dev=2, n_test=6)))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"method": "text_multiagent_refine", "task": {"name": str(task)},
                               "models": [str(m) for m in tiny_models[:2]], "params": {"rounds": 1},
                               "decoding": {"max_new_tokens": 8, "temperature": 0.8}, "hardware": {"batch_size": 2}, "seed": 3}))
    ref = Runner(cfg, tmp_path / "ref", tmp_path / "ref.sqlite")
    ref.finish()
    total = len(read_calls(ref.run_dir))
    r = Runner(cfg, tmp_path / "run", tmp_path / "run.sqlite")
    r.kill_after(random.Random(SEED).randint(2, total // 2))
    assert r.attempts[-1].returncode == -9
    if at_batch:
        assert r.attempt("generate.batch:2").returncode == -9
    r.finish()
    _check(r, ref.run_dir)
    first = {c["key"] for c in read_calls(r.run_dir) if c["attempt"] == 1}
    last = len(r.attempts)
    assert first and all(c["cache_hit"] for c in read_calls(r.run_dir) if c["attempt"] == last and c["key"] in first)


TRAIN = """
import json, sys
from pathlib import Path
from moco.training.sft import SFTSettings, train_lora_sft
data = [([("user", f"question {i}")], f"answer {i % 3}") for i in range(12)]
res = train_lora_sft(sys.argv[1], data, Path(sys.argv[2]), SFTSettings(max_steps=6, batch_size=2, lora_r=4,
                     target_modules=["q_proj", "v_proj"], seed=1))
print(json.dumps({"steps": res.steps, "reused": res.reused, "losses": res.losses}))
"""


@pytest.mark.slow  # four subprocesses that import torch and peft: ~1.5 min on 2 busy cores
def test_training_killed_mid_way_retrains_to_the_same_adapter(tiny_models, tmp_path):
    """SIGKILL after optimizer step 3 of 6: no adapter is left that a re-run could take as finished; the
    re-run trains to the very weights of an uninterrupted training, and a third run reuses them."""
    from safetensors.torch import load_file

    def train(out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in __import__("os").environ.items() if k != "MOCO_FAULT"}
        if fault:
            env["MOCO_FAULT"] = fault
            env["MOCO_FAULT_LOG"] = str(tmp_path / "train.faults")
        return subprocess.run([sys.executable, "-c", TRAIN, str(tiny_models[0]), str(out)], env=env,
                              capture_output=True, text=True, timeout=300)

    ref = train(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = train(tmp_path / "adapter", "train.step:3")
    assert killed.returncode == -9 and (tmp_path / "train.faults").read_text().startswith("train.step:3 KILL")
    from reliability import tally

    tally("faults injected")
    assert not (tmp_path / "adapter" / ".complete").exists()
    again = train(tmp_path / "adapter")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["losses"] == json.loads(ref.stdout)["losses"]
    w0 = load_file(str(tmp_path / "ref" / "adapter_model.safetensors"))
    w1 = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert w0.keys() == w1.keys() and all((w0[k] == w1[k]).all() for k in w0)
    third = train(tmp_path / "adapter")
    assert json.loads(third.stdout)["reused"] is True
