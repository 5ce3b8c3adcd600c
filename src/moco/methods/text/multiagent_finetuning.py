"""text_multiagent_finetuning: Multiagent Finetuning (Subramaniam et al., 2025).

Every pool model is an agent with two copies of its weights: a generation model (answers first) and a critic
model (revises in later rounds). For `iterations` iterations, on the dev set:

1. Debate: round 0, every generation model answers; rounds 1..R-1, every critic model sees the question, its
   own previous answer and the other agents' previous answers and revises. `summary: llm` (the paper's
   default, and the authors' `--summarize`): a summarizer (the `summarizer` role, else the agent's own
   un-finetuned pool model, as the authors' base-model summarizer) first writes a summary of the others'
   answers and the critic sees that summary; `summary: concatenate` shows the answers themselves (the
   reference implementation; cheaper: no summary calls).
2. Consensus: the plurality of the final round's extracted answers (scorer keys; unparseable answers do not
   vote). Ties as `text_majority_vote`: `tie: dev-based` takes the tied answer of the agent whose pool model
   has the best dev score (dev scores computed only when a tie occurs; equal dev scores: a seeded random
   order), `random` a seeded draw, `lexicographic` the first key (the reference: "A" wins every tied
   multiple-choice item).
3. Datasets per agent: generation data = (question -> its own round-0 answer) where that answer is the
   consensus; critic data = (the final-round critic prompt it saw -> its own final answer) where that answer
   is the consensus, split into DC- (its round-0 answer was not the consensus: it was corrected) and DC+ (it
   was right from the start), mixed as max(1, |DC-|*w) + max(1, |DC+|*(1-w)) seeded samples.
4. LoRA SFT of each agent's generation and critic model on its own data (skipped when empty: the model
   stays as it was). Iteration k >= 2 continues training the adapter of iteration k-1 (the model of
   iteration k-1 is the starting point; the result is again one adapter on the base weights) — the reference
   trains a fresh adapter on top instead and loses the earlier one.

At test time the fine-tuned agents debate the same way and the plurality of the final round wins (same
tie-break). `iterations` defaults to 1: the paper's main comparison with the baselines (its Table 1) is after a
single finetuning iteration (L = 1), as the reference's default; its multi-iteration curves (Figures 1 and 3, on
MATH) run up to 5 iterations (`iterations: 5`).

Differences from the reference implementation, on purpose: the critic is trained on the very prompt it sees
at inference (the reference trains on the agent's own answer history but infers with the others' answers),
and its training target is its own consensus-matching answer, as in the paper (the reference uses the most
frequent consensus text, possibly another agent's). Reference key `rounds` = all rounds including round 0.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import method
from moco.methods.text.majority_vote import plurality
from moco.methods.trained import LoraParams, chat, record_training, train_target, trained_model
from moco.models.base import Capabilities, Message
from moco.models.pool import ModelHandle
from moco.tasks.base import Example
from moco.training import SFTSettings, train_lora_sft

CRITIC_MARK = "Answers of the other agents:"


class Params(LoraParams):
    iterations: int = Field(1, ge=1, le=10, description="fine-tuning iterations (debate -> datasets -> SFT); "
                            "paper: 1 in its Table 1 (its multi-iteration curves: up to 5)")
    rounds: int = Field(2, ge=2, le=10, description="debate rounds including the first answer (round 0 = "
                        "generation models, later rounds = critic models)")
    summary: Literal["llm", "concatenate"] = Field(
        "llm", description="what a critic sees of the other agents: an LLM summary of their answers (paper) or "
        "the answers themselves (reference)")
    tie: Literal["dev-based", "random", "lexicographic"] = Field(
        "dev-based", description="consensus tie-break: the best-dev agent's answer (equal dev: seeded random), "
        "a seeded random answer, or the lexicographically first (reference)")
    w: float = Field(0.5, ge=0.0, le=1.0, description="critic data mix: share drawn from DC- (corrected agents) "
                     "vs 1-w from DC+ (agents right from the start)")
    training_ratio: float = Field(1.0, gt=0.0, le=1.0, description="share of the dev set debated for training "
                                  "(a seeded subset)")
    sft_epochs: int = Field(1, ge=1, le=100, description="SFT epochs per model and iteration")
    sft_max_steps: int | None = Field(None, ge=1, description="cap on SFT optimizer steps (overrides epochs)")
    sft_learning_rate: float = Field(1e-5, gt=0.0, le=1.0, description="SFT learning rate (reference: 1e-5)")
    sft_batch_size: int = Field(1, ge=1, le=512, description="SFT batch size (reference: 1)")
    sft_grad_accum: int = Field(16, ge=1, le=1024, description="SFT gradient accumulation (reference: 16)")
    sft_max_length: int = Field(2048, ge=16, description="SFT max tokens per example (longer are cut)")


SUMMARY_MARK = "Summary of the other agents' answers:"


def critic_prompt(question: str, own: str, others: list[str], summary: str | None = None) -> str:
    """The critic's prompt: its own previous answer and the others' answers, or their summary."""
    if summary is not None:
        shown = f"{SUMMARY_MARK}\n{summary.strip() or '(empty)'}"
    else:
        shown = f"{CRITIC_MARK}\n" + ("\n\n".join(f"- {o}" for o in others) or "(none)")
    return (f"Question:\n{question}\n\nYour previous answer:\n{own}\n\n{shown}\n\n"
            "Check the other agents' answers and your own critically, then give a refined, correct answer. "
            "Keep the answer format the question asks for.")


def summarize_prompt(question: str, others: list[str]) -> str:
    """Ask for a summary of the other agents' answers (the paper's summarization step)."""
    shown = "\n\n".join(f"One agent's answer:\n{o.strip()}" for o in others) or "(none)"
    return (f"Question:\n{question}\n\nAnswers of several agents:\n\n{shown}\n\n"
            "Summarize the different answers: state each agent's answer and explain the reasoning behind it.")


class TieBreak:
    """Consensus tie-break as `text_majority_vote`: dev-based (dev scores computed at the first tie only),
    seeded random, or lexicographic. `log` records every tie (for the metrics)."""

    def __init__(self, ctx: RunContext, mode: str):
        self.ctx, self.mode = ctx, mode
        self.rng = random.Random(f"maft-tie:{ctx.seed}")
        self._rank: list[int] | None = None
        self.dev_scores: dict[str, float] | None = None

    async def rank(self) -> list[int]:
        if self._rank is None:
            from moco.selection import ranking

            dev = (await ranking(self.ctx, "tie_break"))[1]  # recorded in metrics dev_selection.tie_break
            self.dev_scores = {m.name: s for m, s in zip(self.ctx.models, dev)}
            jitter = [self.rng.random() for _ in dev]  # equal dev scores: a seeded random order
            order = sorted(range(len(dev)), key=lambda i: (-dev[i], jitter[i]))
            self._rank = [order.index(i) for i in range(len(dev))]
        return self._rank

    async def __call__(self, votes: list[str | None]) -> tuple[str | None, list[str]]:
        counts = Counter(v for v in votes if v is not None)
        top = max(counts.values(), default=0)
        tied = sorted(a for a, c in counts.items() if c == top)
        if len(tied) <= 1 or self.mode == "lexicographic":
            return (tied[0] if tied else None), tied
        if self.mode == "random":
            return self.rng.choice(tied), tied
        return plurality(votes, "dev-based", await self.rank(), self.rng)


@dataclass
class Debate:
    """texts[j][r][n], prompts[j][r][n] (messages the model saw), models[r][n] = model name per round/agent;
    summaries[j][r][n] = {"by": summarizer, "of": agents, "text": summary} when the critic saw a summary."""

    texts: list[list[list[str]]]
    prompts: list[list[list[list[Message]]]]
    saw: list[list[list[list[str]]]]
    models: list[list[str]]
    votes: list[list[str | None]] = field(default_factory=list)  # votes[j][n] from the final round
    consensus: list[str | None] = field(default_factory=list)
    tied: list[list[str]] = field(default_factory=list)  # tied[j]: the tied answers (empty: no tie)
    summaries: list[list[list[dict | None]]] = field(default_factory=list)


async def debate(ctx: RunContext, gens: list[ModelHandle], critics: list[ModelHandle], examples: list[Example],
           rounds: int, tag: str, tie: TieBreak | None = None,
           summarizers: list[ModelHandle] | None = None) -> Debate:
    """Round 0 by the generation models, then rounds 1..R-1 by the critics; each round is one batched call
    (preceded, with `summarizers` (one per agent), by one batched call summarizing the others' answers)."""
    n, m = len(gens), len(examples)
    tie = tie or TieBreak(ctx, "lexicographic")
    texts = [[[] for _ in range(rounds)] for _ in range(m)]
    prompts = [[[] for _ in range(rounds)] for _ in range(m)]
    saw = [[[] for _ in range(rounds)] for _ in range(m)]
    summaries: list[list[list[dict | None]]] = [[[None] * n for _ in range(rounds)] for _ in range(m)]
    models: list[list[str]] = []
    for r in range(rounds):
        who = gens if r == 0 else critics
        models.append([h.name for h in who])
        if r and summarizers:
            asks = [(i, j) for i in range(n) for j in range(m)]
            outs = await ctx.generate([Call(summarizers[i], summarize_prompt(
                examples[j].prompt, [texts[j][r - 1][o] for o in range(n) if o != i])) for i, j in asks],
                tag=f"{tag} round {r} summaries")
            for (i, j), resp in zip(asks, outs):
                summaries[j][r][i] = {"by": summarizers[i].name, "of": [models[r - 1][o] for o in range(n) if o != i],
                                      "text": resp.text}
        calls, meta = [], []
        for i, h in enumerate(who):
            for j, ex in enumerate(examples):
                if r == 0:
                    text, seen = ex.prompt, []
                else:
                    others = [o for o in range(n) if o != i]
                    summ = summaries[j][r][i]
                    text = critic_prompt(ex.prompt, texts[j][r - 1][i], [texts[j][r - 1][o] for o in others],
                                         summ["text"] if summ else None)
                    seen = [models[r - 1][o] for o in others]
                calls.append(Call(h, text))
                meta.append((i, j, chat(h, text), seen))
        out = await ctx.generate(calls, tag=f"{tag} round {r}")
        for (_i, j, msgs, seen), resp in zip(meta, out):  # agent-major order: texts[j][r][i] lands at index i
            texts[j][r].append(resp.text)
            prompts[j][r].append(msgs)
            saw[j][r].append(seen)
    d = Debate(texts, prompts, saw, models, summaries=summaries)
    for j, ex in enumerate(examples):
        votes = [ctx.scorer.extract(ex, t) for t in texts[j][-1]]
        winner, tied = await tie(votes)
        d.votes.append(votes)
        d.consensus.append(winner)
        d.tied.append(tied if len(tied) > 1 else [])
    return d


def build_datasets(ctx: RunContext, d: Debate, examples: list[Example], n_agents: int, w: float,
                   rng) -> list[dict[str, Any]]:
    """Per agent: generation data, DC- and DC+ critic data, and the mixed critic set actually trained on."""
    out = []
    for i in range(n_agents):
        gen, minus, plus = [], [], []
        for j, ex in enumerate(examples):
            cons = d.consensus[j]
            if cons is None:
                continue
            first = ctx.scorer.extract(ex, d.texts[j][0][i])
            if first == cons:
                gen.append((d.prompts[j][0][i], d.texts[j][0][i], j))
            if d.votes[j][i] == cons:
                (plus if first == cons else minus).append((d.prompts[j][-1][i], d.texts[j][-1][i], j))
        take_minus = min(len(minus), max(1, int(len(minus) * w))) if minus else 0
        take_plus = min(len(plus), max(1, int(len(plus) * (1 - w)))) if plus else 0
        critic = rng.sample(minus, take_minus) + rng.sample(plus, take_plus)
        out.append({"gen": gen, "dc_minus": minus, "dc_plus": plus, "critic": critic})
    return out


def _write_jsonl(path: Path, rows: list[tuple[list[Message], str, int]], examples: list[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for msgs, completion, j in rows:
            fh.write(json.dumps({"uid": examples[j].uid, "messages": msgs, "completion": completion}) + "\n")


@method("text_multiagent_finetuning", params=Params, level="text", aliases=("multiagent_finetuning", "maft"),
        min_models=2, objective_task_only=True, trainable=True, needs=Capabilities(chat=True, lora=True),
        roles={"summarizer": "summarizes the other agents' answers for a critic (default: the agent's own "
                             "un-finetuned pool model)"},
        paper="Subramaniam et al. 2025, Multiagent Finetuning: Self Improvement with Diverse Reasoning Chains",
        summary="Agents debate on dev; consensus answers build generation/critic SFT data per agent; "
                "the fine-tuned agents debate and vote on test")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    agents = list(ctx.models)
    n = len(agents)
    gens, critics = list(agents), list(agents)
    root = Path(ctx.artifacts_dir or ".") / "multiagent_finetuning"
    rng = ctx.rng
    dev = list(ctx.task.dev)
    if not dev:
        from moco.errors import DataError

        raise DataError(f"text_multiagent_finetuning needs a dev split to debate on; task {ctx.task.name} has none")
    if params.training_ratio < 1.0:
        dev = sorted(rng.sample(dev, max(1, round(len(dev) * params.training_ratio))), key=lambda e: e.index)
    settings = SFTSettings(epochs=params.sft_epochs, max_steps=params.sft_max_steps,
                           learning_rate=params.sft_learning_rate, batch_size=params.sft_batch_size,
                           grad_accum=params.sft_grad_accum, max_length=params.sft_max_length, seed=ctx.seed,
                           **params.lora_settings())
    log: list[dict[str, Any]] = []
    tie = TieBreak(ctx, params.tie)
    summarizers = None
    if params.summary == "llm":
        summarizers = [ctx.role("summarizer") or a for a in agents]
    with ctx.phase("dev"):
        for it in range(1, params.iterations + 1):
            d = await debate(ctx, gens, critics, dev, params.rounds, tag=f"iteration {it}", tie=tie, summarizers=summarizers)
            data = build_datasets(ctx, d, dev, n, params.w, rng)
            it_dir = root / f"iteration_{it}"
            entry: dict[str, Any] = {"iteration": it, "debaters": d.models,
                                     "consensus": {ex.uid: c for ex, c in zip(dev, d.consensus)},
                                     "ties": {ex.uid: t for ex, t in zip(dev, d.tied) if t},
                                     "votes": {ex.uid: dict(zip([a.name for a in agents], v)) for ex, v in zip(dev, d.votes)},
                                     "agents": {}}
            new_gens, new_critics = list(gens), list(critics)
            for i, a in enumerate(agents):
                ds = data[i]
                info: dict[str, Any] = {k: [dev[j].uid for _, _, j in ds[k]] for k in ("gen", "dc_minus", "dc_plus", "critic")}
                base, _, device = train_target(ctx, a)
                for kind, rows, current, slot in (("gen", ds["gen"], gens[i], new_gens),
                                                  ("critic", ds["critic"], critics[i], new_critics)):
                    _write_jsonl(it_dir / f"{kind}_data_agent_{i}.jsonl", rows, dev)
                    if not rows:
                        info[f"{kind}_model"] = current.name + " (kept: no data)"
                        continue
                    res = train_lora_sft(base, [(msgs, text) for msgs, text, _ in rows],
                                         it_dir / f"{kind}_model_agent_{i}", settings, device=device,
                                         init_adapter=current.spec.adapter)
                    slot[i] = trained_model(ctx, a, res.adapter_dir, f"{a.name}/{kind}@{it}")
                    info[f"{kind}_model"] = slot[i].name
                    info[f"{kind}_training"] = record_training(ctx, slot[i].name, res, examples=len(rows),
                                                               continued_from=current.spec.adapter)
                entry["agents"][a.name] = info
            gens, critics = new_gens, new_critics
            log.append(entry)
    test = list(ctx.task.test)
    with ctx.phase("test"):
        d = await debate(ctx, gens, critics, test, params.rounds, tag="test", tie=tie, summarizers=summarizers)
    ctx.metrics["multiagent_finetuning"] = log
    ctx.metrics["multiagent_finetuning_setup"] = {
        "summary": params.summary, "summarizers": [s.name for s in summarizers] if summarizers else None,
        "tie": params.tie, "tie_dev_scores": tie.dev_scores}
    outputs = []
    for j, _ex in enumerate(test):
        winner = d.consensus[j]
        text = next((d.texts[j][-1][i] for i in range(n) if d.votes[j][i] == winner and winner), "")
        rounds = [{a.name: {"model": d.models[r][i], "output": d.texts[j][r][i], "saw": d.saw[j][r][i],
                            **({"summary": d.summaries[j][r][i]} if d.summaries[j][r][i] else {})}
                   for i, a in enumerate(agents)} for r in range(params.rounds)]
        trace = {"rounds": rounds, "votes": dict(zip([a.name for a in agents], d.votes[j])), "consensus": winner,
                 "tied": d.tied[j]}
        outputs.append(Output(text, answer=winner, use_answer=True, trace=trace))
    return outputs
