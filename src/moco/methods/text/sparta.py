"""text_sparta: SPARTA alignment — models align each other through combat (Jiang et al., 2025).

The dev set is split in two: the last `selection_share` of it (default half) is held out to select the final
model, and the combat instructions are the first `num_instructions` of the rest — the preference data never
contains the items that pick the winner (the reference used the same dev prompts for both).

Each of `num_iterations` iterations, on the combat instructions:

1. Pairing: instructions are dealt in loops of N (the pool size); in each loop the models are shuffled, the
   model at position p takes instruction p and an opponent — a random one with probability
   `random_match_prob`, else a random pick among the `num_opponents` models with the closest rating.
2. Combat: both models of every pair answer the instruction (one batched call).
3. Judging: every model outside a pair scores each of its two responses independently, 1–10, as a JSON
   object (`judge_rounds` samples each, averaged). Replies without a readable score are recorded as failures
   and the judge is left out of that pair — never counted as a 5.
4. Reputation: pair by pair, a response's score is the mean of its judges' scores weighted by the judges'
   current ratings (earlier duels of the iteration already moved them, as in the paper's duel-by-duel loop;
   the pairing itself uses the ratings at the start of the iteration, so all duels are generated and judged
   in one batch); the pair's winner gains rating and the loser loses it by an Elo-like rule with a
   normal-CDF term:
   delta_i = K * (+-|score diff|) * tanh(sigma_i) * max(|Phi(dR/s) - Phi(-dR/s)|, epsilon) / scaling_factor,
   dR = R_i - R_j, s = sqrt(sigma_i^2 + sigma_j^2), K = max(min_k, initial_k * decay_rate^(pairs/decay_steps)),
   R >= 10, sigma_i = max(std of its last `window_size` deltas, min_deviation); start at R=100, sigma=0.5.
   Ratings are keyed by model name, so matching by rating works in every iteration.
5. Preferences: chosen = the winner's response, rejected = the loser's (ties and undecided pairs dropped).
6. Every model is trained on all preferences with LoRA DPO, continuing its adapter of the previous
   iteration (whose frozen copy is the DPO reference, as merging it first would give).

Selection: every model of every iteration and, by default, every untrained base model answers the held-out
selection items; the best answers the test set, so a DPO round that hurts loses to the model it started from
(ties go to the trained models, earliest iteration first; `include_base_models: false` = the reference, which
only compares trained models). State
(judged pairs, preference pairs, ratings) is written per iteration under the run's artifacts folder.
Needs at least 3 models (a pair needs a judge outside it).
"""
from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.errors import DataError
from moco.methods.registry import method
from moco.methods.trained import LoraParams, chat, record_training, train_target, trained_model
from moco.models.base import Capabilities
from moco.models.pool import ModelHandle
from moco.selection import candidate_scores, choose
from moco.training import DPOSettings, train_lora_dpo

JUDGE_PREFIX = '{"score": '


