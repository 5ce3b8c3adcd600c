"""The command line: every bad input is one line on stderr with exit code 2, nothing loaded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def moco(*args, env=None, cwd=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "moco", *map(str, args)], capture_output=True, text=True, env=e,
                          cwd=cwd or REPO, timeout=300)


def _write(tmp_path, name, data) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


GOOD = {"method": "text_majority_vote", "task": "moco_demo", "models": ["scripted:a", "scripted:b"]}


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*") if p.suffix in (".yaml", ".json")
                                           and p.name != "endpoints.yaml"))
def test_examples_validate(example, sample_data):
    if "zoo/" in (REPO / "examples" / example).read_text() and not (REPO / "zoo" / "zoo.json").exists():
        pytest.skip("needs the specialist zoo (moco zoo build --out zoo); "
                    "test_weight_methods.py validates these configs on a tiny zoo")
    if "engine: vllm" in (REPO / "examples" / example).read_text():
        from moco import engines

        if not engines.installed("vllm"):  # the user's view without vLLM: the install hint, in one line
            r = moco("validate", REPO / "examples" / example, "--data-dir", sample_data)
            assert r.returncode == 2 and "engine vllm needs the optional package 'vllm'" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
            r = moco("validate", REPO / "examples" / example, "--data-dir", sample_data, "--set",
                     "hardware.engine=none")
            assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr
            return
    r = moco("validate", REPO / "examples" / example, "--data-dir", sample_data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("OK")


@pytest.mark.parametrize("data, message", [
    ({**GOOD, "modles": []}, "unknown key 'modles' (did you mean 'models'?)"),
    ({**GOOD, "method": "majority_vot"}, "unknown method 'majority_vot' (did you mean 'majority_vote'?)"),
    ({**GOOD, "task": "moco_dem"}, "unknown task 'moco_dem' (did you mean 'moco_demo'?)"),
    ({**GOOD, "models": ["./no/such/model", "scripted:b"]}, "model path not found: ./no/such/model"),
    ({**GOOD, "models": ["scripted:a"]}, "method text_majority_vote needs at least 2 models, the config has 1"),
    ({**GOOD, "params": {"tie": "coin"}}, "params (text_majority_vote): tie: Input should be"),
    ({**GOOD, "hardware": {"batch_size": 0}}, "hardware.batch_size"),
    ({**GOOD, "roles": {"judge": "a"}}, "roles: method text_majority_vote uses no roles"),
    ({**GOOD, "hardware": {"gpu_ids": [0]}}, "gpu_ids [0] given but no CUDA GPU is visible"),
])
def test_bad_configs_exit_2_with_one_line(data, message, tmp_path):
    cfg = _write(tmp_path, "c.json", data)
    for cmd in ("validate", "run"):
        r = moco(cmd, cfg)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
        assert len(lines) == 1 and message in lines[0].replace("\n", " "), r.stderr
        assert "Traceback" not in r.stderr


def test_yaml_syntax_and_missing_file(tmp_path):
    r = moco("validate", _write(tmp_path, "c.yaml", "method: x\nmodels: [a, b\n"))
    assert r.returncode == 2 and "invalid YAML at line" in r.stderr
    r = moco("validate", tmp_path / "none.yaml")
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_malformed_dataset_file(tmp_path):
    data = _write(tmp_path, "broken.json", '{"task_type": "multiple_choice", "test": [')
    r = moco("validate", _write(tmp_path, "c.json", {**GOOD, "task": str(data)}))
    assert r.returncode == 2 and "invalid JSON at line" in r.stderr and "broken.json" in r.stderr


def test_unreachable_endpoint_is_one_line(tmp_path):
    cfg = {**GOOD, "task": {"name": "moco_demo", "test_limit": 2}, "models": [
        {"model": "m", "endpoint": {"base_url": "http://127.0.0.1:9/v1", "timeout_s": 2}}, "scripted:b"]}
    r = moco("run", _write(tmp_path, "c.json", cfg), "--out", tmp_path / "run")
    assert r.returncode == 2 and "endpoint http://127.0.0.1:9/v1 unreachable" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback(tmp_path):
    r = moco("--debug", "validate", _write(tmp_path, "c.json", {**GOOD, "method": "nope"}))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_list_commands(data_dir):
    r = moco("list", "methods")
    assert r.returncode == 0
    for name in ("single_model", "text_majority_vote", "text_multiagent_refine"):
        assert name in r.stdout
    r = moco("list", "methods", "text_multiagent_refine")
    assert r.returncode == 0 and "rounds" in r.stdout
    r = moco("list", "tasks", env={"MOCO_DATA_DIR": str(data_dir), "COLUMNS": "200"})
    assert r.returncode == 0 and "agieval_tiny" in r.stdout and "moco_demo" in r.stdout and "1156" in r.stdout
    r = moco("list", "models", env={"COLUMNS": "200"})
    assert r.returncode == 0 and "smollm2-135m-instruct" in r.stdout
    r = moco("list", "things")
    assert r.returncode == 2 and "unknown list 'things'" in r.stderr


def test_run_with_scripted_models_end_to_end(tmp_path):
    cfg = {**GOOD, "models": [{"model": "scripted:a", "script": {"default": "The answer is Paris."}},
                              {"model": "scripted:b", "script": {"rules": [{"match": "capital", "reply": "Madrid, I think."}],
                                                                 "default": "No idea."}}],
           "decoding": {"temperature": 0.0}}
    r = moco("run", _write(tmp_path, "c.json", cfg), "--out", tmp_path / "run", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "text_majority_vote on moco_demo: accuracy" in r.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["n"] == 48 and 0.0 <= m["score"] <= 1.0
