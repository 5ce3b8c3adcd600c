"""Load MoCo-format JSON datasets: `{name, task_type, dev: [...], test: [...]}`, one file per dataset.

Rows are validated one by one. Known defects of the shipped files are repaired and reported (choice keys
"1".."4", a 4th option keyed "id", non-string golds) and rows that cannot be scored are skipped and
reported; nothing is silently mis-scored.
"""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from moco.errors import DataError
from moco.tasks import formats
from moco.tasks.base import DataProblem, Example, Task
from moco.tasks.checks import check_task
from moco.tasks.image_fields import attach_images
from moco.tasks.text_files import decode_utf8

LETTERS = string.ascii_uppercase
# gold strings that stand for "no answer" in scraped datasets
PLACEHOLDERS = frozenset({"none", "null", "n/a", "nan", "tbd"})
# a prompt longer than this is skipped and reported: far above every shipped dataset (the longest row has
# ~24k characters) and above the context of the models MoCo runs, it would only exhaust memory or be cut
MAX_PROMPT_CHARS = 200_000


def read_json_dataset(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the dataset: {e.strerror}") from None
    data = parse_json(decode_utf8(raw, path), path)
    if not isinstance(data, dict) or not isinstance(data.get("test"), list):
        raise DataError(f"{path}: expected an object with a 'test' list (and optionally 'dev')")
    return data


def parse_json(text: str, path: Path) -> Any:
    """JSON text, or a one-line DataError (syntax, or nesting too deep for the parser)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    except RecursionError:
        raise DataError(f"{path}: invalid JSON: nested too deeply") from None


def load_moco_json(path: Path, task_type: str | None = None, name: str | None = None,
                   domain: str = "general", description: str = "", group_key: str | None = None) -> Task:
    data = read_json_dataset(path)
    ttype = task_type or data.get("task_type")
    if not ttype:
        raise DataError(f"{path}: no task_type in the file; set task.task_type in the config")
    problems: list[DataProblem] = []
    prompt_format = data.get("prompt_format", "options")
    if prompt_format not in ("options", "open"):
        raise DataError(f"{path}: prompt_format must be 'options' or 'open', got {prompt_format!r}")
    splits = {}
    for split in ("dev", "test"):
        rows = data.get(split) or []
        if not isinstance(rows, list):
            raise DataError(f"{path}: '{split}' must be a list of rows")
        splits[split] = [ex for i, row in enumerate(rows) if (ex := to_example(row, i, split, ttype, problems, prompt_format))]
        splits[split] = attach_images(splits[split], path.parent, problems)
    if not splits["test"]:
        raise DataError(f"{path}: no usable test rows" + (f"; first problem: {problems[0].line()}" if problems else ""))
    task = Task(name or data.get("name") or path.stem, ttype, splits["dev"], splits["test"], domain=domain,
                description=description or data.get("description", ""), source=str(path), problems=problems)
    check_task(task, group_key)
    return task


def to_example(row: Any, i: int, split: str, ttype: str, problems: list[DataProblem],
               prompt_format: str = "options", need_gold: bool = True) -> Example | None:
    """Validate one row; return None (and record why) when it cannot be used. A multiple-choice row
    without a gold answer is unusable unless the whole task is generation-only (`need_gold=False`)."""
    ex = _to_example(row, i, split, ttype, problems, prompt_format, need_gold)
    bad = _not_unicode(ex) if ex is not None else None
    if bad:  # "\ud800" is valid JSON but no text: it would crash the run later (cache key, tokenizer, files)
        problems.append(DataProblem(split, i, bad[0], f"holds a lone surrogate ({bad[1]!a}): not Unicode text",
                                    "skipped"))
        return None
    if ex is not None and len(ex.prompt) > MAX_PROMPT_CHARS:
        field = "question" if ttype == "multiple_choice" else "input"
        problems.append(DataProblem(split, i, field, f"prompt of {len(ex.prompt):,} characters is over the "
                                    f"{MAX_PROMPT_CHARS:,} limit", "skipped"))
        return None
    return ex


def _not_unicode(ex: Example) -> tuple[str, str] | None:
    """(field, the offending character) when a text field holds a lone surrogate, else None."""
    answers = ex.answer if isinstance(ex.answer, list) else [ex.answer]
    fields = [*(("choices", c) for c in (ex.choices or {}).values()), *(("answer", a) for a in answers),
              ("question" if ex.choices else "input", ex.prompt)]  # the prompt holds the options too: last
    for name, text in fields:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                return name, text[e.start:e.end]
    return None


def _to_example(row: Any, i: int, split: str, ttype: str, problems: list[DataProblem],
                prompt_format: str = "options", need_gold: bool = True) -> Example | None:
    def skip(fieldname: str, why: str) -> None:
        problems.append(DataProblem(split, i, fieldname, why, "skipped"))

    if not isinstance(row, dict):
        skip("*", f"row is a {type(row).__name__}, not an object")
        return None
    rid = str(row.get("id", f"{split}-{i}"))
    meta = {k: v for k, v in row.items() if k not in ("id", "question", "input", "choices", "answer", "output")}
    if ttype == "multiple_choice":
        question = row.get("question", row.get("input"))
        if not isinstance(question, str) or not question.strip():
            skip("question", "missing or empty")
            return None
        if need_gold and row.get("answer") is None:
            skip("answer", "missing gold answer" + (" (the row has 'output': multiple choice reads the gold from"
                                                    " 'answer')" if "output" in row else ""))
            return None
        choices, answer = _repair_choices(row.get("choices"), row.get("answer"), split, i, problems)
        if choices is None:
            return None
        prompt = formats.open_choice(question) if prompt_format == "open" else formats.multiple_choice(question, choices)
        return Example(rid, i, split, prompt, question, answer, choices, meta)
    text = row.get("input", row.get("question", row.get("prompt")))
    if not isinstance(text, str) or not text.strip():
        skip("input", "missing or empty")
        return None
    gold = row.get("output", row.get("answer"))
    if ttype in ("exact_match", "f1_match", "general_verifier"):
        if gold is None or (isinstance(gold, str) and not gold.strip()) or (
                isinstance(gold, list) and not any(str(g).strip() for g in gold)):
            skip("output", "gold answer is null (a placeholder)" if gold is None and "output" in row
                 else "missing gold answer")
            return None
        if isinstance(gold, str) and gold.strip().lower() in PLACEHOLDERS:
            skip("output", f"gold answer {gold!r} is a placeholder")
            return None
        if not isinstance(gold, (str, list)):
            problems.append(DataProblem(split, i, "output", f"gold is {type(gold).__name__} {gold!r}", "repaired"))
            gold = str(gold)
        prompt = formats.short_answer(text) if ttype == "f1_match" else formats.exact_match(text)
        return Example(rid, i, split, prompt, text, gold, None, meta)
    if ttype == "coding":
        tests = row.get("test")
        if not isinstance(tests, str) or "def check" not in tests:
            skip("test", "missing tests (a `def check(candidate)` function)")
            return None
        lang = str(row.get("language", "python")).lower()
        if lang not in ("python", "py", "python3"):
            skip("language", f"only Python runs in the sandbox, not {lang!r}")
            return None
        return Example(rid, i, split, formats.plain(text), text, None, None, meta)
    if ttype == "generation_diversity":
        refs = row.get("reference")
        if not isinstance(refs, list) or not any(str(r).strip() for r in refs):
            skip("reference", "missing reference responses")
            return None
        return Example(rid, i, split, formats.plain(text), text, None, None, meta)
    if isinstance(gold, str) and not gold.strip():
        gold = None
    return Example(rid, i, split, formats.plain(text), text, gold, None, meta)


def _repair_choices(choices: Any, answer: Any, split: str, i: int, problems: list[DataProblem]):
    def note(fieldname: str, why: str, action: str) -> None:
        problems.append(DataProblem(split, i, fieldname, why, action))

    if isinstance(choices, list):
        choices = dict(zip(LETTERS, choices))
    if not isinstance(choices, dict) or len(choices) < 2:
        note("choices", "missing or fewer than 2 options", "skipped")
        return None, None
    keys = [str(k) for k in choices]
    answer = None if answer is None else str(answer).strip()
    if all(k.isdigit() for k in keys):  # ARC: options keyed "1".."4" with a numeric gold
        mapping = {k: LETTERS[n] for n, k in enumerate(keys)}
        note("choices", f"numeric option keys {keys}", "repaired")
        choices = {mapping[k]: v for k, v in zip(keys, choices.values())}
        answer = mapping.get(answer or "", answer)
    elif any(k not in LETTERS for k in keys):  # TableMWP: a 4th option keyed "id"
        bad = [k for k in keys if k not in LETTERS]
        fixed: dict[str, Any] = {}
        remap: dict[str, str] = {}
        for n, (k, v) in enumerate(zip(keys, choices.values())):
            new = LETTERS[n]
            if k != new and k in bad:
                remap[k] = new
            fixed[new if k in bad else k] = v
        if len(fixed) != len(keys) or any(k not in LETTERS for k in fixed):
            note("choices", f"option keys {keys} are not letters", "skipped")
            return None, None
        note("choices", f"option keys {bad} re-keyed as {[remap[b] for b in bad]}", "repaired")
        choices = dict(sorted(fixed.items()))
        answer = remap.get(answer or "", answer)
    choices = {str(k): str(v) for k, v in choices.items()}
    if answer is not None and answer not in choices:
        note("answer", f"gold {answer!r} is not one of the options {list(choices)}", "skipped")
        return None, None
    return choices, answer
