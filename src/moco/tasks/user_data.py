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
import io
import json
from pathlib import Path
from typing import Any

from moco.errors import DataError, did_you_mean
from moco.tasks.base import DataProblem, Task
from moco.tasks.checks import check_task
from moco.tasks.moco_json import LETTERS, parse_json, to_example
from moco.tasks.text_files import read_text

SUFFIXES = (".jsonl", ".csv", ".json", ".tsv")
ALIASES = {"question": ("question", "input", "prompt"), "answer": ("answer", "output", "target", "label"),
           "tests": ("tests", "test"), "choices": ("choices", "options")}
GOLD_FIELDS = ("answer", "tests", "reference", "category")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL, CSV/TSV or JSON (list of rows) file, with one-line errors naming the line.
    Text is UTF-8 (a BOM is dropped); anything else is refused, naming the encoding problem."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported data file type '{suffix}' (use {', '.join(SUFFIXES)})")
    text = read_text(path)
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{path}: line {n}")
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        return rows
    if suffix in (".csv", ".tsv"):
        return _csv_rows(text, path, "\t" if suffix == ".tsv" else ",")
    data = parse_json(text, path)
    if isinstance(data, dict) and "test" in data:
        data = data["test"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of rows or an object with a 'test' list")
    return data


def _csv_rows(text: str, path: Path, delimiter: str) -> list[dict[str, Any]]:
    """Rows keyed by the header. A row with more or fewer fields than the header, or a header naming a
    column twice, is an error: its values would land under the wrong column (or none) unnoticed."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return []
        dup = [c for c in dict.fromkeys(header) if header.count(c) > 1]
        if dup:
            raise DataError(f"{path}: line 1: column {dup[0]!r} appears twice in the header")
        rows = []
        for fields in reader:
            if not fields:
                continue  # a blank line
            if len(fields) != len(header):
                raise DataError(f"{path}: line {reader.line_num}: {len(fields)} fields, but the header has "
                                f"{len(header)} (a ragged row: quote values that contain '{delimiter}')")
            rows.append(dict(zip(header, fields)))
        return rows
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: not valid CSV: {e}") from None


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


def _infer_type(first: dict[str, Any], fields: dict[str, Any]) -> str:
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
    for p, rows in splits.values():
        if not rows:
            raise DataError(f"{p}: no rows")
        for n, raw in enumerate(rows):
            if not isinstance(raw, dict):
                raise DataError(f"{p}: row {n + 1}: expected an object with fields, got {type(raw).__name__}")
        _check_mapped_columns(fields, rows, p)
    ttype = task_type or _infer_type(_all_columns(splits["test"][1]), fields)
    generation_only = False
    examples: dict[str, list] = {"dev": [], "test": []}
    for split, (p, rows) in splits.items():
        columns = _all_columns(rows)
        golds = ("answer",) if ttype == "multiple_choice" else GOLD_FIELDS
        has_gold = any(_column(fields, f, columns) is not None for f in golds)
        generation_only = generation_only or not has_gold
        problems: list[DataProblem] = []
        for n, raw in enumerate(rows):
            row = to_moco_row(raw, n + 1, fields, ttype)
            if not has_gold and ttype == "multiple_choice":
                row["answer"] = None
            ex = to_example(row, n, split, ttype if has_gold else _gen_type(ttype), problems, need_gold=has_gold)
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


def _all_columns(rows: list[dict[str, Any]]) -> dict[str, None]:
    """Every column some row has, in first-seen order (a stand-in row for the lookups by name)."""
    return {k: None for r in rows for k in r}


def _check_mapped_columns(fields: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    """A field mapped to a column no row has is a typo: it would silently read as empty (no gold, no question)."""
    columns = _all_columns(rows)
    for ours, col in fields.items():
        for c in col if isinstance(col, list) else [col]:
            if c not in columns:
                shown = ", ".join(repr(k) for k in list(columns)[:12]) + (", ..." if len(columns) > 12 else "")
                raise DataError(f"task.fields: '{ours}' is mapped to column {c!r}, which {path} does not have "
                                f"(columns: {shown}){did_you_mean(str(c), [str(k) for k in columns])}")


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
