"""text_knowledge_card: models as knowledge sources for an answering model (Feng et al. 2024, Knowledge Card).

1. Every model writes a paragraph of knowledge relevant to the question (one batched call).
2. The answering model (param `answerer`, else the `answerer` role, else the dev-best model) answers the
   question with all paragraphs in its prompt; with `exclude_self`, without its own paragraph.

As in the reference implementation, the paper's knowledge selectors (relevance, brevity, factuality) are not
applied: every paragraph is shown.
"""
from __future__ import annotations

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import numbered, per_model, pick_model


class Params(MethodParams):
    exclude_self: bool = Field(False, description="the answerer does not see its own knowledge paragraph")
    answerer: int | str | None = Field(None, description="model (index or name) that answers; default: the "
                                       "`answerer` role, else the dev-best model")
    knowledge_max_new_tokens: int | None = Field(None, ge=1, le=131072, description="length of a knowledge "
                                                 "paragraph; default: decoding.max_new_tokens")


def knowledge_prompt(question: str) -> str:
    return ("You are a helpful assistant that provides background knowledge. Write one short paragraph of "
            "facts that would help someone answer the question below. Do not answer the question itself.\n\n"
            f"Question:\n{question}\n\nRelevant knowledge:")


def answer_prompt(question: str, paragraphs: list[str]) -> str:
    shown = numbered(paragraphs, "Knowledge") if paragraphs else "(none)"
    return (f"Here is some knowledge written by other assistants; it may help, but it can contain mistakes.\n\n"
            f"{shown}\n\nUsing this knowledge where it is right, answer the question.\n\nQuestion:\n{question}")


@method("text_knowledge_card", params=Params, level="text", aliases=("knowledge_card",), min_models=2,
        roles={"answerer": "answers with every model's knowledge paragraph (default: dev-best model)"},
        paper="Feng et al. 2024, Knowledge Card: filling LLMs' knowledge gaps with plug-in specialized LMs",
        summary="Every model writes a knowledge paragraph; the answering model answers with all of them")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models, test = ctx.models, ctx.task.test
    answerer = await pick_model(ctx, params.answerer, "answerer")
    sampling = ctx.sampling(max_new_tokens=params.knowledge_max_new_tokens) if params.knowledge_max_new_tokens else None
    with ctx.phase("test"):
        cards = per_model(await ctx.generate([Call(m, knowledge_prompt(ex.prompt), sampling) for m in models for ex in test],
                                       tag="knowledge"), len(test))
        shown = [[m for m in models if not cards[m.index][j].failed
                  and not (params.exclude_self and m.index == answerer.index)] for j in range(len(test))]
        finals = await ctx.ask(answerer, [answer_prompt(ex.prompt, [cards[m.index][j].text for m in shown[j]])
                                    for j, ex in enumerate(test)], tag="answer with knowledge")
    return [Output(fr.text, failed=fr.failed, trace={
        "knowledge": {m.name: cards[m.index][j].text for m in models},
        "answerer": answerer.name, "answerer_saw": [m.name for m in shown[j]]})
        for j, fr in enumerate(finals)]
