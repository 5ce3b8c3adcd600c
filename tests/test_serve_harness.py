"""An evaluation harness (inspect_ai) scores a collaboration served by `moco serve`, through chat completions
and through legacy completions. inspect_ai is big, so it lives in a scratch virtualenv, given as
MOCO_HARNESS_VENV (docs/client-server.md, "Evaluation harnesses"):

    python3 -m venv /tmp/harness-venv && /tmp/harness-venv/bin/pip install inspect_ai openai
    MOCO_HARNESS_VENV=/tmp/harness-venv pytest -m slow tests/test_serve_harness.py
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from serve_util import served

REPO = Path(__file__).resolve().parent.parent
HARNESS = os.environ.get("MOCO_HARNESS_VENV")
INSPECT = Path(HARNESS or "/nonexistent") / "bin" / "inspect"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not INSPECT.exists(), reason="inspect_ai not installed: set MOCO_HARNESS_VENV to a "
                                 "venv with inspect_ai and openai (see this file's docstring)")]


def inspect_eval(provider: str, base_url: str, log_dir: Path, *extra: str) -> dict:
    """`inspect eval` of examples/harness/inspect_arith.py; returns its JSON log."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cmd = [str(INSPECT), "eval", "examples/harness/inspect_arith.py", "--model", f"{provider}/moco/debate",
           "--model-base-url", base_url, "-M", "api_key=unused", "--log-dir", str(log_dir), "--log-format", "json",
           "--display", "none", *extra]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    logs = sorted(log_dir.glob("*.json"))
    assert len(logs) == 1, logs
    return json.loads(logs[0].read_text())


def test_inspect_ai_scores_a_served_debate_through_chat_and_completions(tmp_path):
    """The served debate's summarizer is scripted to get 6 of the 8 questions right: the harness must say 0.75,
    whichever OpenAI route it uses."""
    with served(REPO / "examples" / "harness" / "arith_debate.yaml") as url:
        chat = inspect_eval("openai-api", url, tmp_path / "chat")
        legacy = inspect_eval("openai-api-completions", url, tmp_path / "completions", "--max-tokens", "32")
        metrics = httpx.get(url.replace("/v1", "/metrics")).text
    for log in (chat, legacy):
        assert log["status"] == "success" and log["results"]["total_samples"] == 8
        assert log["results"]["scores"][0]["metrics"]["accuracy"]["value"] == 0.75
    for route in ("/v1/chat/completions", "/v1/completions"):
        assert f'moco_requests_total{{route="{route}",status="200"}} 8.0' in metrics