class Params(LoraParams):
    num_iterations: int = Field(3, ge=1, le=20, description="combat + DPO iterations")
    num_instructions: int = Field(500, ge=1, description="dev prompts used as combat instructions (the first N "
                                  "outside the selection items)")
    random_match_prob: float = Field(0.2, ge=0.0, le=1.0, description="chance of a random opponent instead of "
                                     "a closely rated one")
    num_opponents: int = Field(3, ge=1, description="how many closest-rated models an opponent is drawn from")
    judge_rounds: int = Field(1, ge=1, le=10, description="independent judge samples per response, averaged")
    judge_max_new_tokens: int = Field(32, ge=1, le=1024, description="length of a judge's reply")
    judge_prefix: bool = Field(True, description=f"start judge replies with '{JUDGE_PREFIX}' so that small "
                               "models reply with a number (the reference only asks for the JSON)")
    initial_k: float = Field(10.0, gt=0, description="initial K factor of the rating update")
    min_k: float = Field(5.0, gt=0, description="K never decays below this")
    decay_rate: float = Field(0.9, gt=0, le=1.0, description="K decays by this factor every `decay_steps` pairs")
    decay_steps: int = Field(10, ge=1, description="pairs per K decay step")
    window_size: int = Field(10, ge=1, description="recent rating changes used for a model's deviation")
    min_deviation: float = Field(0.1, gt=0, description="floor of a model's rating deviation")
    epsilon: float = Field(0.01, gt=0, description="floor of the normal-CDF term (equal ratings still move)")
    scaling_factor: float = Field(20.0, gt=0, description="divides every rating change")
    score_type: Literal["normal"] = Field("normal", description="judge weighting: ratings as weights (the "
                                          "reference's 'dynamic'/'static' schedules are not implemented)")
    freeze_ratings: bool = Field(False, description="keep every rating at its initial value")
    judge_batch_size: int = Field(8, ge=1, description="reference key, no effect: judge calls are batched by the "
                                  "backend like every call")
    current_iteration: int = Field(0, ge=0, le=0, description="reference key for resuming; a MoCo run resumes "
                                   "from its run directory instead, so only 0 is accepted")
    base_dir: str | None = Field(None, description="reference key, no effect: state and adapters go in the run "
                                 "directory's artifacts (the reference's folder was shared across tasks)")
    debug: bool = Field(False, description="reference key, no effect: judged pairs and ratings are always saved")
    include_base_models: bool = Field(True, description="let the untrained models compete in the final selection "
                                      "(paper: a round that hurts can lose; reference: false)")
    selection_share: float = Field(0.5, ge=0.0, lt=1.0, description="share of the dev set (its last items) held "
                                   "out from the combat instructions to select the final model; 0 = the reference "
                                   "(instructions and selection share the whole dev set)")
    dpo_learning_rate: float = Field(1e-6, gt=0, le=1.0, description="DPO learning rate (reference: 1e-6)")
    dpo_beta: float = Field(0.1, gt=0, description="DPO beta (trl default, as the reference)")
    dpo_epochs: int = Field(1, ge=1, le=100, description="DPO epochs per iteration (reference: 1)")
    dpo_max_steps: int | None = Field(None, ge=1, description="cap on DPO optimizer steps (overrides epochs)")
    dpo_batch_size: int = Field(1, ge=1, le=512, description="DPO batch size (reference: 1)")
    dpo_grad_accum: int = Field(16, ge=1, le=1024, description="DPO gradient accumulation (reference: 16)")
    dpo_max_length: int = Field(1024, ge=16, description="DPO max tokens of prompt + response")


def judge_prompt(instruction: str, response: str) -> str:
    return ("Please act as an impartial judge and evaluate the quality of the response to the instruction below: "
            "its helpfulness, correctness, relevance and level of detail.\n\n"
            f"[Instruction]\n{instruction}\n\n[Response]\n{response}\n\n"
            'Rate the response from 1 (worst) to 10 (best). Reply with only a JSON object: {"score": <1-10>}')


_SCORE_PATTERNS = (
    r'\{[^{}]*"score"\s*:\s*"?(\d+(?:\.\d+)?)',
    r"\bscore\b\s*(?:is|of|:|=)?\s*(\d+(?:\.\d+)?)",
    r"\b(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b",
    r"^\s*(\d+(?:\.\d+)?)\s*\.?\s*$",
)


def parse_score(text: str) -> float | None:
    """The 1-10 score in a judge's reply (JSON first, then common phrasings), or None."""
    for pattern in _SCORE_PATTERNS:
        m = re.search(pattern, text, re.I)
        if m:
            v = float(m.group(1))
            return v if 1.0 <= v <= 10.0 else None
    return None


