"""Which scorer reads which task: per dataset where the task type is not enough, else per task type.

`scorer_for(task_type, task_name)` keeps its old signature: a known dataset name gets its own scorer (GSM8K
numeric, MATH math equivalence, PopQA token F1 over aliases, CultureBench's group rule...), any other task the
default scorer of its task type. A config can choose another scorer (`task.scorer: llm_judge`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moco.errors import ConfigError, did_you_mean
from moco.registry import Registry
from moco.scoring.base import Scorer
from moco.tasks.datasets import DATASETS


@dataclass(frozen=True)
class ScorerInfo:
    name: str
    target: str  # "module:Class"
    summary: str
    role: str | None = None


SCORERS: dict[str, ScorerInfo] = {s.name: s for s in [
    ScorerInfo("multiple_choice", "multiple_choice:MultipleChoiceScorer", "option letter or option text; strict and flexible"),
    ScorerInfo("exact_match", "exact:ExactMatchScorer", "boxed/stated answer; numbers as numbers, text normalised"),
    ScorerInfo("numeric_match", "numeric:NumericMatchScorer", "stated or last number equals the numeric gold"),
    ScorerInfo("math_equivalence", "math_equivalence:MathEquivalenceScorer", "math-verify equivalence of the boxed answer; typed answers"),
    ScorerInfo("short_answer_exact_match", "short_answer:ShortAnswerExactMatch", "normalised exact match, any alias"),
    ScorerInfo("token_f1", "short_answer:TokenF1Scorer", "token F1, max over aliases"),
    ScorerInfo("label_match", "labels:LabelMatchScorer", "one label of a closed set (yes/no/maybe, True/False...)"),
    ScorerInfo("code_execution", "code_execution:CodeExecutionScorer", "unit tests run in a sandboxed subprocess"),
    ScorerInfo("llm_judge", "llm_judge:LLMJudgeScorer", "a judge model decides equivalence with the reference", "judge"),
    ScorerInfo("llm_judge_vs_rules", "llm_judge:LLMJudgeVersusRules",
               "llm_judge, and where it disagrees with the dataset's rule-based scorer", "judge"),
    ScorerInfo("refusal_judge", "refusal_judge:RefusalJudgeScorer", "a judge model decides appropriate noncompliance", "judge"),
    ScorerInfo("reward_model_score", "reward_model:RewardModelScorer", "scalar reward of a sequence-classification model", "reward"),
    ScorerInfo("embedding_diversity", "diversity:EmbeddingDiversityScorer", "1 - mean cosine similarity to references"),
    ScorerInfo("generation_only", "generation_only:GenerationOnly", "no gold: responses are written, not scored"),
]}

DEFAULT_FOR_TYPE = {
    "multiple_choice": "multiple_choice",
    "exact_match": "exact_match",
    "f1_match": "token_f1",
    "general_verifier": "llm_judge",
    "noncompliance": "refusal_judge",
    "reward_model": "reward_model_score",
    "coding": "code_execution",
    "generation_diversity": "embedding_diversity",
    "text_generation": "generation_only",
    "generation": "generation_only",
}


@dataclass
class ScorerChoice:
    """A scorer by name with its options, and an optional all-or-nothing group key."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    group_key: str | None = None


def _lazy() -> Registry[Any]:
    """The scorers as a lazy registry (each module imported on first use); plug-ins: group `moco.scorers`."""
    reg: Registry[Any] = Registry("scorer", group="moco.scorers")
    for s in SCORERS.values():
        reg.add(s.name, f"moco.scoring.{s.target}", summary=s.summary, role=s.role)
    return reg


REGISTRY = _lazy()


def build_scorer(choice: ScorerChoice | str, task_name: str = "") -> Scorer:
    choice = ScorerChoice(choice) if isinstance(choice, str) else choice
    if choice.name not in REGISTRY:
        names = REGISTRY.names()
        raise ConfigError(f"unknown scorer '{choice.name}'{did_you_mean(choice.name, names)} for task '{task_name}' "
                          f"(scorers: {', '.join(names)})")
    factory = REGISTRY.load(choice.name)
    try:
        scorer: Scorer = factory(**choice.options)
    except TypeError as e:
        raise ConfigError(f"scorer {choice.name}: bad options {choice.options}: {e}") from None
    if choice.group_key:
        from moco.scoring.group_rule import AllCorrectPerGroup

        scorer = AllCorrectPerGroup(scorer, choice.group_key)
    return scorer


def dataset_scorer(name: str) -> ScorerChoice | None:
    """The scorer choice of a known dataset (None: use its task type's default)."""
    d = DATASETS.get(name)
    if d is None or (d.scorer is None and d.group_key is None):
        return None
    return ScorerChoice(d.scorer or "multiple_choice", dict(d.options), d.group_key)


def choice_for(task_type: str, task_name: str = "", override: str | None = None) -> ScorerChoice:
    """The scorer a task gets: the config's override, else the dataset's own, else its task type's default."""
    if override:
        base = dataset_scorer(task_name)
        return ScorerChoice(override, group_key=base.group_key if base else None)
    own = dataset_scorer(task_name)
    if own is not None:
        return own
    if task_type not in DEFAULT_FOR_TYPE:
        raise ConfigError(
            f"task '{task_name}' has task type '{task_type}', which has no scorer "
            f"(task types: {', '.join(sorted(DEFAULT_FOR_TYPE))}){did_you_mean(task_type, DEFAULT_FOR_TYPE)}"
        )
    return ScorerChoice(DEFAULT_FOR_TYPE[task_type])


def scorer_for(task_type: str, task_name: str = "", override: str | None = None) -> Scorer:
    """The task's scorer, built. A scorer that compares itself with the task's rule-based scorer
    (`llm_judge_vs_rules`) gets that scorer as `rules` (none when the task's own scorer calls a model too)."""
    scorer = build_scorer(choice_for(task_type, task_name, override), task_name)
    judge: Any = getattr(scorer, "inner", scorer)
    if getattr(judge, "compare_rules", False):
        rules = build_scorer(choice_for(task_type, task_name), task_name)
        judge.rules = None if getattr(rules, "role", None) or rules.name == judge.name else rules
    return scorer


def scorer_name_for(task_type: str, task_name: str = "") -> str:
    """The scorer's display name without building it (for listings)."""
    c = choice_for(task_type, task_name)
    return c.name + (f" (all correct per {c.group_key})" if c.group_key else "")
