"""How an item becomes a prompt, per task type. One place, so every method asks the same question."""
from __future__ import annotations

MC_INSTRUCTION = 'Answer with the letter of the correct option, in the form "The answer is (X)".'
EXACT_INSTRUCTION = "Give your final answer at the end in the form \\boxed{ANSWER}."
OPEN_INSTRUCTION = "Answer in one short sentence."
SHORT_INSTRUCTION = "Answer with a short phrase, in the form \\boxed{ANSWER}."


def multiple_choice(question: str, choices: dict[str, str]) -> str:
    lines = "\n".join(f"{k}) {v}" for k, v in choices.items())
    return f"{question.rstrip()}\n\n{lines}\n\n{MC_INSTRUCTION}"


def open_choice(question: str) -> str:
    """Multiple choice without showing the options: the answer is matched against the option texts.
    Small models that copy or mis-read option letters answer in words far more reliably."""
    return f"{question.rstrip()} {OPEN_INSTRUCTION}"


def exact_match(text: str) -> str:
    return f"{text.rstrip()}\n\n{EXACT_INSTRUCTION}"


def short_answer(text: str) -> str:
    return f"{text.rstrip()}\n\n{SHORT_INSTRUCTION}"


def plain(text: str) -> str:
    return text.rstrip()
