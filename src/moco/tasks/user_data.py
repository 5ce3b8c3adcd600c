"""Bring your own data: a JSONL, CSV or JSON file with a field mapping, validated row by row.

Our fields (map each to your column with `fields: {question: q, answer: correct, ...}`; unmapped fields are
looked up under their own name):

| field | meaning |
|---|---|
| `id` | item id (default: the row number) |
| `question` / `input` | the question or prompt (also read from `prompt`) |
| `choices` | multiple choice: one column holding a list/dict (or its JSON text), or a list of columns |
| `answer` / `output` | the gold: the option letter or the option's text (multiple choice), a string otherwise |
| `tests`, `entry_point` | coding: a `check(candidate)` test function, and the function to test |
| `category` | coding-refusal (noncompliance) category |
| `reference` | diversity: reference responses (a list, or its JSON text) |

Other columns are kept in `Example.meta`. A file without any answer column gives a generation-only task:
`moco run` writes the responses and metrics.json says `generation_only` instead of a score.
A JSON file may be a list of rows or `{"dev": [...], "test": [...]}`; `dev_path` adds a dev split.
Every row is checked; the first bad one stops loading with an error naming the file, row, field and column.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from moco.errors import DataError
from moco.tasks.base import DataProblem, Task
from moco.tasks.checks import check_task
from moco.tasks.moco_json import LETTERS, to_example

SUFFIXES = (".jsonl", ".csv", ".json", ".tsv")
ALIASES = {"question": ("question", "input", "prompt"), "answer": ("answer", "output", "target", "label"),
           "tests": ("tests", "test"), "choices": ("choices", "options")}
GOLD_FIELDS = ("answer", "tests", "reference", "category")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL, CSV/TSV or JSON (list of rows) file, with one-line errors naming the line."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {n}: invalid JSON: {e.msg}") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}: line {n}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
        return rows
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            return [dict(r) for r in csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")]
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        if isinstance(data, dict) and "test" in data:
            return data["test"]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of rows or an object with a 'test' list")
        return data
    raise DataError(f"{path}: unsupported data file type '{suffix}' (use {', '.join(SUFFIXES)})")


def _column(fields: dict[str, Any], ours: str, row: dict[str, Any]) -> Any:
    """Our field's column name in this file: mapped, else the first alias the row has."""
    if ours in fields:
        return fields[ours]
    for alias in ALIASES.get(ours, (ours,)):
        if alias in row:
            return alias
    return None


def _value(row: dict[str, Any], col: Any) -> Any:
    if isinstance(col, list):
        return [row.get(c) for c in col]
    return row.get(col) if col is not None else None


