"""The scorer protocol: extract a canonical answer (for votes), score it against the gold."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from moco.tasks.base import Example


@dataclass
class ScoreResult:
    """`extracted` is the canonical answer (None when nothing could be parsed: scored 0, counted unparsed)."""

    score: float
    extracted: str | None
    strict: float | None = None  # score under strict extraction only, where the scorer has one
    note: str = ""

    @property
    def parsed(self) -> bool:
        return self.extracted is not None


class Scorer(Protocol):
    name: str
    metric: str

    def extract(self, example: Example, response: str) -> str | None:
        """Canonical answer key: equal keys mean the same answer (majority vote relies on it)."""
        ...

    def score(self, example: Example, response: str) -> ScoreResult: ...

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        """Score an already-extracted canonical answer."""
        ...
