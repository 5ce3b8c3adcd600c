"""api_mentor_collab: MentorCollab — at sampled positions a mentor proposes a short segment; a judge decides.

Wang, Wang, Feng, Hajishirzi & Tsvetkov, "MentorCollab: Selective Large-to-Small Inference-Time Guidance for
Efficient Reasoning" (2026). A generator writes word by word. Before each word, with probability
`decision_proportion` (seeded per example), the mentor is consulted:

1. both models propose their next word from the same text; if the words are equal, the generator goes on;
2. otherwise each writes a lookahead segment of `patch_size` tokens from there: A (generator), B (mentor);
3. a judge picks the segment that is appended for both models:
   * `free`: the generator itself, asked (as a continuation of the text so far) which option leads to a
     correct answer; its next-token logits for "A" and "B" after "My choice: Option (" decide. By default it
     is asked twice, with each segment once in slot A (`option_order: both`), and the two preferences are
     averaged, so a judge that favours one slot does not favour one model (the reference always puts the
     generator's segment in A); `seeded` draws one order per decision;
   * `train`: a small MLP on the generator's last hidden state at the end of that question; it is trained
     here on dev rollouts (the reference downloads a pre-trained one): at divergence points found while
     decoding the dev set, both segments are completed by the generator alone and scored by the task scorer;
     a point is labelled "generator" or "mentor" where one completion scores higher (ties are dropped).
4. Decoding ends at an end-of-sequence token of the model whose text is used (the reference never checks) or
   after max_new_tokens generator tokens.

The reference's `decision_proportion` default 0.25 is compared with randint(1, 100), so the mentor is never
consulted; here it is a probability (0.25 = a quarter of the words; values above 1 are read as percentages,
the reference's documented unit). Models of different families work: text is handed over and re-tokenised
when the vocabularies differ. Each model keeps its KV cache; a segment that is not chosen is cut back out
of its cache, and the judging question is appended and cut back the same way.
"""
from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from moco.cache import cache_dir
from moco.context import Call, Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.models.base import Capabilities, GenRequest, SamplingParams
from moco.models.pool import ModelHandle
from moco.models.stepper import (Program, Seeds, Stepper, run_rows, same_vocabulary, write_tokens, write_word)
from moco.models.token_level import Member, Outcome, TokenLevelBackend, add_segment, outcomes, usage_of
from moco.models.token_model import TokenModel
from moco.training.classifier import BranchClassifier, train_branch_classifier

QUESTION = ("\n\n(Which of the two continuations below leads to a correct answer?)\n"
            "Option (A): {a}\nOption (B): {b}\n")
ANCHOR = "My choice: Option ("


class Params(MethodParams):
    generator: int | str = Field(0, description="the model that writes (index or name)")
    mentor: int | str = Field(1, description="the model consulted at sampled positions (index or name)")
    decision_proportion: float = Field(0.25, ge=0.0, le=100.0, description="probability of consulting the mentor "
                                       "before a word (values > 1 are percentages, the reference's unit)")
    patch_size: int = Field(16, ge=1, le=256, description="tokens of each lookahead segment")
    mode: Literal["free", "train"] = Field("free", description="free: the generator judges; train: an MLP "
                                           "trained on dev rollouts judges")
    option_order: Literal["both", "seeded", "fixed"] = Field(
        "both", description="free mode: the judge sees the segments in both A/B orders and their preferences are "
        "averaged (no position bias); seeded: one random order per decision; fixed: the generator's always A "
        "(the reference)")
    mlp_threshold: float = Field(0.5, ge=0.0, le=1.0, description="train mode: MLP score above it keeps the "
                                 "generator's segment")
    train_points: int = Field(64, ge=1, description="train mode: most divergence points labelled on dev")
    mlp_epochs: int = Field(200, ge=1, description="train mode: MLP training passes (full batch)")
    mlp_learning_rate: float = Field(1e-3, gt=0)
    do_sample: bool = Field(False, description="sample with the run's temperature/top_p (reference: greedy)")
    max_word_tokens: int = Field(10, ge=1, le=64, description="longest word taken at once (reference: 10)")
    kv_cache: bool = Field(True, description="reuse each model's KV cache (False: recompute, same output)")
    reference_mlp_folder: str | None = Field(None, alias="task", description="reference only (its downloaded "
                                             "MLP's folder, General/Math); unused: the MLP is trained on dev here")

    @field_validator("decision_proportion")
    @classmethod
    def _percent(cls, v: float) -> float:
        return v / 100.0 if v > 1.0 else v


def _question_ids(st: Stepper, a: str, b: str, anchor: bool) -> list[int]:
    return st.tokens(QUESTION.format(a=a.strip(), b=b.strip()) + (ANCHOR if anchor else ""))


def _option_ids(st: Stepper) -> tuple[int, int]:
    return st.tokens("A")[0], st.tokens("B")[0]


