"""How much a sweep saves by sharing model outputs between cells through the response cache.

From each finished cell's calls.jsonl: what the cell would generate alone with an empty cache (its distinct
calls), and what the whole sweep generates with an empty cache (distinct calls over all cells). Their ratio
does not depend on what the cache held before; `generated_tokens` from the cells' metrics is what was
actually decoded (equal to the cold-sweep figure when the sweep started from an empty cache in one go).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_calls(run_dir: Path) -> list[dict[str, Any]]:
    f = run_dir / "calls.jsonl"
    if not f.exists():
        return []
    rows = []
    for line in f.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
    return rows


def distinct(calls: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """key -> (tokens_in, tokens_out) of each distinct successful call."""
    out: dict[str, tuple[int, int]] = {}
    for c in calls:
        if c.get("error") is None and c.get("key"):
            out.setdefault(c["key"], (int(c.get("tokens_in", 0)), int(c.get("tokens_out", 0))))
    return out


def sharing_stats(root: Path, states) -> dict[str, Any]:
    """Token and call counts of the cells alone vs the sweep as a whole (see module doc)."""
    alone_out = alone_in = alone_calls = generated = 0
    union: dict[str, tuple[int, int]] = {}
    for st in states:
        run_dir = root / "cells" / st.cell.dir_name
        d = distinct(read_calls(run_dir))
        alone_calls += len(d)
        alone_in += sum(v[0] for v in d.values())
        alone_out += sum(v[1] for v in d.values())
        union.update(d)
        try:
            generated += json.loads((run_dir / "metrics.json").read_text())["total"]["generated_tokens"]
        except (OSError, KeyError, ValueError):
            pass
    sweep_out = sum(v[1] for v in union.values())
    return {
        "cells": len(states),
        "alone_tokens_out": alone_out, "alone_tokens_in": alone_in, "alone_calls": alone_calls,
        "sweep_tokens_out": sweep_out, "sweep_tokens_in": sum(v[0] for v in union.values()),
        "sweep_calls": len(union),
        "generated_tokens_measured": generated,
        "ratio_tokens_out": round(sweep_out / alone_out, 4) if alone_out else None,
        "ratio_calls": round(len(union) / alone_calls, 4) if alone_calls else None,
    }


def sharing_line(s: dict[str, Any]) -> str:
    if not s or not s.get("alone_tokens_out"):
        return "token sharing: no finished cell with model calls"
    return (f"generated tokens: {s['sweep_tokens_out']} for the whole sweep vs {s['alone_tokens_out']} if every "
            f"cell ran alone (ratio {s['ratio_tokens_out']:.3f}; calls {s['sweep_calls']} vs {s['alone_calls']}, "
            f"ratio {s['ratio_calls']:.3f}); decoded by the finished cells: {s['generated_tokens_measured']}")
