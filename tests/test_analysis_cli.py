"""`moco compare` and `moco report` from the command line: example sweeps plan, errors are one line."""
from __future__ import annotations

import json

import pytest

from test_analysis_handmade import _table_fixture
from test_cli import REPO, moco


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples" / "sweeps").glob("*.yaml")))
def test_example_sweeps_plan_without_loading_models(example, sample_data, tmp_path):
    r = moco("compare", REPO / "examples" / "sweeps" / example, "--plan", "--out", tmp_path / "sw",
             "--data-dir", sample_data)
    assert r.returncode == 0, r.stderr
    assert "cells:" in r.stdout and "pending" in r.stdout
    index = json.loads((tmp_path / "sw" / "index.json").read_text())
    assert index["cells"] and not (tmp_path / "sw" / "cells").exists()


@pytest.mark.slow  # the same pipeline is covered in-process by test_analysis_sweep.py and the report tests
def test_scripted_example_sweep_runs_end_to_end(tmp_path):
    r = moco("compare", REPO / "examples" / "sweeps" / "scripted_quick.yaml", "--out", tmp_path / "sw",
             "--no-progress", env={"MOCO_RESPONSE_CACHE": str(tmp_path / "c.sqlite")})
    assert r.returncode == 0, r.stderr
    assert "| Best single |" in r.stdout and "generated tokens:" in r.stdout
    assert "collaboration beats the best single model in" in r.stdout
    html = (tmp_path / "sw" / "report.html").read_text()
    for title in ("Comparison", "emergence", "Scaling", "diversity", "Model selection", "leave-one-out",
                  "malicious", "Cost"):
        assert title in html, title
    assert (tmp_path / "sw" / "table1.md").exists() and (tmp_path / "sw" / "report.md").exists()


def test_report_command_on_runs(tmp_path):
    root = _table_fixture(tmp_path)
    r = moco("report", root, root / "runs" / "vote-m1", "--out", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.html").exists() and (tmp_path / "r.md").exists()


@pytest.mark.parametrize("args, message", [
    (["compare", "nope.yaml"], "config file not found"),
    (["report", "no/such/dir"], "not found: no/such/dir"),
    (["report", "no/such/dir", "--correction", "bonferroni"], "--correction: 'bonferroni' is not holm, bh or none"),
    (["report", "no/such/dir", "--pair", "a versus b"], "--pair: 'a versus b' is not \"ROW_A vs ROW_B\""),
])
def test_bad_input_is_one_line(args, message, tmp_path):
    r = moco(*args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_sweep_key_names_the_key(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("methods: [text_majority_vote]\npools: {p: [scripted:a]}\ntasks: [moco_demo]\nanalyses: {scalng: {}}\n")
    r = moco("compare", p, "--plan", "--out", tmp_path / "o")
    assert r.returncode == 2 and "unknown key 'scalng' (did you mean 'scaling'?)" in r.stderr