def mentor_program(row: int, gen: Stepper, mentor: Stepper, *, sampling: SamplingParams, seeds: Seeds,
                   rng: random.Random, proportion: float, patch: int, budget: int, max_word: int,
                   shared_vocab: bool, judge: Any, collect: list | None, result: dict[str, Any],
                   option_order: str = "both") -> Program:
    """MentorCollab for one row. `judge(features)` -> (keep generator?, score) in train mode, None in free mode
    (the generator judges; `option_order` says in which A/B slots it sees the two segments, `slot_orders`).
    With `collect` (dev rollouts) the generator's segment is always kept and each divergence point is stored."""
    decisions: list[dict[str, Any]] = []
    segments: list[list[str]] = []
    result.update(finish="length", decisions=decisions, segments=segments, consulted=0)
    g_sync = gen.prompt_len[row]  # the mentor has seen the generator's text up to gen.ids[:g_sync]

    def written() -> int:
        return len(gen.ids[row]) - gen.prompt_len[row]

    def sync_mentor(upto: int) -> None:
        nonlocal g_sync
        if shared_vocab:
            mentor.append(row, gen.ids[row][g_sync:upto])
        else:
            mentor.append(row, mentor.tokens(gen.text_of(row, g_sync, upto)))
        g_sync = upto

    for _step in range(budget + 1):
        if written() >= budget:
            break
        consult = rng.random() < proportion
        w0 = len(gen.ids[row])
        ended = yield from write_word(gen, row, sampling, seeds[row], max_tokens=min(max_word, budget - written()))
        if not consult:
            if ended:
                result["finish"] = "stop"
                break
            add_segment(segments, "generator", gen.text_of(row, w0))
            continue
        result["consulted"] += 1
        sync_mentor(w0)
        m0 = len(mentor.ids[row])
        m_ended = yield from write_word(mentor, row, sampling, seeds[row], max_tokens=max_word)
        word_g, word_m = gen.text_of(row, w0), mentor.text_of(row, m0)
        if word_g == word_m and ended == m_ended:  # the models agree: the generator goes on
            g_sync = len(gen.ids[row])
            if ended:
                result["finish"] = "stop"
                break
            add_segment(segments, "generator", word_g)
            continue
        # ------------------------------------------------------------ divergence: lookahead segments A and B
        span = min(patch, budget - (w0 - gen.prompt_len[row]))  # segment length, within the token budget
        if not ended:
            ended = yield from write_tokens(gen, row, sampling, seeds[row], span - (len(gen.ids[row]) - w0))
        if not m_ended:
            m_ended = yield from write_tokens(mentor, row, sampling, seeds[row], span - (len(mentor.ids[row]) - m0))
        seg_a, seg_b = gen.ids[row][w0:], mentor.ids[row][m0:]
        text_a, text_b = gen.text_of(row, w0), mentor.text_of(row, m0)
        # the judging question continues the text before the segments; it is cut back out afterwards
        decision: dict[str, Any] = {"at": w0 - gen.prompt_len[row], "generator": text_a, "mentor": text_b}
        score: float | None
        if collect is None and judge is None:  # free mode: the generator judges, in each slot order asked
            prefs, orders = [], slot_orders(option_order, rng)
            for gen_first in orders:
                gen.truncate(row, w0)
                first, second = (text_a, text_b) if gen_first else (text_b, text_a)
                gen.append(row, _question_ids(gen, first, second, anchor=True))
                yield gen
                ia, ib = _option_ids(gen)
                la, lb = float(gen.logits[row, ia]), float(gen.logits[row, ib])
                prefs.append(lb - la if gen_first else la - lb)  # > 0: the mentor's segment is preferred
            decision["generator_slot"] = ["A" if o else "B" for o in orders]
            decision["mentor_preference"] = [round(x, 4) for x in prefs]
            pref = sum(prefs) / len(prefs)
            keep_gen, score = not pref > 0, round(pref, 4)
        else:
            gen.truncate(row, w0)
            gen.append(row, _question_ids(gen, text_a, text_b, anchor=False))
            yield gen
        if collect is not None:
            collect.append({"row": row, "at": decision["at"], "context": gen.text_of(row, gen.prompt_len[row], w0),
                            "a": text_a, "b": text_b, "a_ended": ended, "b_ended": m_ended,
                            "a_tokens": len(seg_a), "b_tokens": len(seg_b),
                            "features": _pack(gen.hidden[row])})
            keep_gen, score = True, None
        elif judge is not None:
            keep_gen, score = judge(gen.hidden[row])
        gen.truncate(row, w0)
        if keep_gen:
            gen.append(row, seg_a)
            mentor.truncate(row, m0)
            g_sync = w0
            sync_mentor(len(gen.ids[row]))
            add_segment(segments, "generator", text_a)
        else:
            gen.append(row, seg_b if shared_vocab else gen.tokens(text_b))
            g_sync = len(gen.ids[row])
            ended = m_ended
            add_segment(segments, "mentor", text_b)
        decisions.append({**decision, "chose": "generator" if keep_gen else "mentor", "score": score})
        if ended:
            result["finish"] = "stop"
            break


