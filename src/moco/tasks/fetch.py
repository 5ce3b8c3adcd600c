"""`moco data fetch NAME`: build a MoCo JSON file from the dataset's original public Hugging Face source.

The paper's defaults: splits downsampled to at most 1,000 items (sizes as in the shipped files) with a fixed
seed (0), multiple-choice options as letters, gold answers extracted the way the shipped files have them.
Each source names its hub dataset, config and revision. The hub could not be reached where this code was
written, so the revisions below are branch names, not commit hashes: the first fetch resolves the branch to
its commit and records it in `NAME.source.json` beside the file, and every later fetch (also `--force`)
reuses that recorded commit, so the data never changes under a user silently. Pass `revision=` to pin
another commit.

The converters are pure functions from hub-shaped rows to MoCo rows, tested on small local files shaped like
the hub data. Fetched files go to `$MOCO_CACHE_DIR/data`, which the task registry reads when no data
directory is set; a task missing everywhere is fetched on first use.

Covered: gsm8k, math, theoremqa, bbh, arc_challenge, mmlu_redux, gpqa_diamond/main/extended, medqa, medmcqa,
pubmedqa, truthfulqa, popqa, coconot, humaneval, mbpp, culturebench, culturalbench_hard, alpacaeval.
No hub source we could identify with confidence for the shipped format: agieval(_tiny), blend, sciencemeter,
kaleidoscope, sciriff, wikidyk, tablemwp_*, human_interest(_tiny), infinite_chat_diversity. These are
downloaded as the paper's own MoCo JSON files from its GitHub repository (`fetch_reference.py`), pinned to a
commit and checked by digest in the same way.
"""
from __future__ import annotations

import json
import logging
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moco.cache import cache_dir
from moco.errors import ConfigError, DataError, did_you_mean
from moco.scoring.extract import last_boxed

log = logging.getLogger(__name__)

