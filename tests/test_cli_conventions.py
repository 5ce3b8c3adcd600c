"""CLI conventions, through the installed `moco` executable: every usage error is one line with exit code 2,
`--version`, overrides (`--limit --seed --set --output`), `--json`, one line per method at any width, and no
boxes or colour without a terminal or with NO_COLOR."""
from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moco.methods.catalog import BUILTIN

MOCO = shutil.which("moco", path=str(Path(sys.executable).parent)) or shutil.which("moco")
BOX = set("│┃┏━┡└─╭╰")
SCRIPTED = {"method": "text_majority_vote", "task": {"name": "moco_demo", "test_limit": 6},
            "models": ["scripted:a", {"model": "scripted:b", "script": {"default": "The answer is (B)"}}],
            "decoding": {"temperature": 0.7}}


def moco(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    assert MOCO, "the `moco` executable is not installed beside this Python"
    return subprocess.run([MOCO, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "80", **(env or {})})


@pytest.fixture
def cfg(tmp_path) -> Path:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(SCRIPTED))
    return p


# (arguments, a fragment the one line must contain); "CFG" is a valid scripted config
BAD = [
    (["run", "--bogus", "x"], "No such option: --bogus"),
    (["run"], "Missing argument 'config'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["--bogus-global"], "No such option: --bogus-global"),
    (["list"], "Missing argument 'what'"),
    (["list", "things"], "unknown list 'things'"),
    (["list", "method"], "unknown list 'method' (did you mean 'methods'?)"),
    (["list", "methods", "a", "b"], "unexpected extra argument"),
    (["list", "tasks", "gsm8k"], "takes no NAME"),
    (["list", "methods", "majority_vot"], "unknown method 'majority_vot' (did you mean 'majority_vote'?)"),
    (["run", "CFG", "--limit", "0"], "Invalid value for '--limit'"),
    (["run", "CFG", "--limit", "abc"], "Invalid value for '--limit'"),
    (["run", "CFG", "--seed", "-1"], "Invalid value for '--seed'"),
    (["run", "CFG", "--set", "novalue"], "expected KEY=VALUE"),
    (["run", "CFG", "--set", "generation.temperatur=0"], "unknown key 'temperatur' (did you mean 'temperature'?)"),
    (["validate", "CFG", "--set", "decoding.temperature=9"], "decoding.temperature: Input should be less than"),
    (["validate", "CFG", "--set", "generation.temperature=9"], "decoding.temperature: Input should be less than"),
    (["validate", "CFG", "--set", "models.5.name=x"], "a list of 2 needs an index 0-1"),
    (["validate", "CFG", "--set", "seed.x=1"], "config: seed: Input should be a valid integer"),
    (["validate", "CFG", "--set", "models.0.model.x=1"], "'models.0.model' is not a mapping"),
    (["validate", "CFG", "--set", "params.tie=coin"], "params (text_majority_vote): tie: Input should be"),
    (["validate", "no/such.yaml"], "config file not found"),
    (["compare"], "Missing argument 'sweep'"),
    (["data", "fetch"], "Missing argument 'names'"),
    (["serve", "CFG", "--port", "http"], "Invalid value for '--port'"),
    (["score", "--predictions", "p.jsonl"], "Missing option '--task'"),
]


@pytest.mark.parametrize("args, fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_every_usage_error_is_one_line_with_exit_2(args, fragment, cfg):
    r = moco(*[cfg if a == "CFG" else a for a in args])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, (args, r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_version():
    from moco import __version__

    r = moco("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"moco {__version__}"


def test_list_methods_one_line_each_at_80_columns():
    r = moco("list", "methods")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    names = sorted(row.name for row in BUILTIN)
    assert [ln.split()[0] for ln in lines[:-1]] == names  # one line per method, nothing wrapped onto a next line
    assert max(map(len, lines)) > 80 and not BOX & set(r.stdout)
    vote = next(ln for ln in lines if ln.startswith("text_majority_vote "))
    assert "text  " in vote and "2+" in vote and "aliases: majority_vote, vote" in vote


def test_list_method_detail_and_json():
    r = moco("list", "methods", "vote")  # an alias
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("text_majority_vote (text, 2+ models)") and "tie" in r.stdout and "'dev-based'" in r.stdout
    data = json.loads(moco("list", "methods", "--json").stdout)
    assert [d["name"] for d in data] == sorted(row.name for row in BUILTIN)
    one = json.loads(moco("list", "methods", "text_majority_vote", "--json").stdout)
    assert one["params"][0]["name"] == "tie" and one["models"] == "2+"
    tasks = json.loads(moco("list", "tasks", "--json").stdout)
    assert {"name": "gsm8k", "task_type": "exact_match", "scorer": "numeric_match"}.items() <= \
        next(t for t in tasks if t["name"] == "gsm8k").items()


def test_validate_json(cfg):
    r = moco("validate", cfg, "--json", "--limit", "3", "--seed", "7", "--set", "params.tie=random")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] and d["method"] == "text_majority_vote" and d["n_test"] == 3 and d["seed"] == 7
    assert d["params"] == {"tie": "random"} and [m["kind"] for m in d["models"]] == ["scripted", "scripted"]
    r = moco("validate", cfg, "--json", "--set", "method=majority_vot")
    assert r.returncode == 2 and json.loads(r.stdout) == {
        "ok": False, "error": "unknown method 'majority_vot' (did you mean 'majority_vote'?)"}


def test_run_with_overrides_writes_what_was_asked(cfg, tmp_path):
    out = tmp_path / "run"
    r = moco("run", cfg, "--limit", "4", "--seed", "3", "--set", "generation.temperature=0",
             "--set", "models.0.name=first", "--output", out, "--no-progress",
             env={"MOCO_RESPONSE_CACHE": str(tmp_path / "c.sqlite")})
    assert r.returncode == 0, r.stderr
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["seed"] == 3 and written["decoding"]["temperature"] == 0.0
    assert written["task"]["test_limit"] == 4 and written["models"][0]["name"] == "first"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 4 and metrics["models"] == ["first", "b"]


def _on_a_terminal(*args: str, env: dict[str, str]) -> str:
    """Run `moco` with a pseudo-terminal as stdout (what a user sees)."""
    main, sub = pty.openpty()
    e = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    p = subprocess.Popen([MOCO, *args], stdout=sub, stderr=subprocess.PIPE, env={**e, "COLUMNS": "200", **env})
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=120)
    os.close(main)
    return b"".join(chunks).decode()


def test_boxes_and_colour_only_on_a_terminal_without_no_color():
    tty = _on_a_terminal("list", "models", env={"TERM": "xterm-256color"})
    assert BOX & set(tty) and "smollm2-135m-instruct" in tty
    no_color = _on_a_terminal("list", "models", env={"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert not BOX & set(no_color) and "\x1b[" not in no_color and "smollm2-135m-instruct" in no_color
    piped = moco("list", "models").stdout
    assert not BOX & set(piped) and "\x1b[" not in piped and "smollm2-135m-instruct" in piped


def test_demo_table_keeps_system_names_whole_at_80_columns():
    from rich.console import Console

    from moco.demo import comparison_table
    from moco.display import print_wide

    rows = [{"method": "single_model", "phases": {"test": {"tokens_out": 10, "compute_s": 3.0, "per_model": {
                "a-rather-long-geography-expert": {"tokens_in": 1, "tokens_out": 5, "calls": 2}}}},
             "per_model_test": {"a-rather-long-geography-expert": 0.5}},
            {"method": "text_multiagent_refine", "score": 0.542, "ci95": [0.42, 0.69],
             "total": {"tokens_in": 36153, "tokens_out": 5159, "calls": 384, "compute_s": 102.4}}]
    for terminal in (True, False):
        console = Console(width=80, force_terminal=terminal, record=True)
        print_wide(console, comparison_table(rows))
        text = console.export_text()
        assert "single: a-rather-long-geography-expert" in text and "text_multiagent_refine" in text
        assert "0.42-0.69" in text and "102.4" in text and "…" not in text


def test_help_without_a_terminal_has_no_boxes():
    r = moco("zoo")  # a group without its command: its help, exit 2
    assert r.returncode == 2 and r.stdout.startswith("Usage: moco zoo") and "build" in r.stdout and r.stderr == ""
    r = moco("run", "--help")
    assert r.returncode == 0 and "--output" in r.stdout and "--set" in r.stdout and not BOX & set(r.stdout)


def test_serve_help_names_every_openai_route():
    r = moco("serve", "--help")
    text = " ".join(r.stdout.split())  # the help is wrapped to the terminal's width
    assert r.returncode == 0
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/models"):
        assert route in text, route


def test_an_unexpected_error_is_raised_as_itself(monkeypatch):
    """A bug (not a usage error) reaches the user as its own exception, not as a crash of the error handler."""
    from moco import cli

    def boom(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(RuntimeError, match="boom"):
        cli.main()
