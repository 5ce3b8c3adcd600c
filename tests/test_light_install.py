"""An endpoint-only install (`pip install moco-collab`, no extras: no torch) runs a text method against a local
`moco serve`. Needs a scratch virtualenv with the base install, given as MOCO_LIGHT_VENV:

    python3 -m venv /tmp/light && /tmp/light/bin/pip install -e .
    MOCO_LIGHT_VENV=/tmp/light pytest -m slow tests/test_light_install.py
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from serve_util import served

LIGHT = os.environ.get("MOCO_LIGHT_VENV")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not LIGHT, reason="light install: set MOCO_LIGHT_VENV to a venv with the base install")]

SERVER = {"name": "scripted-expert", "method": "single_model", "task": "moco_demo",
          "models": [{"model": "scripted:expert", "script": {
              "rules": [{"match": "sides", "reply": "The answer is (A)"}], "default": "The answer is (B)"}}]}


def _light(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(Path(LIGHT) / "bin" / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=600, env={**env, **kw.pop("env", {})}, **kw)


def test_endpoint_only_install_runs_a_text_method_without_torch(tmp_path):
    r = _light("python", "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', "
               "'accelerate', 'matplotlib') if u.find_spec(m)])")
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr  # nothing heavy installed
    (tmp_path / "server.json").write_text(json.dumps(SERVER))
    with served(tmp_path / "server.json") as base:
        endpoint = {"base_url": base, "model": "scripted-expert", "timeout_s": 60}
        cfg = {"method": "text_majority_vote", "task": {"name": "moco_demo", "test_limit": 8},
               "models": [{"model": "expert-1", "endpoint": endpoint}, {"model": "expert-2", "endpoint": endpoint}],
               "decoding": {"temperature": 0.0, "max_new_tokens": 32}}
        (tmp_path / "client.json").write_text(json.dumps(cfg))
        r = _light("moco", "run", str(tmp_path / "client.json"), "--out", str(tmp_path / "run"), "--no-progress",
                   env={"MOCO_RESPONSE_CACHE": str(tmp_path / "c.sqlite")})
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    preds = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert metrics["method"] == "text_majority_vote" and metrics["n"] == 8 and metrics["total"]["calls"] >= 16
    assert [p["extracted"] for p in preds] == ["A" if "sides" in p["prompt"] else "B" for p in preds]
    assert metrics["score"] == sum(p["extracted"] == p["gold"] for p in preds) / 8
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "torch" not in manifest["versions"]
    r = _light("moco", "report", str(tmp_path / "run"), "--out", str(tmp_path / "report.html"))
    assert r.returncode == 2 and r.stderr.strip() == ("error: this needs the optional package 'matplotlib': "
                                                     "pip install 'moco-collab[report]'")
