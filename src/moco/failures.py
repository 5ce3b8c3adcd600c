"""Failed model calls, traced to the items they belonged to, and the rule that decides whether a run has a score.

A failed call is never a wrong answer. `CallRecorder` keeps every call that failed after its retries (with its
prompt); `account()` maps each one to the dev or test items whose question it carried, so a collaboration that
lost a member on an item (a dropped vote, an empty debate turn fed onward, a judge that never answered) is
visible without each method reporting it. Such items, and items whose output failed, are left out of the score.
By default any failure fails the run; `max_failed` (a count, or a fraction of each split) tolerates some, and
then the score says over how many items it was taken.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moco.tasks.base import Example, Task


@dataclass
class FailedCall:
    """One model call that failed after its retries (recorded as it happens)."""

    phase: str
    tag: str
    model: str
    error: str
    prompt: str | None = None  # the call's messages joined, to find the items it belonged to

    @property
    def stage(self) -> str:
        return f"{self.phase} {self.tag}".strip()


@dataclass
class Failures:
    """What failed in a run, per split, and whether the run may still report a score."""

    calls: list[FailedCall]
    test_items: dict[int, list[str]]  # test index -> why (output failed / lost members)
    dev_items: dict[int, list[str]]
    unattributed: dict[str, int]  # split -> failed calls that matched no item of it (each counts as one item)
    n_test: int
    n_dev: int
    max_failed: float = 0
    untraced_calls: int = 0  # failed calls the recorder counted without keeping them (trace.KEEP_FAILED)

    def failed(self, split: str) -> int:
        items, n = (self.test_items, self.n_test) if split == "test" else (self.dev_items, self.n_dev)
        return min(n, len(items) + self.unattributed.get(split, 0)) if n else self.unattributed.get(split, 0)

    @property
    def any(self) -> bool:
        return bool(self.calls or self.test_items or self.dev_items)

    @property
    def accepted(self) -> bool:
        """Within the tolerance on both splits (a fraction is of each split's size, a count of each split), and
        at least one test item left to score (no tolerance turns "every item failed" into a result)."""
        if self.n_test and self.failed("test") >= self.n_test:
            return False
        return all(self.failed(s) <= allowed(self.max_failed, n) for s, n in (("test", self.n_test), ("dev", self.n_dev)))

    def headline(self) -> str:
        """One line: which model failed how often, and the first error."""
        if not self.calls:
            return (f"{self.failed('test')} of {self.n_test} test outputs failed (the method reported them "
                    "failed without a failed model call)")
        per_model: dict[str, int] = {}
        for c in self.calls:
            per_model[c.model] = per_model.get(c.model, 0) + 1
        first = self.calls[0]
        who = ", ".join(f"model '{m}' {n} failed call{'s' * (n != 1)}" for m, n in per_model.items())
        return (f"{who} ({self.failed('test')} of {self.n_test} test items"
                + (f", {self.failed('dev')} of {self.n_dev} dev items" if self.failed("dev") else "")
                + f" affected); first error ({first.model}, {first.stage}): {first.error[:200]}")

    def to_dict(self) -> dict[str, Any]:
        by_stage: dict[str, dict[str, int]] = {}
        for c in self.calls:
            row = by_stage.setdefault(c.stage, {})
            row[c.model] = row.get(c.model, 0) + 1
        return {
            "failed_calls": len(self.calls) + self.untraced_calls,
            "by_stage": by_stage,  # stage (phase and tag) -> model -> failed calls
            "test_items_failed": self.failed("test"),
            "dev_items_failed": self.failed("dev"),
            "degraded_test_items": sum(1 for w in self.test_items.values() if "output failed" not in w),
            "unattributed_calls": dict(self.unattributed),
            "max_failed": self.max_failed,
            "accepted": self.accepted,
            "first_error": self.calls[0].error if self.calls else None,
        }


def allowed(max_failed: float, n: int) -> float:
    """How many failed items a split of n items may have: a count (>= 1) or a fraction (< 1) of n."""
    return max_failed if max_failed >= 1 or max_failed == 0 else max_failed * n


def parse_max_failed(text: str) -> float:
    """'3' -> 3 items, '0.1' or '10%' -> a tenth of the items; a clear error for anything else."""
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"--max-failed must be a count like 3 or a fraction like 0.1 or 10%, not '{text}'") from None
    if v < 0 or (v >= 1 and v != int(v)):
        raise ValueError(f"--max-failed must be a count (0, 1, 2, ...) or a fraction in [0, 1), not '{text}'")
    return int(v) if v >= 1 else v


def _owners(text: str, examples: Sequence[Example]) -> list[int]:
    """Indices of the examples a call's text carries: by full prompt, else by question (the longest ones)."""
    hits = [ex.index for ex in examples if ex.prompt and ex.prompt in text]
    if hits:
        return hits
    found = [ex for ex in examples if ex.input and ex.input in text]
    return [ex.index for ex in found if not any(o is not ex and ex.input in o.input and len(o.input) > len(ex.input)
                                                 for o in found)]


def account(calls: Sequence[FailedCall], task: Task, output_failed: Sequence[bool], max_failed: float = 0) -> Failures:
    """Trace each failed call to its items (test calls to test items, dev calls to dev items, the other split
    when nothing matches), add the outputs the method itself marked failed, and judge the tolerance."""
    test: dict[int, list[str]] = {i: ["output failed"] for i, f in enumerate(output_failed) if f}
    dev: dict[int, list[str]] = {}
    unattributed: dict[str, int] = {}
    for c in calls:
        own = "test" if c.phase in ("test", "score") else "dev"
        other = "dev" if own == "test" else "test"
        where = {"test": (task.test, test), "dev": (task.dev, dev)}
        for split in (own, other):
            idx = _owners(c.prompt or "", where[split][0]) if c.prompt else []
            if idx:
                for i in idx:
                    where[split][1].setdefault(i, []).append(f"lost {c.model} ({c.stage})")
                break
        else:
            unattributed[own] = unattributed.get(own, 0) + 1
    return Failures(list(calls), test, dev, unattributed, len(task.test), len(task.dev), max_failed)