@dataclass
class Ratings:
    """Reputation of every model, keyed by its (stable) pool name."""

    p: Params
    score: dict[str, float]
    deviation: dict[str, float]
    deltas: dict[str, list[float]] = field(default_factory=dict)
    pairs: int = 0

    @classmethod
    def start(cls, names: list[str], p: Params) -> "Ratings":
        return cls(p, {n: 100.0 for n in names}, {n: 0.5 for n in names}, {n: [] for n in names})

    def update(self, winner: str, loser: str, diff: float) -> tuple[float, float]:
        """Move both ratings after a decided pair; returns (winner delta, loser delta)."""
        p = self.p
        k = max(p.min_k, p.initial_k * p.decay_rate ** (self.pairs / p.decay_steps))
        self.pairs += 1
        if p.freeze_ratings:
            return 0.0, 0.0
        sigma = math.sqrt(self.deviation[winner] ** 2 + self.deviation[loser] ** 2)

        def delta(me: str, other: str, sign: float) -> float:
            z = (self.score[me] - self.score[other]) / sigma
            phi = abs(_phi(z) - _phi(-z))
            return k * sign * abs(diff) * math.tanh(self.deviation[me]) * max(phi, p.epsilon) / p.scaling_factor

        dw, dl = delta(winner, loser, 1.0), delta(loser, winner, -1.0)
        for name, d in ((winner, dw), (loser, dl)):
            self.score[name] = max(10.0, self.score[name] + d)
            hist = self.deltas.setdefault(name, [])
            hist.append(d)
            recent = hist[-p.window_size:]
            self.deviation[name] = max(statistics.pstdev(recent) if len(recent) > 1 else 0.0, p.min_deviation)
        return dw, dl

    def closest(self, name: str, others: list[str], n: int) -> list[str]:
        return sorted(others, key=lambda o: (abs(self.score[o] - self.score[name]), others.index(o)))[:n]

    def snapshot(self) -> dict[str, Any]:
        return {"score": dict(self.score), "deviation": dict(self.deviation), "pairs": self.pairs}


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def pair_up(names: list[str], n_instructions: int, ratings: Ratings, p: Params, rng) -> list[dict[str, Any]]:
    """One pair per instruction: loops of N instructions, models shuffled per loop, opponents by rating."""
    pairs = []
    order: list[str] = []
    for i in range(n_instructions):
        pos = i % len(names)
        if pos == 0:
            order = list(names)
            rng.shuffle(order)
        first = order[pos]
        others = [o for o in names if o != first]
        if rng.random() < p.random_match_prob:
            opponent, how = rng.choice(others), "random"
        else:
            opponent, how = rng.choice(ratings.closest(first, others, p.num_opponents)), "closest"
        pairs.append({"instruction": i, "models": [first, opponent], "match": how})
    return pairs


async def judge_pairs(ctx: RunContext, pairs: list[dict], current: dict[str, ModelHandle], instructions: list[str],
                p: Params, tag: str) -> None:
    """Every model outside a pair scores both responses (one batched call for all pairs); fills pair['judges'],
    ['judge_scores'] (judge -> mean score of each side) and ['parse_failures']."""
    sampling = ctx.sampling(max_new_tokens=p.judge_max_new_tokens)
    prefix = JUDGE_PREFIX if p.judge_prefix else ""
    calls, where = [], []
    for k, pair in enumerate(pairs):
        judges = [n for n in current if n not in pair["models"]]
        pair["judges"] = judges
        for judge in judges:
            for side in (0, 1):
                for r in range(p.judge_rounds):
                    text = judge_prompt(instructions[pair["instruction"]], pair["responses"][side])
                    calls.append(Call(current[judge], text, sampling, replica=r, prefix=prefix))
                    where.append((k, judge, side))
    replies = await ctx.generate(calls, tag=tag)
    raw: dict[tuple[int, str, int], list[float | None]] = {}
    for (k, judge, side), rep in zip(where, replies):
        raw.setdefault((k, judge, side), []).append(None if rep.failed else parse_score(prefix + rep.text))
    for k, pair in enumerate(pairs):
        pair["judge_scores"], pair["parse_failures"] = {}, []
        for judge in pair["judges"]:
            sides = [[v for v in raw[(k, judge, s)] if v is not None] for s in (0, 1)]
            pair["parse_failures"] += [judge] * sum(v is None for s in (0, 1) for v in raw[(k, judge, s)])
            if sides[0] and sides[1]:  # a judge counts only when it scored both responses
                pair["judge_scores"][judge] = [sum(v) / len(v) for v in sides]


