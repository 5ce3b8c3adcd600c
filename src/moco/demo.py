"""`moco demo`: three pseudo-experts (the embedded SmolLM2, three role prompts, as in the CoLM paper) on the
built-in task, compared as single models, majority vote and multi-agent refine.

The three runs share one loaded model and the response cache, so the independent first answers are
generated once; the table still charges every method the full cost of the calls it used (cached calls
count at their original compute time), which is what a user would pay running it alone.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from moco.config import ExperimentConfig, parse_config
from moco.display import make_table, print_wide

EXPERTS = [
    ("geography-expert", "You are an expert in geography, history and world cultures. Answer carefully and briefly."),
    ("math-expert", "You are a careful mathematician. Check every number before you answer. Answer briefly."),
    ("science-expert", "You are a science teacher who knows physics, chemistry and biology well. Answer briefly."),
]
METHODS = [
    ("single_model", {}),
    ("text_majority_vote", {"tie": "dev-based"}),
    ("text_multiagent_refine", {"rounds": 1}),
]


def demo_config(method: str, params: dict, limit: int | None = None) -> ExperimentConfig:
    task: dict = {"name": "moco_demo"}
    if limit:
        task["test_limit"] = limit
    return parse_config({
        "method": method,
        "task": task,
        "models": [{"model": "smollm2-135m-instruct", "name": n, "role_prompt": p} for n, p in EXPERTS],
        "params": params,
        "decoding": {"max_new_tokens": 48, "temperature": 0.0}, "hardware": {"batch_size": 32},
        "seed": 0,
    })


def run_demo(console: Console, out: Path | None = None, limit: int | None = None, progress: bool | None = True) -> list[dict]:
    from moco.progress import make_progress
    from moco.runner import run_experiment

    root = out or Path.cwd() / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")
    console.print(f"MoCo demo: 3 pseudo-experts of smollm2-135m-instruct on moco_demo -> {root}")
    rows = []
    bar = make_progress(progress)
    try:
        for method, params in METHODS:
            bar.message(f"[bold]{method}[/]")
            res = run_experiment(demo_config(method, params, limit), root / method, progress=bar)
            rows.append(res.metrics)
    finally:
        bar.close()
    print_wide(console, comparison_table(rows))
    console.print("tokens and seconds are each method's full cost (dev selection included; calls shared through "
                  "the cache are charged at their original compute time). Run directories: " + str(root))
    return rows


def comparison_table(rows: list[dict]) -> Table:
    """The demo's table; system names and numbers are never cut or wrapped, whatever the terminal width."""
    t = make_table("moco_demo: single models vs collaboration (3 pseudo-experts of SmolLM2-135M-Instruct)")
    for c, j in (("system", "left"), ("accuracy", "right"), ("95% CI", "right"), ("tokens in", "right"),
                 ("tokens out", "right"), ("calls", "right"), ("seconds", "right")):
        t.add_column(c, justify=j, no_wrap=True, overflow="ignore")
    for m in rows:
        if m["method"] == "single_model":
            test = m["phases"]["test"]
            for name, score in m.get("per_model_test", {}).items():
                pm = test["per_model"][name]
                share = pm["tokens_out"] / max(1, test["tokens_out"])
                t.add_row(f"single: {name}", f"{score:.3f}", "", str(pm["tokens_in"]), str(pm["tokens_out"]),
                          str(pm["calls"]), f"{test['compute_s'] * share:.1f}")
            continue
        tot = m["total"]
        ci = m.get("ci95")
        shown = "(one item)" if m.get("n") == 1 else (f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else m.get("ci_note", ""))
        t.add_row(m["method"], f"{m['score']:.3f}", shown, str(tot["tokens_in"]), str(tot["tokens_out"]),
                  str(tot["calls"]), f"{tot['compute_s']:.1f}")
    return t
