"""The typed, versioned records a run and a sweep write and the analyses read: metrics.json, each line of
predictions.jsonl, and a sweep's index.json; and what `moco score` reads (one response per line) and writes
(its metrics.json and scores.jsonl).

The runner and the sweep validate what they write through these models (a field renamed, removed or of the
wrong type fails at once, and in tests/test_records_schema.py); `moco.analysis.records` reads through them.
Extra fields are allowed (methods add their own metrics, e.g. per_model_test, training), so adding a field
needs no schema change; changing or removing a declared one does, with a new SCHEMA_VERSION.
Files written before the schema carry no version and are read as version 0 (same fields).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(0, description="0: written before the schema existed")

    @field_validator("schema_version")
    @classmethod
    def _known(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(f"schema version {v} is newer than this MoCo reads ({SCHEMA_VERSION}): upgrade MoCo")
        return v


class Usage(BaseModel):
    """Model usage of a run or one of its phases (moco.trace.PhaseStats.to_dict)."""

    model_config = ConfigDict(extra="allow")

    calls: int = Field(0, ge=0)
    cache_hits: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)
    tokens_in: int = Field(0, ge=0)
    tokens_out: int = Field(0, ge=0)  # every output token the method consumed, cached ones included
    generated_tokens: int = Field(0, ge=0)  # decoded by this run (cache misses)
    tokens_reused: int = Field(0, ge=0)
    compute_s: float = 0.0
    wall_s: float = 0.0
    per_model: dict[str, dict[str, float]] = Field(default_factory=dict)  # model -> calls, tokens_in, tokens_out


class ScoreBlock(_Record):
    """The score block (moco.scoring.evaluate.summarize_results) that a run's and `moco score`'s
    metrics.json share."""

    task: str
    task_type: str | None = None
    scorer: str | None = None
    metric: str | None = None
    score: float | None  # None: generation-only task, or a run whose model calls failed (score_note says)
    ci95: list[float] | None = Field(None, min_length=2, max_length=2)
    ci_note: str | None = None  # why there is no interval (one item, all scores equal)
    n: int = Field(0, ge=0)
    unparsed: int = Field(0, ge=0)
    failed: Any = 0  # items whose model call failed (a count; failure accounting may add detail)
    strict_score: float | None = None
    score_note: str | None = None  # "no score: ..." / "over k of n items, f failed"
    generation_only: bool = False
    n_responses: int | None = None  # generation-only: responses written


class MetricsRecord(ScoreBlock):
    """A run's metrics.json: the score block plus the method and the run's cost."""

    method: str
    n_test: int | None = None
    models: list[str] = Field(default_factory=list)
    wall_s: float | None = None
    total: Usage = Field(default_factory=Usage)
    phases: dict[str, Usage] = Field(default_factory=dict)
    per_model_test: dict[str, float] | None = None  # single_model: each model's test score
    best_single_test: float | None = None
    chosen_model: str | None = None
    engine_startup_s: dict[str, float] | None = None  # managed engines this run started: seconds to ready


class PredictionRecord(_Record):
    """One line of predictions.jsonl (moco.scoring.evaluate.prediction_row + the method's trace)."""

    id: str | int
    index: int
    prompt: Any = None
    gold: Any = None
    output: str | None = None
    failed: bool = False
    extracted: Any = None
    score: float | None = None
    strict_score: float | None = None
    trace: dict[str, Any] | None = None


class ScoredRecord(ScoreBlock):
    """`moco score`'s metrics.json: the score block over the responses of one file."""

    split: Literal["test", "dev"]
    predictions: str  # the file scored
    missing: int = Field(ge=0)  # items of the split without a response
    n_test: int | None = None
    n_dev: int | None = None


class ResponseRecord(BaseModel):
    """One line given to `moco score`: `{"id"/"index": ..., "response": ...}` (`output` or `text` are accepted
    for `response`, so a run's own predictions.jsonl works as is)."""

    model_config = ConfigDict(extra="allow")

    id: str | int | None = None
    index: int | None = None
    response: str | None = None
    output: str | None = None
    text: str | None = None

    @field_validator("index", mode="before")
    @classmethod
    def _whole(cls, v: Any) -> Any:
        # 1.9, true or "1" must not quietly become item 1
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"must be a whole number (the item's position in its split), got {type(v).__name__} "
                             f"{v!r:.40}")
        return v

    @model_validator(mode="after")
    def _has_item_and_text(self) -> "ResponseRecord":
        if self.id is None and self.index is None:
            raise ValueError("field 'id': missing (name the item by 'id' or 'index')")
        if self.answer is None:
            raise ValueError("field 'response': missing (a string; 'output' or 'text' are accepted too)")
        return self

    @property
    def answer(self) -> str | None:
        """The response text (`response`, else `output`, else `text`)."""
        return next((x for x in (self.response, self.output, self.text) if x is not None), None)


class CellRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    key: str | None = None
    status: Literal["pending", "incompatible", "finished", "failed"] | str
    uses: list[dict[str, Any]] = Field(default_factory=list)
    dir: str | None = None
    reason: str | None = None
    resumed: bool = False
    seconds: float | None = None


class IndexRecord(_Record):
    """A sweep's index.json: every cell with its status and the analyses it serves."""

    name: str | None = None
    seed: int = 0
    seeds: list[int] | None = None
    cells: list[CellRecord] = Field(default_factory=list)
    sharing: dict[str, Any] = Field(default_factory=dict)


def write_record(cls: type[_Record], data: dict[str, Any], stamp: bool = True) -> dict[str, Any]:
    """Validate what is about to be written and stamp the schema version (the dict keeps its key order).
    Prediction lines are not stamped: their run directory's metrics.json carries the version."""
    cls.model_validate({**data, "schema_version": SCHEMA_VERSION})
    return {"schema_version": SCHEMA_VERSION, **data} if stamp else data


def read_record(cls: type[BaseModel], data: Any, where: str, error: type[Exception] | None = None):
    """Parse a record read from disk; a mismatch is one line naming the file and the field (`error`: the
    exception class, ConfigError by default)."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        from moco.errors import ConfigError

        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and not msg.startswith("field '"):
            loc = "(top level)"
        raise (error or ConfigError)(f"{where}: " + (f"field '{loc}': " if loc else "") + msg) from None