SEED = 0
LETTERS = string.ascii_uppercase
Rows = list[dict[str, Any]]
Raw = dict[str, Rows]  # hub split name -> rows


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from on the hub and how its rows become MoCo rows."""

    repo: str
    config: str | None
    splits: tuple[str, ...]  # hub splits to download
    task_type: str
    convert: Callable[[Raw, random.Random], dict[str, Rows]]
    dev_size: int
    test_size: int
    revision: str = "main"  # branch or commit; the resolved commit is recorded at first fetch
    configs: tuple[str, ...] = ()  # several configs pooled (BBH tasks, MMLU-Redux subjects)
    note: str = ""


# ---------------------------------------------------------------------------------------------- helpers
def sample(rows: Rows, n: int, rng: random.Random) -> Rows:
    """At most n rows, chosen with the seeded generator (all rows, shuffled, when there are fewer)."""
    rows = list(rows)
    return rng.sample(rows, n) if len(rows) > n else rng.sample(rows, len(rows))


def halves(rows: Rows, n_dev: int, n_test: int, rng: random.Random) -> dict[str, Rows]:
    """Shuffle a pool once and cut it into disjoint dev and test parts."""
    pool = rng.sample(list(rows), len(rows))
    if len(pool) < n_dev + n_test:  # fewer rows than asked: keep the dev:test proportion
        n_dev = int(len(pool) * n_dev / (n_dev + n_test))
    return {"dev": pool[:n_dev], "test": pool[n_dev:n_dev + n_test]}


def mc_row(rid: Any, question: str, options: list[str], correct: int, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "question": question.strip(), "choices": {LETTERS[i]: str(o) for i, o in enumerate(options)},
            "answer": LETTERS[correct], **extra}


def shuffled_options(correct: str, wrong: list[str], rng: random.Random) -> tuple[list[str], int]:
    opts = [correct, *wrong]
    order = rng.sample(range(len(opts)), len(opts))
    return [opts[i] for i in order], order.index(0)


# ---------------------------------------------------------------------------------------------- converters
def convert_gsm8k(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    def row(r: dict, i: int) -> dict:
        gold = r["answer"].split("####")[-1].strip().replace(",", "")
        return {"id": i, "domain": "gsm8k", "input": r["question"].strip(), "output": gold}

    return {"dev": sample([row(r, i) for i, r in enumerate(raw["train"])], 200, rng),
            "test": sample([row(r, i) for i, r in enumerate(raw["test"])], 1000, rng)}


def convert_math(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    def row(r: dict, i: int) -> dict | None:
        gold = r.get("answer") or last_boxed(r.get("solution", ""))
        if not gold:
            return None
        return {"id": r.get("unique_id", str(i)), "input": r["problem"].strip(), "output": gold,
                "subject": r.get("subject", r.get("type")), "level": r.get("level")}

    out = {}
    for split, hub, n in (("dev", "train", 1000), ("test", "test", 1000)):
        out[split] = sample([x for i, r in enumerate(raw[hub]) if (x := row(r, i))], n, rng)
    return out


def convert_theoremqa(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = [{"id": i, "input": r["Question"].strip(), "output": str(r["Answer"]), "answer_type": r["Answer_type"]}
            for i, r in enumerate(raw["test"]) if not r.get("Picture")]
    return halves(rows, 400, 400, rng)


def convert_bbh(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for task, task_rows in raw.items():
        for i, r in enumerate(task_rows):
            gold = r["target"].strip()
            m = re.fullmatch(r"\(([A-Z])\)", gold)  # option golds "(A)" are stored as the letter
            rows.append({"id": f"{task}:{i}", "domain": task, "input": r["input"].strip(),
                         "output": m.group(1) if m else gold})
    return halves(rows, 1000, 1000, rng)


def convert_arc(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    def row(r: dict) -> dict | None:
        labels, texts = list(r["choices"]["label"]), list(r["choices"]["text"])
        if r["answerKey"] not in labels:
            return None
        return mc_row(r["id"], r["question"], texts, labels.index(r["answerKey"]))  # "1".."4" keys become letters

    return {"dev": sample([x for r in raw["validation"] if (x := row(r))], 1000, rng),
            "test": sample([x for r in raw["test"] if (x := row(r))], 1172, rng)}


def convert_mmlu_redux(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for subject, sub_rows in raw.items():
        for i, r in enumerate(sub_rows):
            if str(r.get("error_type", "ok")).lower() != "ok":  # the re-annotation found the item wrong
                continue
            rows.append(mc_row(f"{subject}:{i}", r["question"], list(r["choices"]), int(r["answer"]), subject=subject))
    return halves(rows, 1000, 1000, rng)


def convert_gpqa(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for i, r in enumerate(raw["train"]):
        opts, correct = shuffled_options(r["Correct Answer"].strip(),
                                         [r[f"Incorrect Answer {k}"].strip() for k in (1, 2, 3)], rng)
        rows.append(mc_row(r.get("Record ID", i), r["Question"], opts, correct))
    half = len(rows) // 2
    return halves(rows, half, len(rows) - half, rng)


def convert_medqa(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for i, r in enumerate(raw["test"]):
        keys = sorted(r["options"])
        rows.append(mc_row(i, r["question"], [r["options"][k] for k in keys], keys.index(r["answer_idx"])))
    half = len(rows) // 2
    return halves(rows, half, len(rows) - half, rng)


def convert_medmcqa(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = [mc_row(r.get("id", i), r["question"], [r["opa"], r["opb"], r["opc"], r["opd"]], int(r["cop"]))
            for i, r in enumerate(raw["validation"])]
    half = len(rows) // 2
    return halves(rows, half, len(rows) - half, rng)


def convert_pubmedqa(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for r in raw["train"]:
        ctx = " ".join(r["context"]["contexts"]) if isinstance(r["context"], dict) else str(r["context"])
        rows.append({"id": r["pubid"], "pubid": r["pubid"], "input": f"Question: {r['question'].strip()}\n\nContext: {ctx}",
                     "output": r["final_decision"]})
    return halves(rows, 500, 500, rng)


def convert_truthfulqa(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for i, r in enumerate(raw["validation"]):
        choices, labels = list(r["mc1_targets"]["choices"]), list(r["mc1_targets"]["labels"])
        correct = choices[labels.index(1)]
        opts, k = shuffled_options(correct, [c for c, lab in zip(choices, labels) if lab != 1], rng)
        rows.append(mc_row(i, r["question"], opts, k))  # the hub lists the right answer first: shuffled
    return halves(rows, 200, 617, rng)


def convert_popqa(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for r in raw["test"]:
        answers = r["possible_answers"]
        answers = json.loads(answers) if isinstance(answers, str) else list(answers)
        rows.append({"id": r["id"], "input": r["question"].strip(), "output": json.dumps(answers, ensure_ascii=False),
                     "s_pop": r.get("s_pop"), "o_pop": r.get("o_pop")})
    return halves(rows, 1000, 1000, rng)


def convert_coconot(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    def row(r: dict) -> dict:
        return {"id": r["id"], "input": r["prompt"].strip(), "category": r["category"]}

    return {"dev": sample([row(r) for r in raw["train"]], 1000, rng),
            "test": sample([row(r) for r in raw["test"]], 1000, rng)}


def convert_humaneval(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = [{"id": r["task_id"], "input": f"Complete the following code\n\n{r['prompt']}", "test": r["test"],
             "entry_point": r["entry_point"], "language": "python"} for r in raw["test"]]
    return halves(rows, 50, 114, rng)


def _mbpp_check(tests: list[str], name: str) -> str:
    body = "\n".join("    " + re.sub(rf"\b{re.escape(name)}\s*\(", "candidate(", t.strip()) for t in tests)
    return f"\n\ndef check(candidate):\n{body}\n"


def convert_mbpp(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for split_rows in raw.values():
        for r in split_rows:
            tests = list(r["test_list"])
            m = re.search(r"assert\s+\(?\s*(?:not\s+)?\(?([A-Za-z_]\w*)\s*\(", tests[0]) if tests else None
            if not m:
                continue
            setup = (r.get("test_setup_code") or "").strip()
            rows.append({"id": r["task_id"],
                         "input": "You are an expert Python programmer, and here is your task: "
                                  f"{r['text'].strip()}\nYour code should pass this test case: {tests[0]}",
                         "test": (f"\n{setup}\n" if setup else "") + _mbpp_check(tests, m.group(1)),
                         "entry_point": m.group(1), "language": "python"})
    half = len(rows) // 2
    return halves(rows, half, len(rows) - half, rng)


TF_PROMPT = "Is this answer true or false for this question? Answer True or False only. Question: {q} Answer: {a}"


def convert_culturebench(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    """CulturalBench-Hard: 4 True/False rows per question; dev/test are cut by question, never inside one."""
    groups: dict[Any, Rows] = {}
    for r in raw["test"]:
        groups.setdefault(r["question_idx"], []).append(
            {"id": str(r["data_idx"]), "question_id": str(r["question_idx"]),
             "input": TF_PROMPT.format(q=r["prompt_question"].strip(), a=str(r["prompt_option"]).strip()),
             "output": "True" if r["answer"] in (True, "True", "true", 1) else "False", "country": r.get("country")})
    keys = rng.sample(sorted(groups, key=str), len(groups))
    half = len(keys) // 2
    return {"dev": [row for k in keys[:half] for row in groups[k]], "test": [row for k in keys[half:] for row in groups[k]]}


def convert_culturalbench_mc(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for r in raw["test"]:
        opts = [r[f"prompt_option_{k}"] for k in "abcd"]
        rows.append(mc_row(r["question_idx"], r["prompt_question"], opts, "ABCD".index(str(r["answer"]).strip().upper()),
                           country=r.get("country")))
    half = len(rows) // 2
    return halves(rows, half, len(rows) - half, rng)


def convert_alpaca(raw: Raw, rng: random.Random) -> dict[str, Rows]:
    rows = []
    for i, r in enumerate(raw["train"]):
        text = r["instruction"].strip() + (f"\n\n{r['input'].strip()}" if r.get("input", "").strip() else "")
        rows.append({"id": i, "input": text, "output": r["output"]})
    return halves(rows, 2000, 1000, rng)


BBH_TASKS = ("boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
             "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
             "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
             "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
             "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
             "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
             "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
             "word_sorting")
MMLU_REDUX_SUBJECTS = ("anatomy", "business_ethics", "clinical_knowledge", "college_chemistry", "college_computer_science",
                       "college_mathematics", "college_medicine", "college_physics", "econometrics", "electrical_engineering",
                       "formal_logic", "global_facts", "high_school_chemistry", "high_school_geography",
                       "high_school_macroeconomics", "high_school_mathematics", "high_school_physics",
                       "high_school_statistics", "high_school_us_history", "human_aging", "logical_fallacies",
                       "machine_learning", "miscellaneous", "philosophy", "professional_accounting", "professional_law",
                       "public_relations", "virology", "conceptual_physics", "high_school_european_history")

SOURCES: dict[str, Source] = {
    "gsm8k": Source("openai/gsm8k", "main", ("train", "test"), "exact_match", convert_gsm8k, 200, 1000),
    "math": Source("nlile/hendrycks-MATH-benchmark", None, ("train", "test"), "exact_match", convert_math, 1000, 1000),
    "theoremqa": Source("TIGER-Lab/TheoremQA", None, ("test",), "exact_match", convert_theoremqa, 400, 400),
    "bbh": Source("lukaemon/bbh", None, ("test",), "exact_match", convert_bbh, 1000, 1000, configs=BBH_TASKS),
    "arc_challenge": Source("allenai/ai2_arc", "ARC-Challenge", ("validation", "test"), "multiple_choice",
                            convert_arc, 299, 1172),
    "mmlu_redux": Source("edinburgh-dawg/mmlu-redux", None, ("test",), "multiple_choice", convert_mmlu_redux,
                         1000, 1000, configs=MMLU_REDUX_SUBJECTS, note="items annotated as erroneous are left out"),
    "gpqa_diamond": Source("Idavidrein/gpqa", "gpqa_diamond", ("train",), "multiple_choice", convert_gpqa, 99, 99,
                           note="gated on the hub: accept its terms and log in first"),
    "gpqa_main": Source("Idavidrein/gpqa", "gpqa_main", ("train",), "multiple_choice", convert_gpqa, 224, 224),
    "gpqa_extended": Source("Idavidrein/gpqa", "gpqa_extended", ("train",), "multiple_choice", convert_gpqa, 273, 273),
    "medqa": Source("GBaker/MedQA-USMLE-4-options", None, ("test",), "multiple_choice", convert_medqa, 636, 637),
    "medmcqa": Source("openlifescienceai/medmcqa", None, ("validation",), "multiple_choice", convert_medmcqa, 2091, 2092),
    "pubmedqa": Source("qiaojin/PubMedQA", "pqa_labeled", ("train",), "exact_match", convert_pubmedqa, 500, 500),
    "truthfulqa": Source("truthfulqa/truthful_qa", "multiple_choice", ("validation",), "multiple_choice",
                         convert_truthfulqa, 200, 617),
    "popqa": Source("akariasai/PopQA", None, ("test",), "f1_match", convert_popqa, 1000, 1000),
    "coconot": Source("allenai/coconot", "original", ("train", "test"), "noncompliance", convert_coconot, 1000, 1000),
    "humaneval": Source("openai/openai_humaneval", None, ("test",), "coding", convert_humaneval, 50, 114),
    "mbpp": Source("google-research-datasets/mbpp", "full", ("train", "validation", "test", "prompt"), "coding",
                   convert_mbpp, 487, 487),
    "culturebench": Source("kellycyy/CulturalBench", "CulturalBench-Hard", ("test",), "exact_match",
                           convert_culturebench, 2454, 2454),
    "culturalbench_hard": Source("kellycyy/CulturalBench", "CulturalBench-Easy", ("test",), "multiple_choice",
                                 convert_culturalbench_mc, 613, 614,
                                 note="the shipped file's 4-option questions match the Easy config's format"),
    "alpacaeval": Source("tatsu-lab/alpaca", None, ("train",), "reward_model", convert_alpaca, 2000, 1000),
}


# ---------------------------------------------------------------------------------------------- building
def build(name: str, raw: Raw, seed: int = SEED) -> dict[str, Any]:
    """The MoCo JSON object for `name` from hub-shaped rows (split or config -> rows)."""
    src = source(name)
    parts = src.convert(raw, random.Random(seed))
    return {"name": name, "task_type": src.task_type, "dev": parts["dev"], "test": parts["test"]}


def fetchable() -> list[str]:
    """Every dataset `moco data fetch` can get: rebuilt from the hub, or the paper's file from GitHub."""
    from moco.tasks import fetch_reference

    return sorted([*SOURCES, *fetch_reference.NAMES])


