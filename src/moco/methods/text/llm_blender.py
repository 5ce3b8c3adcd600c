"""text_llm_blender: pairwise ranking and generative fusion (Jiang et al. 2023, LLM-Blender), with LLMs as
ranker and fuser (as the reference implementation; the paper uses a DeBERTa PairRanker and a Flan-T5 fuser).

1. Every model answers (the candidates).
2. The ranker compares every pair of candidates in BOTH orders (A/B and B/A: position bias cancels); a win
   counts 1, an unparseable verdict 0.5 for each side. All comparisons are one batched call. Candidates are
   ranked by wins (ties: pool order).
3. The fuser writes the final answer from the top-k candidates, shown best first.

Ranker and fuser: the `ranker` / `fuser` param, else the model bound to that role, else a non-candidate model
the config binds to the other role (the paper's ranker and fuser are models of their own, not candidates),
else the dev-best candidate — then a warning (console and metrics `warnings`) says that a candidate judges
and fuses its own answer.

Optionally (dev set, LoRA SFT with `moco.training.train_lora_sft`, adapters in the run's artifacts folder and
reused when the run resumes):
- the ranker learns pairwise preferences from the dev candidates' scores (every pair with different
  scores, both orders; the target is the better one's letter);
- the fuser learns to write the gold answer from the top-k dev candidates in the order the (trained) ranker
  gives them — the order it sees at test time (the reference orders them by their gold scores).
The trained adapters are the ranker and fuser used on the test set.

The verdict parser reads explicit statements ("B", "Candidate B", "Answer: B", "B is better"); the reference
takes the first 'A' or 'B' character anywhere, so "Candidate B" parsed as A. Mixed statements are unparsed.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.methods.text.shared import candidate_of, gold_completion, numbered, pick_model, warn
from moco.methods.trained import chat
from moco.models.pool import ModelHandle
from moco.training import SFTSettings, train_lora_sft
from moco.selection import dev_answers


def _gpu(v: Any) -> Any:
    return f"cuda:{v}" if isinstance(v, int) and not isinstance(v, bool) else v


def _same(v: Any) -> Any:
    return v


class Params(MethodParams):
    reference_keys = {"ranker_model_name": ("ranker", _same), "fuser_model_name": ("fuser", _same),
                      "ranker_gpu_id": ("ranker_device", _gpu), "fuser_gpu_id": ("fuser_device", _gpu),
                      "ranker_max_response_length": ("ranker_max_new_tokens", _same),
                      "fuser_max_response_length": ("fuser_max_new_tokens", _same)}

    top_k: int = Field(3, ge=1, le=64, description="candidates fused (clipped to the pool size)")
    ranker: int | str | None = Field(None, description="ranker: a pool model (index or name) or a model id; default: "
                                     "the `ranker` role, else a non-candidate `fuser` role model, else the dev-best "
                                     "model, with a warning (reference key `ranker_model_name`)")
    fuser: int | str | None = Field(None, description="fuser: a pool model or a model id; default: the `fuser` role, "
                                    "else a non-candidate `ranker` role model, else the dev-best model, with a "
                                    "warning (reference key `fuser_model_name`)")
    ranker_device: str | None = Field(None, description="device of a ranker given by model id (reference key "
                                      "`ranker_gpu_id`)")
    fuser_device: str | None = Field(None, description="device of a fuser given by model id (`fuser_gpu_id`)")
    ranker_max_new_tokens: int = Field(128, ge=1, le=131072, description="length of a ranker verdict")
    fuser_max_new_tokens: int | None = Field(None, ge=1, le=131072, description="length of the fused answer; "
                                             "default: decoding.max_new_tokens")
    train_ranker_on_dev: bool = Field(False, description="LoRA-SFT the ranker on dev pairwise preferences")
    train_fuser_on_dev: bool = Field(False, description="LoRA-SFT the fuser on dev gold answers")
    ranker_sft_batch_size: int = Field(1, ge=1, le=4096)
    ranker_sft_gradient_accumulation_steps: int = Field(16, ge=1, le=4096)
    ranker_sft_learning_rate: float = Field(1e-5, gt=0, le=1.0)
    ranker_sft_epoch: int = Field(3, ge=1, le=1000)
    fuser_sft_batch_size: int = Field(1, ge=1, le=4096)
    fuser_sft_gradient_accumulation_steps: int = Field(16, ge=1, le=4096)
    fuser_sft_learning_rate: float = Field(1e-5, gt=0, le=1.0)
    fuser_sft_epoch: int = Field(3, ge=1, le=1000)
    sft_max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps per training (quick runs)")
    lora_r: int = Field(64, ge=1, le=1024, description="LoRA rank (reference: 64)")
    lora_alpha: int = Field(16, ge=1, le=4096)
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lora_target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    sft_max_length: int = Field(2048, ge=16, le=131072, description="tokens per training example")


def pairwise_prompt(question: str, a: str, b: str) -> str:
    return (f"Question:\n{question}\n\nCandidate A:\n{a.strip()}\n\nCandidate B:\n{b.strip()}\n\n"
            "Which candidate answers the question better? Reply with a single letter: A or B.")


def fusion_prompt(question: str, candidates: list[str]) -> str:
    return ("Combine the candidate answers below into one high-quality answer to the question: keep what they get "
            "right and ignore their mistakes. They are ordered from best to worst according to a judge.\n\n"
            f"Question:\n{question}\n\n{numbered(candidates, 'Candidate')}\n\n"
            "Write the final answer, in the format the question asks for.\n\nFinal answer:")


_WORD = r"(?i:candidate|response|answer|option|choice)"


def parse_preference(text: str) -> str | None:
    """'A' or 'B' from a verdict, None when it does not decide. "Candidate B" is B; "A better one is B" is B
    (a leading article is not a verdict); "Candidate A is worse than Candidate B" is undecided."""
    t = text.strip()
    bare = re.fullmatch(r"[\W_]*([AB])[\W_]*", t)
    if bare:
        return bare.group(1)
    lead = re.match(r"^[\W_]*([AB])(?:[\W_]*$|[.):,\n]|\s+(?i:is|was)\b)", t)
    if lead:
        return lead.group(1)
    said = set(re.findall(rf"\b{_WORD}\s*(?:(?i:is)\s*|:\s*)?\(?\*{{0,2}}([AB])\b", t))
    said |= set(re.findall(r"\b([AB])\*{0,2}\s+(?i:is\s+(?:the\s+)?(?:better|best|preferred|correct))", t))
    return said.pop() if len(said) == 1 else None


def rank(n: int, verdicts: list[tuple[int, int, str | None]]) -> tuple[list[int], list[float]]:
    """Order candidates by wins: a verdict (a, b, 'A'|'B'|None) gives 1 to the winner or 0.5 to each side."""
    wins = [0.0] * n
    for a, b, v in verdicts:
        if v == "A":
            wins[a] += 1
        elif v == "B":
            wins[b] += 1
        else:
            wins[a] += 0.5
            wins[b] += 0.5
    return sorted(range(n), key=lambda i: (-wins[i], i)), wins


async def choose_role(ctx: RunContext, ref: int | str | None, role: str, other: str, device: str | None) -> ModelHandle:
    """The ranker or fuser: as given, else bound to the role, else a non-candidate bound to the other role, else
    the dev-best (a warning when the chosen model is a candidate: it judges or fuses its own answer)."""
    if ref is None and ctx.role(role) is None:
        bound = ctx.role(other)
        if bound is not None and candidate_of(ctx, bound) is None:
            return bound
    handle = await pick_model(ctx, ref, role, device)
    own = candidate_of(ctx, handle)
    if own is not None:
        warn(ctx, f"text_llm_blender: the {role} '{handle.name}' is also candidate '{own.name}': it "
                  f"{'ranks' if role == 'ranker' else 'fuses'} its own answer (bind a non-candidate model to the "
                  f"'{role}' role, as the paper's separate ranker and fuser)")
    return handle


async def rank_candidates(ctx: RunContext, ranker: ModelHandle, examples: list, cands: list, k: int, tag: str,
                    verdict_tokens: int) -> tuple[dict[int, list], list[tuple[list[int], list[float]]]]:
    """Pairwise verdicts in both orders (one batched call) and, per example, the top-k candidate indices best
    first with every candidate's wins. cands[model][example]; failed candidates are left out."""
    n_models = len(cands)
    judge = ctx.sampling(max_new_tokens=verdict_tokens)
    pairs = [(j, a, b) for j in range(len(examples)) for a in range(n_models) for b in range(n_models)
             if a != b and not cands[a][j].failed and not cands[b][j].failed]
    replies = await ctx.generate([Call(ranker, pairwise_prompt(examples[j].prompt, cands[a][j].text, cands[b][j].text), judge)
                            for j, a, b in pairs], tag=tag)
    by_ex: dict[int, list[tuple[int, int, str | None, str]]] = {}
    for (j, a, b), r in zip(pairs, replies):
        by_ex.setdefault(j, []).append((a, b, None if r.failed else parse_preference(r.text), r.text))
    ranking = []
    for j in range(len(examples)):
        usable = [i for i in range(n_models) if not cands[i][j].failed]
        order, wins = rank(n_models, [(a, b, v) for a, b, v, _ in by_ex.get(j, [])])
        ranking.append(([i for i in order if i in usable][:k], wins))
    return by_ex, ranking


