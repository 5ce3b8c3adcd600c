"""Requests as test items: each chat request becomes one Example of a generation-only pseudo-task.

A single user message is the prompt as it is; a conversation (system prompt, earlier turns) is written
out as a transcript ending with the user's last turn, because methods ask every model one user prompt.
The original messages stay in `meta["messages"]`; image parts become `Example.images`.
"""
from __future__ import annotations

import itertools
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


def sampling_key(max_new_tokens: int, temperature: float, top_p: float) -> tuple[Any, ...]:
    return (max_new_tokens, round(temperature, 6), round(top_p, 6))


def served_task() -> Task:
    """The task of a config without `task:`: no dev split, no gold answers; the requests are its test items."""
    return Task(SERVED, "generation", [], [], generation_only=True)
