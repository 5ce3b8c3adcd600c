"""Requests as test items: each chat request becomes one Example of a generation-only pseudo-task.

A single user message is the prompt as it is; a conversation (system prompt, earlier turns) is written
out as a transcript ending with the user's last turn, because methods ask every model one user prompt.
The original messages stay in `meta["messages"]`; image parts become `Example.images`.
"""
from __future__ import annotations

import itertools
import re
from typing import Any

from moco.serve.protocol import ApiError, ChatMessage
from moco.tasks.base import Example, Task

_IDS = itertools.count()
SERVED = "served"  # the pseudo-task of a config without `task:`
ROLE_NAMES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


def prompt_of(messages: list[ChatMessage]) -> str:
    if len(messages) == 1:
        return messages[0].text()
    lines = [f"{ROLE_NAMES[m.role]}: {m.text()}" for m in messages]
    return ("Continue this conversation: write the assistant's next reply.\n\n" + "\n\n".join(lines))


def example_of(messages: list[ChatMessage], index: int) -> Example:
    """One request as a test item with no gold answer."""
    if not any(m.text().strip() for m in messages if m.role == "user"):
        raise ApiError(400, "the user message is empty", param="messages")
    prompt = prompt_of(messages)
    images = tuple(url for m in messages for url in m.images())
    return Example(id=f"req-{next(_IDS)}", index=index, split="test", prompt=prompt, input=prompt, answer=None,
                   meta={"messages": [m.model_dump(exclude_none=True) for m in messages]}, images=images)


_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-Z])[).:][ \t]+(\S.*)$", re.M)  # "A) x", "(B) y", "C. z", "D: w"
_OPTION_INLINE = re.compile(r"\(([A-Z])\)[ \t]*")  # "... (A) x (B) y"


def _lettered_run(found: list[tuple[str, str]]) -> dict[str, str] | None:
    """The last run of options lettered A, B, C, ... (a few-shot prompt lists earlier questions' options too)."""
    for start in range(len(found) - 1, -1, -1):
        if found[start][0] != "A":
            continue
        run = {}
        for k, (letter, text) in enumerate(found[start:]):
            if letter != chr(ord("A") + k):
                break
            run[letter] = text.strip()
        if len(run) >= 2 and all(run.values()):
            return run
    return None


def options_in(prompt: str) -> dict[str, str] | None:
    """The options a multiple-choice request lists ("A) x" lines or inline "(A) x (B) y"), or None. A served
    request carries no `choices` field, and the task's option reader reads nothing without them."""
    lines = _lettered_run([(m.group(1), m.group(2)) for m in _OPTION_LINE.finditer(prompt)])
    if lines:
        return lines
    marks = list(_OPTION_INLINE.finditer(prompt))
    inline = [(m.group(1), prompt[m.end():marks[i + 1].start()] if i + 1 < len(marks) else
               prompt[m.end():].split("\n")[0]) for i, m in enumerate(marks)]
    return _lettered_run([(k, t.strip().rstrip(",;")) for k, t in inline])


def sampling_key(max_new_tokens: int, temperature: float, top_p: float) -> tuple[Any, ...]:
    return (max_new_tokens, round(temperature, 6), round(top_p, 6))


def served_task() -> Task:
    """The task of a config without `task:`: no dev split, no gold answers; the requests are its test items."""
    return Task(SERVED, "generation", [], [], generation_only=True)