@method("text_llm_blender", params=Params, level="text", aliases=("llm_blender", "blender"), min_models=2,
        roles={"ranker": "compares candidates pairwise (default: a non-candidate fuser-role model, else dev-best)",
               "fuser": "fuses the top-k candidates (default: a non-candidate ranker-role model, else dev-best)"},
        paper="Jiang et al. 2023, LLM-Blender: ensembling LLMs with pairwise ranking and generative fusion",
        summary="Candidates from every model, ranked pairwise in both orders by a ranker, top-k fused by a fuser; "
                "ranker and fuser optionally LoRA-trained on dev")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    models, test = ctx.models, ctx.task.test
    k = max(1, min(params.top_k, len(models)))
    ranker = await choose_role(ctx, params.ranker, "ranker", "fuser", params.ranker_device)
    fuser = await choose_role(ctx, params.fuser, "fuser", "ranker", params.fuser_device)
    if params.train_ranker_on_dev or params.train_fuser_on_dev:
        with ctx.phase("dev"):
            ranker, fuser = await _train_on_dev(ctx, params, ranker, fuser, k)
    fuse = ctx.sampling(max_new_tokens=params.fuser_max_new_tokens) if params.fuser_max_new_tokens else None
    with ctx.phase("test"):
        cands = await ctx.answer_all(test)
        by_ex, ranking = await rank_candidates(ctx, ranker, test, cands, k, "rank pairs", params.ranker_max_new_tokens)
        finals = await ctx.generate([Call(fuser, fusion_prompt(ex.prompt, [cands[i][j].text for i in ranking[j][0]]), fuse)
                               for j, ex in enumerate(test)], tag="fuse")
    verdicts = [v for rows in by_ex.values() for _, _, v, _ in rows]
    ctx.metrics["ranker_parsed"] = sum(v is not None for v in verdicts) / max(1, len(verdicts))
    ctx.metrics["ranker_first_position_wins"] = sum(v == "A" for v in verdicts) / max(1, sum(v is not None for v in verdicts))
    own_r, own_f = candidate_of(ctx, ranker), candidate_of(ctx, fuser)
    ctx.metrics["blender_roles"] = {"ranker": ranker.name, "fuser": fuser.name,
                                          "ranker_is_candidate": own_r.name if own_r else None,
                                          "fuser_is_candidate": own_f.name if own_f else None}
    outputs = []
    for j, f in enumerate(finals):
        names = [m.name for m in models]
        trace = {"candidates": {m.name: cands[m.index][j].text for m in models}, "ranker": ranker.name,
                 "fuser": fuser.name,
                 "comparisons": [{"A": names[a], "B": names[b], "verdict": v,
                                  "winner": names[a] if v == "A" else names[b] if v == "B" else None, "reply": txt}
                                 for a, b, v, txt in by_ex.get(j, [])],
                 "wins": {names[i]: w for i, w in enumerate(ranking[j][1])},
                 "fused": [names[i] for i in ranking[j][0]]}
        outputs.append(Output(f.text, failed=f.failed, trace=trace))
    return outputs


