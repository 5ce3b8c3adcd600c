"""Reading which model a router LM chose, and what the router is told about the models.

The reference implementation scans M..1 and takes the first number that appears anywhere in the output, so
"10" counts as "1" and "Model 2, not model 3" picks 3. Here a choice is read in this order, and anything else
is a recorded parse failure (never a silent default):

1. "model k" / "model number k" / "model #k" (the first such mention),
2. the output is a bare number, or exactly one distinct standalone number in 1..M appears,
3. exactly one model name appears (names given, of 3 characters or more: "a" is a word, not a model).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from moco.errors import ConfigError

log = logging.getLogger(__name__)

_MODEL_K = re.compile(r"\bmodel\s*(?:number|no\.?|#)?\s*[:#]?\s*(\d+)(?!\d)(?!\.\d)", re.I)
_NUMBER = re.compile(r"(?<![\w.])(\d+)(?!\d)(?!\.\d)")


@dataclass
class Choice:
    """A parsed router output: the chosen model's 0-based index (None when unreadable) and why."""

    index: int | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.index is not None


def parse_model_choice(text: str, n_models: int, names: list[str] | None = None) -> Choice:
    """The model a router's output names, counting from 1 as the router prompt does."""
    t = (text or "").strip()
    if not t:
        return Choice(None, "empty router output")
    m = _MODEL_K.search(t)
    if m:
        k = int(m.group(1))
        if 1 <= k <= n_models:
            return Choice(k - 1, f"'model {k}'")
        return Choice(None, f"'model {k}' is out of range 1..{n_models}")
    numbers = [int(x) for x in _NUMBER.findall(t)]
    valid = list(dict.fromkeys(k for k in numbers if 1 <= k <= n_models))
    if len(valid) == 1:
        return Choice(valid[0] - 1, f"the only model number mentioned: {valid[0]}")
    if len(valid) > 1:
        return Choice(None, f"ambiguous: mentions model numbers {', '.join(map(str, valid))}")
    if names:
        hits = [i for i, name in enumerate(names)
                if len(name) >= 3 and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", t, re.I)]
        if len(hits) == 1:
            return Choice(hits[0], f"names model '{names[hits[0]]}'")
    if numbers:
        return Choice(None, f"number(s) {', '.join(map(str, numbers[:3]))} out of range 1..{n_models}")
    return Choice(None, "no model number in the output")


def model_descriptions(models: list[Any], given: list[str] | None, ctx: Any = None) -> list[str]:
    """What a router reads about each model: `given` (a params list, one per model), else each model's config
    `description` (falling back to its role prompt, then its name). A router that reads ids or role prompts
    routes on names, not on what the models are good at: with `ctx`, such fallbacks are warned about (one
    line) and recorded in metrics (`description_fallbacks`: model -> "role prompt" | "model id")."""
    if given is not None:
        if len(given) != len(models):
            raise ConfigError(f"params: model_descriptions has {len(given)} entries for {len(models)} models")
        return list(given)
    fallbacks = {m.name: "role prompt" if m.spec.role_prompt else "model id"
                 for m in models if not m.spec.description}
    if ctx is not None and fallbacks:
        ctx.metrics["description_fallbacks"] = fallbacks
        log.warning("models without a description, the router reads instead: %s (give each model a `description` "
                    "or params.model_descriptions)", ", ".join(f"{n} -> its {w}" for n, w in fallbacks.items()))
    return [m.description for m in models]


def query_text(example: Any) -> str:
    """The query as a router sees it: the question and its options, without the answer-format instruction
    (a router told "answer with a letter" tends to answer the question instead of naming a model)."""
    text = example.input
    if example.choices:
        text += "\n" + "\n".join(f"{k}) {v}" for k, v in example.choices.items())
    return text