def slot_orders(option_order: str, rng: random.Random) -> list[bool]:
    """The orders in which the free-mode judge sees the segments (True: the generator's in slot A). `both`:
    both orders, their preferences averaged, so neither segment gains from its slot (position bias);
    `seeded`: one order per decision, drawn from the example's seeded generator; `fixed`: the generator's
    always in A (the reference)."""
    if option_order == "both":
        return [True, False]
    if option_order == "seeded":
        return [rng.random() < 0.5]
    return [True]


def _pack(vec) -> str:
    return base64.b64encode(vec.numpy().astype("float16").tobytes()).decode()


def unpack_features(s: str):
    import numpy as np
    import torch

    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype="float16").astype("float32"))


def decode_mentor_collab(gen_backend: TokenModel, mentor_backend: TokenModel, gen_reqs: list[GenRequest],
                         mentor_reqs: list[GenRequest], *, sampling: SamplingParams, proportion: float,
                         patch: int, max_word: int = 10, kv_cache: bool = True, judge: Any = None,
                         collect: bool = False, names: tuple[str, str] = ("generator", "mentor"),
                         seed: int = 0, option_order: str = "both") -> list[Outcome]:
    """MentorCollab for a batch (requests aligned per row); one Outcome per row. With `collect`, each
    Outcome's trace holds the divergence points (and the generator's segment is always kept)."""
    shared = same_vocabulary(gen_backend.tokenizer, mentor_backend.tokenizer)
    need_hidden = judge is not None or collect
    gen = Stepper.from_requests(gen_backend, gen_reqs, name=names[0], kv_cache=kv_cache, hidden=need_hidden)
    mentor = Stepper.from_requests(mentor_backend, mentor_reqs, name=names[1], kv_cache=kv_cache)
    seeds = Seeds([r.seed for r in gen_reqs])
    results: list[dict[str, Any]] = [{} for _ in gen_reqs]
    points: list[list[dict]] = [[] for _ in gen_reqs]
    programs = {i: mentor_program(i, gen, mentor, sampling=sampling, seeds=seeds,
                                  rng=random.Random(f"{seed}:{gen_reqs[i].seed}"),
                                  proportion=proportion, patch=patch, budget=sampling.max_new_tokens,
                                  max_word=max_word, shared_vocab=shared, judge=judge,
                                  collect=points[i] if collect else None, result=results[i],
                                  option_order=option_order)
                for i in range(len(gen_reqs))}
    run_rows(programs, [gen, mentor])
    outs = []
    for i, res in enumerate(results):
        trace = {"generator": names[0], "mentor": names[1], "consulted": res["consulted"],
                 "decisions": res["decisions"], "segments": res["segments"],
                 "mentor_tokens_used": sum(len(mentor.tokens(d["mentor"])) for d in res["decisions"]
                                           if d["chose"] == "mentor"),
                 "tokens": len(gen.generated(i))}
        if collect:
            trace["points"] = points[i]
        outs.append(Outcome(gen.text_of(i, gen.prompt_len[i]).strip(), res["finish"], trace,
                            usage_of([(names[0], gen.usage[i]), (names[1], mentor.usage[i])])))
    return outs


