"""The datasets of the MoCo paper as data: domain, description, and the scorer their answers need.

A leaf module (it imports nothing of moco): the task registry reads the domains and descriptions, the scorer
registry reads the scorer choices, and neither imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dataset:
    """What we know of a dataset of the MoCo paper: domain, description, and the scorer its answers need."""

    domain: str
    description: str
    scorer: str | None = None  # None: the default scorer of the file's task type
    options: tuple[tuple[str, Any], ...] = ()  # scorer options
    group_key: str | None = None  # rows sharing this meta field are scored all-or-nothing


_NUMERIC = "numeric_match"
_MC = None  # multiple choice: the task type's default scorer

DATASETS: dict[str, Dataset] = {
    "agieval": Dataset("reasoning", "AGIEval English exams (SAT, LSAT, ...), 4-5 options", _MC),
    "agieval_tiny": Dataset("reasoning", "40-item slice of AGIEval for smoke tests", _MC),
    "arc_challenge": Dataset("science", "ARC-Challenge grade-school science questions", _MC),
    "mmlu_redux": Dataset("knowledge", "MMLU-Redux re-annotated multitask knowledge questions", _MC),
    "gpqa_diamond": Dataset("science", "GPQA diamond graduate-level science questions", _MC),
    "gpqa_main": Dataset("science", "GPQA main set", _MC),
    "gpqa_extended": Dataset("science", "GPQA extended set", _MC),
    "gsm8k": Dataset("math", "GSM8K grade-school math word problems (numeric answers)", _NUMERIC),
    "math": Dataset("math", "MATH competition problems (LaTeX answers)", "math_equivalence"),
    "bbh": Dataset("reasoning", "BIG-Bench Hard tasks (short answers)", "short_answer_exact_match"),
    "tablemwp_free_text": Dataset("math", "TabMWP table math word problems, free-text answers", _NUMERIC),
    "tablemwp_multiple_choice": Dataset("math", "TabMWP table math word problems, multiple choice", _MC),
    "theoremqa": Dataset("math", "TheoremQA theorem-driven STEM questions (typed answers)", "math_equivalence",
                         (("rel_tol", 0.04),)),
    "wikidyk": Dataset("knowledge", "Wikipedia 'Did you know' facts, short answers (token F1)", "token_f1"),
    "popqa": Dataset("knowledge", "PopQA long-tail entity questions, alias lists (token F1)", "token_f1"),
    "blend": Dataset("culture", "BLEnD everyday cultural knowledge, multiple choice", _MC),
    "culturebench": Dataset("culture", "CulturalBench-Hard: True/False per (question, option), all-or-nothing per question",
                            "label_match", (("labels", ("True", "False")),), group_key="question_id"),
    "culturalbench_hard": Dataset("culture", "CulturalBench multiple choice", _MC),
    "sciencemeter": Dataset("science", "ScienceMeter claim support/refute judgements", _MC),
    "sciriff": Dataset("science", "SciRIFF citation-intent classification (6 labels)", "label_match",
                       (("labels", ("Background", "Uses", "CompareOrContrast", "Motivation", "Extends", "FutureWork")),)),
    "truthfulqa": Dataset("safety", "TruthfulQA multiple choice", _MC),
    "coconot": Dataset("safety", "CoCoNot requests that should not be complied with (refusal judge)", "refusal_judge"),
    "humaneval": Dataset("code", "HumanEval Python function completion, unit tests", "code_execution"),
    "mbpp": Dataset("code", "MBPP Python programming problems, unit tests", "code_execution"),
    "medqa": Dataset("medical", "MedQA USMLE-style questions", _MC),
    "medmcqa": Dataset("medical", "MedMCQA medical entrance exam questions", _MC),
    "pubmedqa": Dataset("medical", "PubMedQA yes/no/maybe over abstracts", "label_match",
                        (("labels", ("yes", "no", "maybe")),)),
    "alpacaeval": Dataset("instruction", "Alpaca instructions (reward-model scored)", "reward_model_score"),
    "human_interest": Dataset("instruction", "Human-interest open questions (reward-model scored)", "reward_model_score"),
    "human_interest_tiny": Dataset("instruction", "small slice of human_interest", "reward_model_score"),
    "kaleidoscope": Dataset("values", "Kaleidoscope value/right/duty support or oppose", _MC),
    "infinite_chat_diversity": Dataset("diversity", "Infinite-Chat open prompts scored for diversity vs references",
                                       "embedding_diversity"),
}

# Domain and short description per dataset (kept for callers of the first version).
CATALOG: dict[str, tuple[str, str]] = {k: (d.domain, d.description) for k, d in DATASETS.items()}
