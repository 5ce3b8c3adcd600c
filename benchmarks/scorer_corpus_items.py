"""Copy a few real rows of every objective dataset into tests/data/scorer_corpus/ (a few KB each), so the
scorer corpus test runs in a fresh clone without the shared data directory.

    MOCO_DATA_DIR=/path/to/datasets python benchmarks/scorer_corpus_items.py [--per-dataset 6]

Rows are chosen with a fixed seed, spread over gold answers (and, for BBH and TheoremQA, over sub-tasks and
answer types). Long question texts are shortened in the middle ("[...]"): the scorers read the options,
the gold and the answer instruction, which are kept whole.
"""
from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

OBJECTIVE = ["agieval", "agieval_tiny", "arc_challenge", "mmlu_redux", "gpqa_diamond", "gpqa_main", "gpqa_extended",
             "blend", "truthfulqa", "tablemwp_multiple_choice", "medmcqa", "medqa", "culturalbench_hard", "kaleidoscope",
             "sciencemeter", "gsm8k", "tablemwp_free_text", "math", "theoremqa", "bbh", "sciriff", "culturebench",
             "pubmedqa", "wikidyk", "popqa"]
BBH_DOMAINS = ["date_understanding", "logical_deduction_five_objects", "hyperbaton", "snarks", "ruin_names",
               "reasoning_about_colored_objects", "sports_understanding", "web_of_lies", "boolean_expressions",
               "formal_fallacies", "multistep_arithmetic_two", "object_counting", "dyck_languages", "dyck_languages",
               "word_sorting"]
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "scorer_corpus"


def shorten(text: str, limit: int = 600) -> str:
    if len(text) <= limit:
        return text
    return text[: limit // 2].rstrip() + " [...] " + text[-limit // 2:].lstrip()


def spread(rows: list[dict], key, n: int, rng: random.Random) -> list[dict]:
    """n rows, round-robin over the values of key(row)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(key(r)), []).append(r)
    for g in groups.values():
        rng.shuffle(g)
    order = sorted(groups)
    rng.shuffle(order)
    out: list[dict] = []
    while len(out) < n and any(groups.values()):
        for k in order:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop())
    return out


def pick(name: str, data: dict, n: int) -> list[dict]:
    rng = random.Random(f"scorer-corpus:{name}")
    rows = [r for r in data["test"] if isinstance(r, dict)]
    if name == "bbh":  # one row per kind of gold: letters, Yes/No, True/False, valid, numbers, Dyck, word lists
        rows = [r for r in rows if len(r["input"]) < 900]
        out = []
        for dom in BBH_DOMAINS:
            cand = [r for r in rows if r.get("domain") == dom and (dom != "dyck_languages" or "}" in r["output"])]
            out.append(rng.choice(cand))
        return out
    if name == "theoremqa":
        return spread(rows, lambda r: r.get("answer_type"), max(n, 8), rng)
    if name == "culturebench":  # whole questions (all rows of a question_id)
        qids = sorted({r["question_id"] for r in rows})
        rng.shuffle(qids)
        keep = set(qids[:2])
        return [r for r in rows if r["question_id"] in keep]
    if name == "math":
        return spread(rows, lambda r: ("latex" if "\\" in str(r.get("output")) else "plain"), n, rng)
    if data.get("task_type") == "multiple_choice":
        return spread(rows, lambda r: r.get("answer"), n, rng)
    return spread(rows, lambda r: r.get("output", r.get("answer")), n, rng)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-dataset", type=int, default=6)
    args = ap.parse_args()
    src = Path(os.environ.get("MOCO_DATA_DIR", "../shared/datasets/moco"))
    OUT.mkdir(parents=True, exist_ok=True)
    for name in OBJECTIVE:
        data = json.loads((src / f"{name}.json").read_text())
        rows = []
        for r in pick(name, data, args.per_dataset):
            r = dict(r)
            for f in ("question", "input"):
                if isinstance(r.get(f), str) and name != "bbh":
                    r[f] = shorten(r[f])
            rows.append(r)
        out = {"name": name, "task_type": data["task_type"], "dev": [], "test": rows,
               "source": f"{len(rows)} rows of {name}.json (test split), long texts shortened in the middle"}
        (OUT / f"{name}.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} rows, {(OUT / f'{name}.json').stat().st_size} bytes")


if __name__ == "__main__":
    main()
