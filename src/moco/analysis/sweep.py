"""`moco compare`: run every cell of a sweep into one sweep directory, resumably.

All cells run in one process with one response cache, so model outputs that cells share (each model's dev
answers, first-round answers...) are generated once. Cells on the same models run together (moco.scheduler):
while one waits for its model calls the next one runs, and the calls all of them wait for are decoded in
shared batches, so each method's own calls (refinements, feedback, aggregations) fill batches too. A cell
whose run directory holds a finished manifest and the same resolved config is not run again, so a killed
sweep re-run with the same command continues where it stopped (and an unfinished cell resumes from the
cache). Cells that cannot run are found by `runner.plan()` before any model loads and recorded with the
reason.

sweep_dir/
  sweep.yaml      the sweep as resolved (method defaults written out)
  index.json      every cell: status (finished / incompatible / failed / pending), reason, run dir, uses
  cells/<name>/   one run directory per cell (config.yaml, manifest.json, calls.jsonl, predictions, metrics)
  selection/      model-selection records (prompt, reply, embeddings distances, chosen subsets)
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moco import aio, scheduler
from moco.analysis.sweep_cells import LIAR_MODEL, Cell, expand, resolve_methods, selection_cells
from moco.analysis.sweep_config import SweepConfig
from moco.cache import ResponseCache
from moco.config import dump_config
from moco.errors import ConfigError
from moco.progress import Progress
from moco.records_schema import IndexRecord, write_record
from moco.rundir import write_json

INDEX = "index.json"


@dataclass
class CellState:
    cell: Cell
    status: str = "pending"  # pending | incompatible | finished | failed
    reason: str | None = None
    resumed: bool = False
    seconds: float | None = None

    def to_json(self, root: Path) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.cell.key[:16], "status": self.status, "uses": self.cell.uses}
        if self.cell.config is not None:
            d["dir"] = f"cells/{self.cell.dir_name}"
        if self.reason:
            d["reason"] = self.reason
        if self.resumed:
            d["resumed"] = True
        if self.seconds is not None:
            d["seconds"] = round(self.seconds, 2)
        return d


@dataclass
class SweepResult:
    root: Path
    states: list[CellState]
    sharing: dict[str, Any] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.states)


def expected_config(cell: Cell) -> dict[str, Any]:
    """What run_experiment writes to config.yaml for this cell."""
    return yaml.safe_load(dump_config(cell.config))


def is_finished(run_dir: Path, cell: Cell) -> bool:
    """A finished manifest, metrics, and the very same resolved config."""
    try:
        man = json.loads((run_dir / "manifest.json").read_text())
        same = yaml.safe_load((run_dir / "config.yaml").read_text()) == expected_config(cell)
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return man.get("status") == "finished" and same and (run_dir / "metrics.json").exists()


def sweep_dump(sweep: SweepConfig) -> str:
    data = sweep.model_dump(mode="json", exclude_none=True)
    data["methods"] = [{"label": m.label, "method": m.name, "params": m.params} for m in resolve_methods(sweep)]
    return yaml.safe_dump(data, sort_keys=False)


def plan_cells(sweep: SweepConfig, data_dir: str | None, choices: dict | None) -> list[CellState]:
    """Expand the sweep and check every cell with runner.plan() (no model is loaded)."""
    from moco.runner import plan

    cells = expand(sweep, data_dir)
    if choices:
        known = {c.key: c for c in cells}
        for c in selection_cells(sweep, choices, data_dir):
            if c.key in known:
                known[c.key].uses.extend(c.uses)
            else:
                known[c.key] = c
                cells.append(c)
    states = []
    for c in cells:
        st = CellState(c)
        if c.skip_reason:
            st.status, st.reason = "incompatible", c.skip_reason
        else:
            try:
                plan(c.config, data_dir)
            except ConfigError as e:  # too few models, objective-only method, missing capability, role...
                st.status, st.reason = "incompatible", str(e)
        states.append(st)
    return states


def cell_backends(cell: Cell, data_dir: str | None = None) -> dict | None:
    """In-memory backends a cell needs besides its config (the scripted liar, built from the task's golds)."""
    if cell.adversary != "liar":
        return None
    from moco.analysis.adversary import LiarBackend
    from moco.runner import plan

    p = plan(cell.config, data_dir)
    return {LIAR_MODEL: LiarBackend(p.task, p.scorer)}


MERGED_LEVELS = ("baseline", "api", "text", "client_server")  # methods whose model calls all go through ctx.generate


def together(todo: list[tuple[str, CellState]], width: int | None) -> list[tuple[list[tuple[str, CellState]], int]]:
    """Groups of cells that run at once (lockstep) and how many at a time: cells on the same models, so the
    merged batches never need two sets of weights in memory. By default every API-, text- and client-server
    cell of a group runs together and logit/weight cells (which drive or rewrite weights directly) run alone."""
    from moco.methods.registry import get_method

    groups: dict[str, list[tuple[str, CellState]]] = {}
    alone: list[tuple[list[tuple[str, CellState]], int]] = []
    for item in todo:
        cfg = item[1].cell.config
        if width is None and get_method(cfg.method).level not in MERGED_LEVELS:
            alone.append(([item], 1))
            continue
        models = sorted({json.dumps([m.model, m.adapter, m.dtype, m.endpoint and m.endpoint.base_url]) for m in cfg.models})
        groups.setdefault(json.dumps([models, cfg.hardware.batch_size]), []).append(item)
    merged = [(g, min(len(g), width or len(g))) for g in groups.values()]
    return merged + alone


async def _together(run_cell: Callable[[Any], Awaitable[None]], group: list[Any], width: int) -> None:
    """Run the cells as participants of one scheduler, `width` at a time (their model calls merge); re-raise
    the first exception that escaped a cell (cells record their own errors)."""
    got = await scheduler.current().gather([run_cell(item) for item in group], width)
    for r in got:
        if isinstance(r, BaseException):
            raise r


def write_index(root: Path, sweep: SweepConfig, states: list[CellState], sharing: dict | None = None) -> None:
    write_json(root / INDEX, write_record(IndexRecord, {
        "name": sweep.name or root.name, "seed": sweep.seed, "seeds": sweep.seed_list,
        "cells": [s.to_json(root) for s in states], "sharing": sharing or {}}))


def run_sweep(sweep: SweepConfig, out: str | Path, *, data_dir: str | None = None,
              cache: ResponseCache | None = None, progress: Progress | None = None,
              log: Callable[[str], None] | None = None, plan_only: bool = False) -> SweepResult:
    """Run (or, with plan_only, only check) every cell of the sweep into `out`."""
    from moco.runner import run_experiment_async

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: None)
    own_cache = cache is None
    cache = ResponseCache() if cache is None else cache
    try:
        choices = None
        if sweep.analyses.selection is not None and not plan_only:
            from moco.analysis.selection import choose_all

            choices = aio.run(choose_all(sweep, data_dir, cache, root / "selection", log=say))
        states = plan_cells(sweep, data_dir, choices)
        (root / "sweep.yaml").write_text(sweep_dump(sweep))
        runnable = [s for s in states if s.status == "pending"]
        say(f"{len(states)} cells: {len(runnable)} to run, {len(states) - len(runnable)} incompatible"
            + (" (model-selection cells are chosen when the sweep runs)" if plan_only and sweep.analyses.selection else ""))
        todo = []
        for i, st in enumerate(runnable, 1):
            u = st.cell.uses[0]
            what = f"[{i}/{len(runnable)}] {u['label']} on {u['task']} ({u['pool']})" + \
                (f" seed {u['seed']}" if u.get("multi_seed") else "")
            if is_finished(root / "cells" / st.cell.dir_name, st.cell):
                st.status, st.resumed = "finished", True
                if not plan_only:
                    say(f"{what}: already finished, not recomputed")
            else:
                todo.append((what, st))
        write_index(root, sweep, states)  # --plan too: finished cells stay finished in the index
        if plan_only:
            return SweepResult(root, states)
        async def run_cell(item: tuple[str, CellState]) -> None:
            what, st = item
            c = st.cell
            run_dir = root / "cells" / c.dir_name
            t0 = time.time()
            try:
                res = await run_experiment_async(c.config, run_dir, data_dir=data_dir, cache=cache,
                                                 progress=progress, backends=cell_backends(c, data_dir))
            except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):  # stopped: the cell runs again next time
                st.status = "pending"
                write_index(root, sweep, states)
                raise
            except Exception as e:  # a method that crashes on one cell must not lose the others
                st.status, st.reason, st.seconds = "failed", f"{type(e).__name__}: {e}", time.time() - t0
                say(f"{what}: FAILED {st.reason}")
            else:
                st.status, st.seconds = "finished", time.time() - t0
                m = res.metrics
                score = "no score" if m["score"] is None else f"{m['score']:.3f}" + (
                    f" (95% CI {m['ci95'][0]:.3f}–{m['ci95'][1]:.3f})" if m.get("ci95")
                    else f" (no interval: {m.get('ci_note') or 'not computed'})")
                score += f", {m['score_note']}" if m.get("score_note") else ""
                say(f"{what}: {m['metric']} {score} ({st.seconds:.1f} s, "
                    f"{m['total']['generated_tokens']} tokens generated, {m['total']['tokens_out']} used)")
            write_index(root, sweep, states)

        groups = together(todo, sweep.parallel_cells)
        if any(width > 1 for _g, width in groups):
            say("cells on the same models run together, their model calls merged into shared batches "
                "(--parallel-cells 1 runs them one by one); a cell's seconds include the time the others ran")
        for group, width in groups:
            if width == 1:
                for item in group:
                    aio.run(run_cell(item))
            else:
                try:
                    aio.run(_together(run_cell, group, width))
                except (KeyboardInterrupt, SystemExit):
                    for _what, st in group:  # cells still running when the sweep was stopped
                        if st.status not in ("finished", "failed"):
                            st.status = "pending"
                    write_index(root, sweep, states)
                    raise
        from moco.analysis.sharing import sharing_stats

        sharing = sharing_stats(root, [s for s in states if s.status == "finished"])
        write_index(root, sweep, states, sharing)
        return SweepResult(root, states, sharing)
    finally:
        if own_cache:
            cache.close()