def _parse_listish(v: Any) -> Any:
    if isinstance(v, str) and v.strip()[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _mc_answer(answer: Any, choices: dict[str, str]) -> Any:
    """A letter as is; the text of exactly one option becomes its letter."""
    if answer is None:
        return None
    a = str(answer).strip()
    if a.upper() in choices and len(a) == 1:
        return a.upper()
    matches = [k for k, v in choices.items() if v.strip().lower() == a.lower()]
    return matches[0] if len(matches) == 1 else a


def to_moco_row(row: dict[str, Any], n: int, fields: dict[str, Any], task_type: str) -> dict[str, Any]:
    """One of your rows as a MoCo JSON row (validation happens after, in `to_example`)."""
    out: dict[str, Any] = {}
    used = set()
    for ours in ("id", "question", "choices", "answer", "tests", "entry_point", "category", "reference"):
        col = _column(fields, ours, row)
        if col is None:
            continue
        used |= set(col) if isinstance(col, list) else {col}
        val = _value(row, col)
        if ours == "choices":
            val = _parse_listish(val)
            if isinstance(val, list):
                val = {LETTERS[i]: str(v) for i, v in enumerate(val) if v is not None and str(v).strip()}
        if ours == "reference":
            val = _parse_listish(val)
            val = val if isinstance(val, list) else ([val] if val else None)
        out[ours] = val
    for k, v in row.items():
        if k not in used and k not in out:
            out.setdefault(k, v)
    out["id"] = str(out.get("id") or n)
    if task_type == "multiple_choice":
        if isinstance(out.get("choices"), dict):
            out["answer"] = _mc_answer(out.get("answer"), {str(k): str(v) for k, v in out["choices"].items()})
    else:
        out["input"] = out.pop("question", None)
        if "answer" in out:
            out["output"] = out.pop("answer")
    if "tests" in out:
        out["test"] = out.pop("tests")
    return out


def _infer_type(rows: list[dict[str, Any]], fields: dict[str, Any]) -> str:
    first = rows[0] if rows else {}
    if _column(fields, "choices", first) is not None:
        return "multiple_choice"
    if _column(fields, "tests", first) is not None:
        return "coding"
    if _column(fields, "answer", first) is not None:
        return "exact_match"
    return "generation"


def load_user_data(path: str | Path, *, name: str, task_type: str | None = None, fields: dict[str, Any] | None = None,
                   dev_path: str | Path | None = None) -> Task:
    """Your file as a Task; raises DataError naming the first bad row, field and column."""
    fields = dict(fields or {})
    unknown = set(fields) - {"id", "question", "input", "choices", "answer", "output", "tests", "test",
                             "entry_point", "category", "reference"}
    if unknown:
        raise DataError(f"task.fields: unknown field '{sorted(unknown)[0]}' (fields: id, question, choices, answer, "
                        "tests, entry_point, category, reference)")
    for ours, alias in (("input", "question"), ("output", "answer"), ("test", "tests")):
        if ours in fields:
            fields[alias] = fields.pop(ours)
    splits = {"test": (Path(path), read_rows(Path(path)))}
    if dev_path:
        splits["dev"] = (Path(dev_path), read_rows(Path(dev_path)))
    ttype = task_type or _infer_type(splits["test"][1], fields)
    generation_only = False
    examples: dict[str, list] = {"dev": [], "test": []}
    for split, (p, rows) in splits.items():
        if not rows:
            raise DataError(f"{p}: no rows")
        has_gold = any(_column(fields, f, rows[0]) is not None for f in GOLD_FIELDS)
        generation_only = generation_only or not has_gold
        problems: list[DataProblem] = []
        for n, raw in enumerate(rows):
            if not isinstance(raw, dict):
                raise DataError(f"{p}: row {n + 1}: expected an object with fields, got {type(raw).__name__}")
            row = to_moco_row(raw, n + 1, fields, ttype)
            if not has_gold and ttype == "multiple_choice":
                row["answer"] = None
            ex = to_example(row, n, split, ttype if has_gold else _gen_type(ttype), problems)
            if ex is None:
                pr = problems[-1]
                raise DataError(f"{p}: row {n + 1}: field '{_ours(pr.field)}'{_col_note(fields, pr.field, raw)}: "
                                f"{pr.problem}")
            examples[split].append(ex)
    task = Task(name, ttype, examples["dev"], examples["test"], domain="user", description=f"your data: {path}",
                source=str(path))
    task.generation_only = generation_only
    check_task(task)
    return task


def _gen_type(ttype: str) -> str:
    """Without golds, rows are validated as plain prompts (multiple choice keeps its options)."""
    return ttype if ttype == "multiple_choice" else "generation"


def _ours(field: str) -> str:
    return {"output": "answer", "input": "question", "test": "tests"}.get(field, field)


def _col_note(fields: dict[str, Any], field: str, raw: dict[str, Any]) -> str:
    col = _column(fields, _ours(field), raw)
    return f" (column {col!r})" if col is not None and col != _ours(field) else ""


def is_user_file(name: str) -> bool:
    return Path(name).suffix.lower() in (".jsonl", ".csv", ".tsv")
