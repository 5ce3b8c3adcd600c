"""Dataset-level checks run after loading: problems that no single row shows.

- duplicated ids within a split (items are matched by position, never by id);
- the same item in dev and test (a leak that inflates dev-selected methods);
- multiple-choice rows whose options repeat the same text (two letters are then equally right);
- items of an objective task without a gold answer (an error: they would be scored 0 and counted);
- all-or-nothing groups (CultureBench `question_id`) that are split between dev and test; each row gets
  `meta["group_size"]` so a scorer can tell an incomplete group.
Each finding is a DataProblem (row -1 for split-level findings) with what was done about it.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from moco.errors import DataError
from moco.tasks.base import DataProblem, Task


def _item_key(ex) -> str:
    """Question, options and image contents: image questions often share their text ("How many ...?")."""
    choices = "|".join(f"{k}={v}" for k, v in sorted((ex.choices or {}).items()))
    images = ""
    if ex.images:
        from moco.models.images import image_key

        images = "|".join(image_key(i) for i in ex.images)
    return f"{' '.join(ex.input.split())}||{choices}||{images}"


def check_task(task: Task, group_key: str | None = None) -> list[DataProblem]:
    """Run the dataset-level checks; returns the new problems (also appended to task.problems)."""
    require_gold(task)
    found: list[DataProblem] = []
    for split in ("dev", "test"):
        rows = task.split(split)
        dup = [k for k, n in Counter(e.id for e in rows).items() if n > 1]
        if dup:
            found.append(DataProblem(split, -1, "id", f"{len(dup)} duplicated ids (e.g. {dup[0]!r}); "
                                     "items are matched by position, not id", "repaired"))
        for ex in rows:
            if ex.choices:
                texts = [" ".join(v.lower().split()) for v in ex.choices.values()]
                same = [t for t, n in Counter(texts).items() if n > 1]
                if same:
                    found.append(DataProblem(split, ex.index, "choices", f"options repeat the text {same[0][:40]!r}",
                                             "kept"))
    dev_keys = {_item_key(e): e.index for e in task.dev}
    leaked = [e for e in task.test if _item_key(e) in dev_keys]
    if leaked:
        found.append(DataProblem("test", leaked[0].index, "input", f"{len(leaked)} test items also appear in dev "
                                 f"(e.g. dev[{dev_keys[_item_key(leaked[0])]}])", "kept"))
    if group_key:
        found += _check_groups(task, group_key)
    task.problems.extend(found)
    return found


def require_gold(task: Task) -> None:
    """The last guard before scoring: an objective task whose item has no gold answer would score that item 0
    (counted, silently). Loaders skip such rows; reaching this with one is an error naming the item."""
    if not task.objective:
        return
    for split in ("dev", "test"):
        for ex in task.split(split):
            if _no_gold(ex.answer):
                raise DataError(f"{task.source or task.name}: {split}[{ex.index}] (id {ex.id!r}) has no gold "
                                f"answer, and a {task.task_type} task scores every item against its gold")


def _no_gold(answer: object) -> bool:
    if isinstance(answer, str):
        return not answer.strip()
    if isinstance(answer, (list, tuple)):
        return not any(str(a).strip() for a in answer)
    return answer is None


def _check_groups(task: Task, key: str) -> list[DataProblem]:
    where: dict[str, Counter] = defaultdict(Counter)
    for split in ("dev", "test"):
        for ex in task.split(split):
            where[str(ex.meta.get(key, ex.uid))][split] += 1
    for split in ("dev", "test"):
        for ex in task.split(split):
            ex.meta["group_size"] = where[str(ex.meta.get(key, ex.uid))][split]
    split_groups = [g for g, c in where.items() if len(c) > 1]
    if not split_groups:
        return []
    g = split_groups[0]
    return [DataProblem("test", -1, key, f"{len(split_groups)} group(s) split between dev and test "
                        f"(e.g. {key}={g!r}: {dict(where[g])}); each split scores only its own rows", "kept")]