async def fuser_training_data(ctx: RunContext, ranker: ModelHandle, fuser: ModelHandle, k: int, verdict_tokens: int = 128
                        ) -> tuple[list, list[dict[str, Any]]]:
    """(fuser SFT examples, what each holds): per dev item with a gold answer, the fusion prompt of the top-k dev
    candidates in the order `ranker` puts them (the order the fuser meets at test time) -> the gold answer."""
    answers, _ = await dev_answers(ctx)
    dev = list(ctx.task.dev)
    _, ranking = await rank_candidates(ctx, ranker, dev, answers, k, "rank dev pairs (fuser data)", verdict_tokens)
    data, shown = [], []
    for j, ex in enumerate(dev):
        gold, top = gold_completion(ex), ranking[j][0]
        if gold is not None and top:
            data.append((chat(fuser, fusion_prompt(ex.prompt, [answers[i][j].text for i in top])), gold))
            shown.append({"uid": ex.uid, "order": [ctx.models[i].name for i in top]})
    return data, shown


async def _train_on_dev(ctx: RunContext, params: Params, ranker: ModelHandle, fuser: ModelHandle,
                  k: int) -> tuple[ModelHandle, ModelHandle]:
    """LoRA-SFT the ranker and/or fuser on the dev candidates; return the handles to use on the test set."""
    if ctx.artifacts_dir is None:
        raise ConfigError("text_llm_blender: training needs a run directory for the adapters")
    answers, scores = await dev_answers(ctx)
    models = ctx.models
    report: dict[str, Any] = {}
    if params.train_ranker_on_dev:
        data = []
        for j, ex in enumerate(ctx.task.dev):
            for a in range(len(models)):
                for b in range(len(models)):
                    if a != b and scores[a][j] != scores[b][j] and not answers[a][j].failed and not answers[b][j].failed:
                        prompt = pairwise_prompt(ex.prompt, answers[a][j].text, answers[b][j].text)
                        data.append((chat(ranker, prompt), "A" if scores[a][j] > scores[b][j] else "B"))
        ranker, report["ranker"] = _train(ctx, params, ranker, data, "ranker")
    if params.train_fuser_on_dev:
        data, shown = await fuser_training_data(ctx, ranker, fuser, k, params.ranker_max_new_tokens)
        fuser, report["fuser"] = _train(ctx, params, fuser, data, "fuser")
        report["fuser"]["candidate_order"] = f"ranked by {ranker.name}"
        report["fuser"]["orders"] = shown
    ctx.metrics["training"] = report
    return ranker, fuser


