"""The Python API: the notebook example of docs/python-api.md runs as written, results are typed, two runs in
one process share no resident model unless asked, and `moco.__all__` is pinned."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import moco

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def test_all_is_pinned():
    assert moco.__all__ == ["Comparison", "ConfigError", "Cost", "ExperimentConfig", "MocoError", "RunResult",
                            "ScoreResult", "compare", "load_config", "method", "parse_config", "plan",
                            "release_models", "run", "run_experiment", "score", "__version__"]
    for name in moco.__all__:
        assert getattr(moco, name) is not None
    assert set(moco.__all__) <= set(dir(moco))


def test_the_documented_notebook_runs(tmp_path, monkeypatch, capsys):
    """Every ```python block of docs/python-api.md, in order, in one namespace (as a notebook would)."""
    monkeypatch.setenv("MOCO_RESPONSE_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    ns: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), ns)
    out = capsys.readouterr().out
    assert "text_majority_vote accuracy" in out
    assert "config: decoding: unknown key 'temperatur' (did you mean 'temperature'?)" in out
    assert not (tmp_path / "runs").exists()  # in-memory runs wrote no run directory
    r = ns["result"]
    assert isinstance(r, moco.RunResult) and isinstance(r.cost, moco.Cost) and r.cost.calls > 0
    lo, hi = r.interval
    assert lo <= r.score <= hi and 0 <= r.score <= 1
    # two geometers outvote the B-sayer on questions about sides (A), nobody else votes against B
    voted = ["A" if "sides" in p["prompt"] else "B" for p in r.predictions]
    assert [p["extracted"] for p in r.predictions] == voted
    assert [p["score"] for p in r.predictions] == [float(v == p["gold"]) for v, p in zip(voted, r.predictions)]
    assert "A" in voted and "B" in voted


SCRIPTED = {"task": {"name": "moco_demo"}, "decoding": {"temperature": 0.0}}


def _cfg(method: str, *names: str) -> dict:
    return {**SCRIPTED, "method": method, "models": [{"model": f"scripted:{n}", "script": {
        "default": f"The answer is ({n[-1].upper()})"}} for n in names]}


def _resident() -> set[str]:
    from moco.models.pool import RESIDENT

    return {k.split("|")[1] for k in RESIDENT.backends}  # "scripted|scripted:NAME|script|device|batch"


def test_two_runs_in_one_process_share_nothing_unless_asked(tmp_path):
    moco.release_models()
    first = moco.run(_cfg("text_majority_vote", "first_a", "first_b"), limit=3, out=tmp_path / "one", cache=False)
    assert first.run_dir == tmp_path / "one" and (first.run_dir / "metrics.json").exists()
    assert not any("first" in k for k in _resident())
    second = moco.run(_cfg("single_model", "second_c"), limit=4, in_memory=True, cache=False)
    assert (second.method, second.n, first.n) == ("single_model", 4, 3)
    assert all(p["output"] == "The answer is (C)" for p in second.predictions)
    assert _resident() == set()
    kept = moco.run(_cfg("text_majority_vote", "kept_a", "kept_b"), limit=2, in_memory=True, cache=False,
                    keep_models=True)
    assert kept.n == 2 and sum("kept" in k for k in _resident()) == 2  # asked: still loaded
    moco.run(_cfg("single_model", "other_d"), limit=2, in_memory=True, cache=False)
    assert sum("kept" in k for k in _resident()) == 2 and not any("other" in k for k in _resident())
    moco.release_models()
    assert _resident() == set()


def test_overrides_are_validated_and_in_memory_excludes_out(tmp_path):
    with pytest.raises(moco.ConfigError, match="params \\(text_majority_vote\\): tie"):
        moco.run(_cfg("text_majority_vote", "a", "b"), set={"params.tie": "coin"}, in_memory=True)
    with pytest.raises(moco.ConfigError, match="either out= .* or in_memory=True"):
        moco.run(_cfg("single_model", "a"), out=tmp_path / "x", in_memory=True)
    cfg = moco.parse_config(_cfg("single_model", "a"))
    r = moco.run(cfg, limit=2, seed=5, in_memory=True, cache=False)
    assert r.metrics["n"] == 2 and r.n == 2