# ---------------------------------------------------------------------- train mode: the branch classifier
async def train_judge(ctx: RunContext, params: Params, gen: ModelHandle, idents: dict[str, str], budget: int,
                decode_on: Any) -> tuple[BranchClassifier, dict]:
    """Find divergence points on dev, label them by completing both segments with the generator and scoring
    the completions, train the MLP (cached by a digest of its data and settings)."""
    if not ctx.task.dev:
        raise ConfigError(f"api_mentor_collab: train mode learns its classifier on the dev split; "
                          f"task {ctx.task.name} has none")
    outs = await decode_on([ex.prompt for ex in ctx.task.dev], True, "collect divergence points")
    points = [(ex, p) for ex, o in zip(ctx.task.dev, outs) for p in o.trace["points"]][:params.train_points]
    calls, spans = [], []
    for ex, p in points:  # complete both branches with the generator alone
        for branch in ("a", "b"):
            prefix = p["context"] + p[branch]
            if p[branch + "_ended"]:
                spans.append(("done", prefix))
            else:
                spans.append(("call", prefix))
                left = max(1, budget - p["at"] - p[branch + "_tokens"])
                calls.append(Call(gen, ex.prompt, ctx.sampling(temperature=0.0, max_new_tokens=left), prefix=prefix))
    done = iter(await ctx.generate(calls, tag="complete branches"))
    texts = [prefix if kind == "done" else prefix + next(done).text for kind, prefix in spans]
    feats, labels, rows = [], [], []
    got = [r.score for r in await ctx.score([ex for ex, _ in points for _ in (0, 1)], texts)]  # one batch
    for k, (ex, p) in enumerate(points):
        sa, sb = got[2 * k], got[2 * k + 1]
        rows.append({"example": ex.id, "at": p["at"], "score_generator": sa, "score_mentor": sb})
        if sa != sb:
            feats.append(unpack_features(p["features"]))
            labels.append(1.0 if sa > sb else 0.0)
    info: dict[str, Any] = {"points": len(points), "labelled": len(labels),
                            "generator_better": int(sum(labels)), "mentor_better": len(labels) - int(sum(labels))}
    if not labels:
        raise ConfigError(f"api_mentor_collab: no dev divergence point where the generator's and the mentor's "
                          f"segments led to different scores ({len(points)} points); use mode: free, or more dev items")
    clf, log = train_branch_classifier(feats, labels, cache_dir() / "mentor_collab", epochs=params.mlp_epochs,
                                       learning_rate=params.mlp_learning_rate, seed=ctx.seed, identity=idents)
    info.update(log)
    if ctx.artifacts_dir is not None:
        Path(ctx.artifacts_dir, "mentor_collab_mlp.json").write_text(json.dumps({**info, "rows": rows}, indent=1))
    return clf, info


@method("api_mentor_collab", params=Params, level="api", aliases=("mentor_collab", "mentorcollab"),
        min_models=2, needs=Capabilities(logits=True), trainable=True,
        paper="Wang et al. 2026, MentorCollab: Selective Large-to-Small Inference-Time Guidance",
        summary="At sampled words the mentor proposes a segment where it disagrees; the generator or a trained "
                "MLP picks")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    gen, mentor = ctx.model(params.generator), ctx.model(params.mentor)
    if gen.index == mentor.index:
        raise ConfigError(f"api_mentor_collab: generator and mentor are the same model ('{gen.name}')")
    gb, mb = ctx.local(gen).token_model("api_mentor_collab"), ctx.local(mentor).token_model("api_mentor_collab")
    members = [Member(gen.name, gb, gen.role_prompt), Member(mentor.name, mb, mentor.role_prompt)]
    sampling = ctx.sampling() if params.do_sample else ctx.sampling(temperature=0.0)
    judge_fn = None
    settings: dict[str, Any] = {"p": params.decision_proportion, "patch": params.patch_size, "mode": params.mode,
                                "word": params.max_word_tokens, "seed": ctx.seed,
                                **({"order": params.option_order} if params.mode == "free" else {})}

    async def decode_on(prompts: list[str], collect: bool, tag: str) -> list[Outcome]:
        def decode(reqs: list[list[GenRequest]], smp: SamplingParams) -> list[Outcome]:
            return decode_mentor_collab(gb, mb, reqs[0], reqs[1], sampling=smp,
                                        proportion=params.decision_proportion, patch=params.patch_size,
                                        max_word=params.max_word_tokens, kv_cache=params.kv_cache, judge=judge_fn,
                                        collect=collect, names=(gen.name, mentor.name), seed=ctx.seed,
                                        option_order=params.option_order)

        backend = TokenLevelBackend("api_mentor_collab", {**settings, **({"collect": True} if collect else {})},
                                    members, decode)
        handle = ctx.add_model("api_mentor_collab", backend)
        return outcomes(await ctx.generate([Call(handle, p, sampling) for p in prompts], tag=tag))

    if params.mode == "train":
        with ctx.phase("dev"):
            clf, info = await train_judge(ctx, params, gen, {"generator": gb.fingerprint, "mentor": mb.fingerprint},
                                    sampling.max_new_tokens, decode_on)

        def judge_fn(hidden) -> tuple[bool, float]:
            score = clf.score(hidden)
            return score > params.mlp_threshold, round(score, 4)

        settings["mlp"] = info["digest"]
        ctx.metrics["mentor_collab_mlp"] = info
    with ctx.phase("test"):
        outs = await decode_on([ex.prompt for ex in ctx.task.test], False, "mentor collab")
    tokens = sum(o.trace["tokens"] for o in outs) or 1
    ctx.metrics["mentor_collab"] = {
        "consulted": sum(o.trace["consulted"] for o in outs),
        "divergences": sum(len(o.trace["decisions"]) for o in outs),
        "mentor_chosen": sum(d["chose"] == "mentor" for o in outs for d in o.trace["decisions"]),
        "mentor_token_share": sum(o.trace["mentor_tokens_used"] for o in outs) / tokens,
    }
    return [Output(o.text, trace=o.trace) for o in outs]
