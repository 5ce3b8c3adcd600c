"""Counts behind the README's reliability section: faults injected, bad inputs tried, items lost.

Tests call `tally(name, n)`; the session prints the totals at the end and writes them to
`.pytest_reliability.json` in the repository root (ignored by git)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

COUNTS: Counter[str] = Counter()


def tally(name: str, n: int = 1) -> None:
    COUNTS[name] += n


def report(root: Path) -> str | None:
    if not COUNTS:
        return None
    (root / ".pytest_reliability.json").write_text(json.dumps(dict(sorted(COUNTS.items())), indent=2) + "\n")
    return "reliability: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
