"""What CoLM's roles say to each other (shared by the in-process methods and the HTTP server and client),
client selection, and the scoring of intermediate outputs into the paper's table rows.

Client answers reach the server anonymously ("Answer 1", ...): a client's identity and model stay on the
client's side; only its text travels.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from moco.context import Call, RunContext
from moco.tasks.base import Example
from moco.selection import dev_best

FORMAT_NOTE = "Keep the answer format the question asks for."


def server_prompt(question: str, answers: Sequence[str]) -> str:
    """The server's synthesis: a = M_s(q, {M_i(q)}), guided toward consistency and factual accuracy."""
    shown = "\n\n".join(f"[Answer {i}]\n{a}" for i, a in enumerate(answers, 1)) or "(no client answered)"
    return ("You are the server of a team of specialised client models. The clients answered the question below "
            "independently. Synthesise their answers into one answer of high quality: compare them, keep what is "
            "consistent and factually right, and correct what is wrong; do not simply copy one of them.\n\n"
            f"Question:\n{question}\n\nClient answers:\n\n{shown}\n\n"
            f"Write your answer to the question. {FORMAT_NOTE}")


def refine_prompt(question: str, own: str, guidance: str) -> str:
    """A client revises its own answer with the server's guidance, keeping its own expertise."""
    return (f"Question:\n{question}\n\nYour previous answer:\n{own}\n\n"
            "Guidance from the server, which combined the answers of several expert models:\n"
            f"{guidance}\n\nRevise your answer: use the guidance where it is right and your own expertise where it "
            f"is not. Give your final answer. {FORMAT_NOTE}")


def answers_block(answers: Sequence[str]) -> str:
    """The VLM answers as one structured block: what the server sends back to every client."""
    return "\n".join(f"[Model {i}] {a}" for i, a in enumerate(answers, 1))


def concat_prompt(question: str, answers: Sequence[str] | str) -> str:
    """CoLM for VLMs: all answers concatenated into one structured prompt, fed back to each model."""
    shown = answers if isinstance(answers, str) else answers_block(answers)
    return (f"Question:\n{question}\n\nAnswers from several models that looked at the same image:\n{shown}\n\n"
            f"Look at the image again, weigh these answers, and give your final answer. {FORMAT_NOTE}")


def rating_prompt(query: str, description: str) -> str:
    """Selection by a strong model: how relevant is one client's speciality to the query (0-10)."""
    return (f"Query:\n{query}\n\nExpert model: {description}\n\n"
            "On a scale from 0 (unrelated) to 10 (exactly this expert's speciality), how relevant is this expert "
            "to answering the query? Reply with the number only.")


_NUMBER = re.compile(r"(?<![\d.])(10|\d)(?:\.\d+)?(?![\d])")


def parse_rating(text: str) -> float | None:
    m = _NUMBER.search(text or "")
    return float(m.group(0)) if m else None


# ---------------------------------------------------------------------------------- roles
async def choose_server(ctx: RunContext) -> tuple[Any, str]:
    """The server model and why it was chosen — one rule for the in-process method and the HTTP server: the
    model bound to the `server` role, else the only model, else the dev-best model of the pool."""
    bound = ctx.role("server")
    if bound is not None:
        return bound, "the server role"
    if len(ctx.models) == 1:
        return ctx.models[0], "the only model"
    return await dev_best(ctx), "the dev-best model (no server role bound)"


def contributors_k(top_k: int | str, n_clients: int) -> int:
    """How many clients contribute: an int (clipped to the pool), 'half' (rounded up) or 'all'."""
    if top_k == "all":
        return n_clients
    if top_k == "half":
        return max(1, math.ceil(n_clients / 2))
    return max(1, min(int(top_k), n_clients))


# ---------------------------------------------------------------------------------- selection
async def relevance(ctx: RunContext, queries: Sequence[str], candidates: Sequence[Sequence[str]], how: str,
              selector: Any = None, encoder: str = "all-minilm-l6-v2") -> tuple[list[list[float]], int]:
    """out[q][i]: relevance of candidate description i of query q to that query (how: embedding | llm),
    and the number of ratings that could not be parsed (scored 0). Every rating is one batched call."""
    if how == "embedding":
        from moco.models.encoder import embed

        texts = list(dict.fromkeys([*queries, *(d for ds in candidates for d in ds)]))
        vecs = dict(zip(texts, embed(texts, encoder))) if texts else {}
        return [[float(vecs[q] @ vecs[d]) for d in ds] for q, ds in zip(queries, candidates)], 0
    calls = [Call(selector, rating_prompt(q, d), ctx.sampling(temperature=0.0, max_new_tokens=8))
             for q, ds in zip(queries, candidates) for d in ds]
    flat = iter(await ctx.generate(calls, tag="colm select"))
    parsed = [[parse_rating(next(flat).text) for _ in ds] for ds in candidates]
    scores = [[p if p is not None else 0.0 for p in row] for row in parsed]
    return scores, sum(p is None for row in parsed for p in row)


def top_k(scores: Sequence[float], k: int | None) -> list[int]:
    """Indices of the k highest scores, best first; ties keep pool order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order if k is None else order[:k]


# ---------------------------------------------------------------------------------- scoring
async def mean_score(ctx: RunContext, pairs: Sequence[tuple[Example, str]]) -> float | None:
    """Mean task score of (example, text) pairs with a gold answer; None when nothing can be scored."""
    kept = [(ex, t) for ex, t in pairs if ex.answer is not None]
    scored = [r.score for r in await ctx.score([ex for ex, _ in kept], [t for _, t in kept])] if kept else []
    return sum(scored) / len(scored) if scored else None


def rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