def source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"no hub source known for '{name}'{did_you_mean(name, fetchable())} "
                          f"(fetchable: {', '.join(fetchable())})")
    return SOURCES[name]


def hub_rows(src: Source, revision: str) -> tuple[Raw, str]:
    """Download the source's splits with `datasets` at `revision`; returns (rows, resolved commit)."""
    try:
        from datasets import load_dataset
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(src.repo, revision=revision).sha or revision
        raw: Raw = {}
        for cfg in src.configs or (src.config,):
            for split in src.splits:
                ds = load_dataset(src.repo, cfg, split=split, revision=sha)
                key = cfg if src.configs else split
                raw.setdefault(key, []).extend(dict(r) for r in ds)
        return raw, sha
    except Exception as e:  # offline, gated, renamed: one line that says what to do
        raise DataError(f"cannot fetch {src.repo} ({src.config or 'default'}) from the Hugging Face hub: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Set MOCO_DATA_DIR to a folder "
                        "of MoCo JSON files, or run `moco data fetch` where the hub is reachable") from None


def fetch_dataset(name: str, out: str | Path | None = None, *, force: bool = False, revision: str | None = None,
                  loader: Callable[[Source, str], tuple[Raw, str]] | None = None, seed: int = SEED) -> Path:
    """Build `<out>/<name>.json` (default out: $MOCO_CACHE_DIR/data) unless it exists; returns its path."""
    from moco.rundir import write_json
    from moco.tasks import fetch_reference

    out_dir = Path(out) if out else cache_dir() / "data"
    path = out_dir / f"{name}.json"
    prov_path = out_dir / f"{name}.source.json"
    if path.exists() and not force:
        return path
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    if name in fetch_reference.NAMES and name not in SOURCES:
        return _fetch_reference_file(name, path, prov_path, prov, force, revision)
    src = source(name)
    locked = prov.get("commit")
    rev = revision or locked or src.revision
    raw, sha = (loader or hub_rows)(src, rev)
    data = build(name, raw, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
    write_json(prov_path, {"name": name, "repo": src.repo, "config": src.config, "configs": list(src.configs),
                           "splits": list(src.splits), "requested_revision": rev, "commit": sha, "seed": seed,
                           "dev": len(data["dev"]), "test": len(data["test"])})
    log.info("fetched %s from %s@%s into %s", name, src.repo, sha, path)
    return path


def _fetch_reference_file(name: str, path: Path, prov_path: Path, prov: dict[str, Any], force: bool,
                          revision: str | None) -> Path:
    """The paper's own MoCo JSON file, pinned to the recorded commit and (unless --force) its digest."""
    from moco.rundir import write_json
    from moco.tasks import fetch_reference

    rev = revision or prov.get("commit") or fetch_reference.BRANCH
    expected = None if force else prov.get("sha256")
    data, commit, digest = fetch_reference.download(name, rev, expected)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
    write_json(prov_path, {
        "name": name, "repo": f"github.com/{fetch_reference.REPO}", "file": f"{fetch_reference.DATA_PATH}/{name}.json",
        "requested_revision": rev, "commit": commit, "sha256": digest,
        "dev": len(data["dev"]), "test": len(data["test"])})
    log.info("fetched %s from github.com/%s@%s", name, fetch_reference.REPO, commit)
    return path
