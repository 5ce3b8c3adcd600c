"""Examples and tasks: what a method receives, independent of where the data came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OBJECTIVE_TYPES = frozenset({"multiple_choice", "exact_match", "f1_match"})
GENERATION_TYPES = frozenset({"generation", "text_generation"})


@dataclass
class Example:
    """One item. `prompt` is the full user message (question plus answer-format instruction)."""

    id: str
    index: int  # position in its split: unique even when the dataset's ids are not
    split: str
    prompt: str
    input: str  # the question as given, without our instruction
    answer: Any = None  # gold: letter for multiple choice, string otherwise; None for generation-only
    choices: dict[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    images: tuple[str, ...] = ()  # image references (path, URL, data URI) the question is about

    @property
    def uid(self) -> str:
        return f"{self.split}:{self.index}"


@dataclass
class DataProblem:
    """A defect found in a dataset row: repaired, or the row skipped."""

    split: str
    row: int
    field: str
    problem: str
    action: str  # repaired | skipped

    def line(self) -> str:
        return f"{self.split}[{self.row}].{self.field}: {self.problem} ({self.action})"


@dataclass
class Task:
    name: str
    task_type: str
    dev: list[Example]
    test: list[Example]
    domain: str = "general"
    description: str = ""
    source: str = ""
    problems: list[DataProblem] = field(default_factory=list)
    generation_only: bool = False  # no gold answers: responses are written, not scored

    @property
    def objective(self) -> bool:
        return self.task_type in OBJECTIVE_TYPES and not self.generation_only

    def split(self, name: str) -> list[Example]:
        if name not in ("dev", "test"):
            raise ValueError(f"unknown split {name}")
        return self.dev if name == "dev" else self.test