def _train(ctx: RunContext, params: Params, base: ModelHandle, data: list, role: str) -> tuple[ModelHandle, dict]:
    if not data:
        return base, {"skipped": "no training examples on dev (every candidate scored the same)" if role == "ranker"
                      else "no dev example with a gold answer"}
    if base.spec.adapter:
        raise ConfigError(f"text_llm_blender: the {role} '{base.name}' already has a LoRA adapter; train a base model")
    p = params.model_dump()
    settings = SFTSettings(epochs=p[f"{role}_sft_epoch"], max_steps=params.sft_max_steps,
                           learning_rate=p[f"{role}_sft_learning_rate"], batch_size=p[f"{role}_sft_batch_size"],
                           grad_accum=p[f"{role}_sft_gradient_accumulation_steps"], max_length=params.sft_max_length,
                           lora_r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                           target_modules=list(params.lora_target_modules), seed=ctx.seed)
    out = ctx.artifacts_dir / f"{role}_lora"
    res = train_lora_sft(ctx.local(base).path, data, out, settings, device=ctx.local(base).device)
    trained = ctx.add_model(f"{base.name}+{role}-lora", base.spec.model_copy(update={"adapter": str(out), "name": None}))
    return trained, {"base": base.name, "model": trained.name, "adapter": str(out), "examples": len(data),
                     "steps": res.steps, "first_loss": res.losses[0] if res.losses else None,
                     "last_loss": res.losses[-1] if res.losses else None, "seconds": round(res.seconds, 2),
                     "reused": res.reused}