def decide(pair: dict, ratings: Ratings) -> None:
    """The pair's scores = its judges' scores weighted by their ratings *now* (pairs are decided in order, so a
    judge whose rating moved in an earlier duel already has more or less say); fills ['judge_weights'],
    ['scores'], ['winner'], ['outcome'] and, when decided, ['diff']."""
    weights = {j: ratings.score[j] for j in pair["judge_scores"]}
    total = sum(weights.values())
    pair["judge_weights"] = weights
    if total == 0:
        pair.update(scores=None, winner=None, outcome="undecided")
        return
    scores = [sum(weights[j] * s[side] for j, s in pair["judge_scores"].items()) / total for side in (0, 1)]
    pair["scores"] = scores
    if scores[0] == scores[1]:
        pair.update(winner=None, outcome="tie")
    else:
        win = 0 if scores[0] > scores[1] else 1
        pair.update(winner=pair["models"][win], outcome="decided", diff=abs(scores[0] - scores[1]))


@method("text_sparta", params=Params, level="text", aliases=("sparta", "sparta_alignment"), min_models=3,
        trainable=True, needs=Capabilities(chat=True, lora=True),
        paper="Jiang et al. 2025, SPARTA alignment: Collectively aligning multiple language models through combat",
        summary="Pairs of models answer dev instructions, the others judge weighted by reputation; every model "
                "is DPO-trained on the preferences; the best of base and trained models on held-out dev answers")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    base = {h.name: h for h in ctx.models}
    names = list(base)
    if len(names) < 3:
        raise DataError("text_sparta needs at least 3 models: a pair needs a judge outside it")
    combat, held_out = split_dev(list(ctx.task.dev), params.selection_share, params.num_instructions)
    if not combat:
        raise DataError(f"text_sparta needs dev prompts as instructions; task {ctx.task.name} has "
                        f"{len(ctx.task.dev)} dev items ({len(held_out)} held out for the final selection)")
    instructions = [ex.prompt for ex in combat]
    root = Path(ctx.artifacts_dir or ".") / "sparta"
    settings = DPOSettings(epochs=params.dpo_epochs, max_steps=params.dpo_max_steps,
                           learning_rate=params.dpo_learning_rate, beta=params.dpo_beta,
                           batch_size=params.dpo_batch_size, grad_accum=params.dpo_grad_accum,
                           max_length=params.dpo_max_length, seed=ctx.seed, **params.lora_settings())
    ratings = Ratings.start(names, params)
    current = dict(base)
    generations: list[list[ModelHandle]] = []
    summary: list[dict[str, Any]] = []
    with ctx.phase("dev"):
        for it in range(1, params.num_iterations + 1):
            it_dir = root / f"iteration_{it}"
            it_dir.mkdir(parents=True, exist_ok=True)
            before = ratings.snapshot()
            pairs = pair_up(names, len(instructions), ratings, params, ctx.rng)
            answers = await ctx.generate([Call(current[m], instructions[pr["instruction"]]) for pr in pairs for m in pr["models"]],
                                   tag=f"iteration {it} combat")
            for k, pr in enumerate(pairs):
                pr["responses"] = [answers[2 * k].text, answers[2 * k + 1].text]
                pr["answered_by"] = [current[m].name for m in pr["models"]]
            await judge_pairs(ctx, pairs, current, instructions, params, tag=f"iteration {it} judging")
            prefs = []
            for pr in pairs:  # duel by duel: weigh the judges, decide, move the ratings
                decide(pr, ratings)
                if pr["outcome"] != "decided":
                    continue
                win = pr["models"].index(pr["winner"])
                pr["rating_deltas"] = ratings.update(pr["winner"], pr["models"][1 - win], pr["diff"])
                prefs.append({"instruction": pr["instruction"], "prompt": instructions[pr["instruction"]],
                              "chosen": pr["responses"][win], "rejected": pr["responses"][1 - win],
                              "chosen_model": pr["models"][win], "rejected_model": pr["models"][1 - win],
                              "score_diff": pr["diff"], "weighted_scores": pr["scores"]})
            (it_dir / "judged_pairs.json").write_text(json.dumps(pairs, indent=1))
            (it_dir / "preference_pairs.json").write_text(json.dumps(prefs, indent=1))
            (it_dir / "model_info.json").write_text(json.dumps(ratings.snapshot(), indent=1))
            trained: dict[str, Any] = {}
            if prefs:
                for name in names:
                    h = current[name]
                    base_dir, _, device = train_target(ctx, base[name])
                    data = [(chat(h, pf["prompt"]), pf["chosen"], pf["rejected"]) for pf in prefs]
                    res = train_lora_dpo(base_dir, data, it_dir / f"dpo_{_safe(name)}", settings, device=device,
                                         init_adapter=h.spec.adapter)
                    current[name] = trained_model(ctx, base[name], res.adapter_dir, f"{name}/sparta@{it}")
                    trained[name] = record_training(ctx, current[name].name, res, pairs=len(prefs),
                                                    continued_from=h.spec.adapter, margins=res.margins[-1:])
            generations.append([current[n] for n in names])
            outcomes = [pr["outcome"] for pr in pairs]
            summary.append({"iteration": it, "pairs": len(pairs), "decided": outcomes.count("decided"),
                            "ties": outcomes.count("tie"), "undecided": outcomes.count("undecided"),
                            "parse_failures": sum(len(pr["parse_failures"]) for pr in pairs),
                            "preferences": len(prefs), "ratings_before": before, "ratings_after": ratings.snapshot(),
                            "trained": {n: t["label"] for n, t in trained.items()}})
        if params.include_base_models:  # last: a base model wins only when strictly better
            generations.append(list(base.values()))
        candidates = list({h.name: h for gen in generations for h in gen}.values())
        items = await candidate_scores(ctx, candidates, held_out, "selection")  # greedy or `dev_repeats` samples
    dev_score = {h.name: sum(s) / len(s) for h, s in zip(candidates, items)}
    # recorded in metrics `dev_selection.final_model` (every candidate's interval); ties: the earliest
    best = candidates[choose(ctx, "final_model", [h.name for h in candidates], items)]
    ctx.metrics["sparta"] = {"iterations": summary, "dev_scores": dev_score, "selected": best.name,
                                   "final_ratings": ratings.snapshot(),
                                   "instruction_items": [ex.uid for ex in combat],
                                   "selection_items": [ex.uid for ex in held_out],
                                   "base_models_in_selection": params.include_base_models}
    with ctx.phase("test"):
        finals = await ctx.ask(best, [ex.prompt for ex in ctx.task.test], tag="answer")
    return [Output(r.text, failed=r.failed, trace={"model": best.name, "dev_score": dev_score[best.name]})
            for r in finals]


def split_dev(dev: list, share: float, num_instructions: int) -> tuple[list, list]:
    """(combat instruction items, selection items): the last ceil(share * |dev|) items select the final model,
    the first `num_instructions` of the others are the instructions; share 0: both use the whole dev set."""
    if share <= 0:
        return dev[:num_instructions], dev
    held = math.ceil(share * len(dev))
    return dev[: len(dev) - held][:num_instructions], dev[len(dev) - held:]


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)
