"""api_nudging: a base model writes; where it is uncertain, a nudging model writes the next word (Fei et al. 2024).

Nudging (Fei, Razeghi & Singh, "Nudging: Inference-time Alignment of LLMs via Guided Decoding") lets a small
aligned model steer a base model at the few positions where alignment matters: the base model decodes, and
where its top-1 next-token probability is below `gamma` the nudging model writes the next word instead.

Per example (all examples of a batch advance together; see `moco.models.stepper`):

1. The first word is the nudging model's (`nudge_first_word`, as the reference implementation does).
2. The base model decodes its next token (greedily by default, as the authors' code). Its top-1
   probability is checked at every token (`check_at: token`, the authors' code; `word`: only where a word
   starts): below gamma (0.3, the authors'), the nudging model writes the next word instead — its tokens up
   to (not including) the next token that begins with white space, at most `max_word_tokens`. Otherwise the
   base token is kept.
   Right after a nudged word, an uncertain base token is still kept when the nudging model's next word begins
   with it (`accept_agreeing`, the authors' rule: the base "agrees" with the nudger); the trace lists these
   agreements. Otherwise that next word is nudged in.
3. The text a model writes is appended for BOTH models — as token ids when the two tokenizers share a
   vocabulary, else re-tokenised by the other model — so models of different families can collaborate.
   Each model keeps its own KV cache and is fed only the text it has not seen yet, when it next needs to
   predict (the nudger is not run at all while the base is confident).
4. Decoding ends at the end-of-sequence token of the model writing, or after `max_new_tokens` base tokens.

Optional dev search (`search_gamma`, `search_nudging`): every (gamma, nudger) pair is decoded on the dev set
and the best mean dev score wins. The configured pair is the incumbent and is replaced only by a strictly
better score (the reference starts from score 0 and the last loop values, so with negative scores, e.g. a
reward model, it returns the last pair tried).

The trace of each example lists the nudges (base-token position, the base's top-1 probability, the word) and
the text as segments written by each model.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.errors import ConfigError
from moco.methods.registry import MethodParams, method
from moco.models.base import Capabilities, GenRequest, SamplingParams
from moco.models.pool import ModelHandle
from moco.models.stepper import (Program, Seeds, Stepper, run_rows, same_vocabulary, sample, starts_word, top1_prob,
                                 write_word)
from moco.models.token_level import Member, Outcome, TokenLevelBackend, add_segment, outcomes, usage_of
from moco.models.token_model import TokenModel


class Params(MethodParams):
    gamma: float = Field(0.3, ge=0.0, le=1.0, description="the nudging model writes the next word where the base "
                         "model's top-1 next-token probability is below gamma (the authors' top_prob_thres 0.3; "
                         "the reference's 0.4)")
    check_at: Literal["token", "word"] = Field("token", description="check the base's uncertainty at every token "
                                               "(the authors) or only where a word starts")
    accept_agreeing: bool = Field(True, description="after a nudged word, an uncertain base token that begins the "
                                  "nudging model's next word is kept (the authors' agreement rule)")
    base: int | str = Field(0, alias="base_model_id", description="the base model (index or name)")
    nudger: int | str = Field(1, alias="nudging_model_id", description="the nudging model (index or name)")
    search_gamma: bool = Field(False, description="pick gamma on dev from gamma_grid")
    gamma_grid: list[float] = Field([0.2, 0.3, 0.4, 0.5], description="gammas tried by search_gamma")
    search_nudging: bool = Field(False, description="pick the nudging model on dev among all non-base models")
    kv_cache: bool = Field(True, alias="use_kv_cache", description="reuse each model's KV cache (False: "
                           "recompute every sequence at each step; same output, slower)")
    do_sample: bool = Field(False, description="sample with the run's temperature/top_p (default greedy, as the "
                            "authors' code; the reference samples)")
    nudge_first_word: bool = Field(True, description="the nudging model writes the first word (reference)")
    max_word_tokens: int = Field(10, ge=1, le=64, description="longest word the nudging model writes at once")


def nudging_program(row: int, base: Stepper, nudger: Stepper, *, gamma: float, sampling: SamplingParams,
                    seeds_base: Seeds, seeds_nudger: Seeds, budget: int, nudge_first_word: bool,
                    max_word_tokens: int, shared_vocab: bool, result: dict[str, Any],
                    word_start: Callable[[Any, int], bool] = starts_word, check_at: str = "token",
                    accept_agreeing: bool = True) -> Program:
    """The nudging algorithm for one row; fills `result` with finish, nudges, agreements and segments.
    `word_start(tokenizer, token)` says which tokens begin a word (default: those beginning with white space).
    `check_at`: the base's uncertainty is checked at every token (the authors) or only where a word starts.
    `accept_agreeing`: right after a nudged word, an uncertain base token that begins the nudging model's next
    word is the base's to write (the authors' agreement rule); otherwise that word is nudged in."""
    nudges: list[dict[str, Any]] = []
    agreements: list[dict[str, Any]] = []
    segments: list[list[str]] = []  # [writer, text] in order
    result.update(finish="length", nudges=nudges, agreements=agreements, segments=segments)
    b_sync = base.prompt_len[row]  # the nudger has seen the base's text up to ids[:b_sync]
    nudge_next = nudge_first_word
    check_next = True  # the base's next token is checked even if it does not start a word (after a nudge)

    def written() -> int:
        return len(base.ids[row]) - base.prompt_len[row]

    def sync_nudger() -> int:
        """Feed the nudger the base's text it has not seen; returns where its next word starts."""
        nonlocal b_sync
        if shared_vocab:
            nudger.append(row, base.ids[row][b_sync:])
        else:
            nudger.append(row, nudger.tokens(base.text_of(row, b_sync)))
        b_sync = len(base.ids[row])
        return len(nudger.ids[row])

    def take_word(w0: int) -> str:
        """The nudger's word (its ids from w0) becomes the base's text too."""
        nonlocal b_sync
        text = nudger.text_of(row, w0)
        base.append(row, nudger.ids[row][w0:] if shared_vocab else base.tokens(text))
        b_sync = len(base.ids[row])
        add_segment(segments, "nudger", text)
        return text

    for _step in range(4 * budget + 8):  # bounded even if a model writes only text that decodes to nothing
        if written() >= budget:
            break
        if not nudge_next:  # ------------------------------------------------ the base model writes a token
            yield base
            logits = base.logits[row]
            tok = sample(logits, sampling, seeds_base[row])
            after_nudge = bool(segments) and segments[-1][0] == "nudger"
            if check_at == "token" or check_next or word_start(base.tokenizer, tok) or tok in base.eos_ids:
                p = top1_prob(logits)
                if p < gamma and accept_agreeing and after_nudge and check_next and tok not in base.eos_ids:
                    # the nudging model's next word decides: the base keeps its token if the word begins with it
                    w0 = sync_nudger()
                    room = max(1, min(max_word_tokens, budget - written()))
                    start = len(base.ids[row])
                    base.append(row, [tok])
                    piece = base.text_of(row, start)
                    ended = yield from write_word(nudger, row, sampling, seeds_nudger[row], word_start=word_start,
                                                  max_tokens=room)
                    word = nudger.text_of(row, w0)
                    if piece.strip() and not ended and word.lstrip().startswith(piece.lstrip()):
                        nudger.truncate(row, w0)  # the lookahead word is not used
                        base.wrote(row)
                        agreements.append({"at": start - base.prompt_len[row], "base_top1": round(p, 4),
                                           "token": piece, "nudger_word": word})
                        add_segment(segments, "base", piece)
                        check_next = False
                        continue
                    base.truncate(row, start)
                    nudges.append({"at": written(), "base_top1": round(p, 4)})
                    nudges[-1]["text"] = take_word(w0)
                    if ended:
                        result["finish"] = "stop"
                        break
                    check_next = True
                    continue
                if p < gamma:
                    nudge_next = True
                    nudges.append({"at": written(), "base_top1": round(p, 4)})
                    continue
            check_next = False
            if tok in base.eos_ids:
                result["finish"] = "stop"
                break
            start = len(base.ids[row])
            base.append(row, [tok])
            base.wrote(row)
            add_segment(segments, "base", base.text_of(row, start))
            continue
        # ---------------------------------------------------------------- the nudging model writes a word
        w0 = sync_nudger()
        ended = yield from write_word(nudger, row, sampling, seeds_nudger[row], word_start=word_start,
                                      max_tokens=max(1, min(max_word_tokens, budget - written())))
        if not (nudges and "text" not in nudges[-1]):  # the first word: no decision by the base
            nudges.append({"at": written(), "base_top1": None})
        nudges[-1]["text"] = take_word(w0)
        if ended:
            result["finish"] = "stop"
            break
        nudge_next = False
        check_next = True


def decode_nudging(base_backend: TokenModel, nudger_backend: TokenModel, base_reqs: list[GenRequest],
                   nudger_reqs: list[GenRequest], *, gamma: float, sampling: SamplingParams, kv_cache: bool = True,
                   nudge_first_word: bool = True, max_word_tokens: int = 10, shared_vocab: bool | None = None,
                   names: tuple[str, str] = ("base", "nudger"),
                   word_start: Callable[[Any, int], bool] = starts_word, check_at: str = "token",
                   accept_agreeing: bool = True) -> list[Outcome]:
    """Nudge a batch of prompts (one request per model per row, aligned); returns one Outcome per row."""
    if shared_vocab is None:
        shared_vocab = same_vocabulary(base_backend.tokenizer, nudger_backend.tokenizer)
    base = Stepper.from_requests(base_backend, base_reqs, name=names[0], kv_cache=kv_cache)
    nudger = Stepper.from_requests(nudger_backend, nudger_reqs, name=names[1], kv_cache=kv_cache)
    sb, sn = Seeds([r.seed for r in base_reqs]), Seeds([r.seed for r in nudger_reqs])
    results: list[dict[str, Any]] = [{} for _ in base_reqs]
    programs = {i: nudging_program(i, base, nudger, gamma=gamma, sampling=sampling, seeds_base=sb, seeds_nudger=sn,
                                   budget=sampling.max_new_tokens, nudge_first_word=nudge_first_word,
                                   max_word_tokens=max_word_tokens, shared_vocab=shared_vocab, result=results[i],
                                   word_start=word_start, check_at=check_at, accept_agreeing=accept_agreeing)
                for i in range(len(base_reqs))}
    run_rows(programs, [base, nudger])
    outs = []
    for i, res in enumerate(results):
        text = base.text_of(i, base.prompt_len[i]).strip()
        n_nudged = sum(1 for s in res["segments"] if s[0] == "nudger")
        trace = {"gamma": gamma, "base": names[0], "nudger": names[1], "nudges": res["nudges"],
                 "agreements": res["agreements"], "segments": res["segments"], "nudged_words": len(res["nudges"]), "nudged_segments": n_nudged,
                 "base_tokens": len(base.generated(i)), "shared_vocab": shared_vocab}
        outs.append(Outcome(text, res["finish"], trace, usage_of([(names[0], base.usage[i]), (names[1], nudger.usage[i])])))
    return outs


@method("api_nudging", params=Params, level="api", aliases=("nudging",), min_models=2,
        needs=Capabilities(logits=True),
        paper="Fei, Razeghi & Singh 2024, Nudging: Inference-time Alignment of LLMs via Guided Decoding",
        summary="A base model decodes; where its top-1 token probability < gamma a nudging model writes the next word")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    base = ctx.model(params.base)
    nudger = ctx.model(params.nudger)
    if base.index == nudger.index:
        raise ConfigError(f"api_nudging: the base and the nudging model are the same model ('{base.name}')")
    sampling = ctx.sampling() if params.do_sample else ctx.sampling(temperature=0.0)
    gamma = params.gamma
    if params.search_gamma or params.search_nudging:
        gamma, nudger = await _search(ctx, params, base, nudger, sampling)
    with ctx.phase("test"):
        outs = await _decode(ctx, params, base, nudger, gamma, sampling, [ex.prompt for ex in ctx.task.test], "nudging")
    n_words = sum(o.trace["nudged_words"] for o in outs)
    ctx.metrics["nudging"] = {"gamma": gamma, "nudger": nudger.name, "base": base.name,
                                    "nudges_per_answer": n_words / max(1, len(outs))}
    return [Output(o.text, trace=o.trace) for o in outs]


async def _decode(ctx: RunContext, params: Params, base: ModelHandle, nudger: ModelHandle, gamma: float,
            sampling: SamplingParams, prompts: list[str], tag: str, replica: int = 0) -> list[Outcome]:
    """Nudge `prompts` through `ctx.generate`: the decoding is a composite backend (cached, batched, traced)."""
    members = [Member(h.name, ctx.local(h).token_model("api_nudging"), h.role_prompt) for h in (base, nudger)]

    def decode(reqs: list[list[GenRequest]], smp: SamplingParams) -> list[Outcome]:
        return decode_nudging(members[0].model, members[1].model, reqs[0], reqs[1], gamma=gamma, sampling=smp,
                              kv_cache=params.kv_cache, nudge_first_word=params.nudge_first_word,
                              max_word_tokens=params.max_word_tokens, names=(base.name, nudger.name),
                              check_at=params.check_at, accept_agreeing=params.accept_agreeing)

    settings = {"gamma": gamma, "first": params.nudge_first_word, "word": params.max_word_tokens,
                "check": params.check_at, "agree": params.accept_agreeing}
    handle = ctx.add_model("api_nudging", TokenLevelBackend("api_nudging", settings, members, decode))
    return outcomes(await ctx.generate([Call(handle, p, sampling, replica) for p in prompts], tag=tag))


async def _search(ctx: RunContext, params: Params, base, nudger, sampling: SamplingParams):
    """Best (gamma, nudger) by mean dev score (greedy or over `dev_repeats` samples, `moco.selection`); the
    configured pair wins unless another is strictly better. Every pair's dev score and interval is recorded."""
    from moco.selection import averaged, choose, dev_sampling

    if not ctx.task.dev:
        raise ConfigError(f"api_nudging: search_gamma/search_nudging need a dev split; task {ctx.task.name} has none")
    gammas = sorted(set(params.gamma_grid) | {params.gamma}) if params.search_gamma else [params.gamma]
    nudgers = [m for m in ctx.models if m.index != base.index] if params.search_nudging else [nudger]
    prompts = [ex.prompt for ex in ctx.task.dev]
    candidates = [(params.gamma, nudger)] + [(g, n) for n in nudgers for g in gammas
                                             if (g, n.index) != (params.gamma, nudger.index)]
    smp = dev_sampling(ctx, temperature=sampling.temperature)
    items = []
    with ctx.phase("dev"):
        for g, n in candidates:
            async def one_pass(r: int, g: float = g, n=n) -> list[float]:
                outs = await _decode(ctx, params, base, n, g, smp, prompts, f"search gamma={g} nudger={n.name}", r)
                return [x.score for x in await ctx.score(ctx.task.dev, [o.text for o in outs])]
            items.append(await averaged(ctx, one_pass))
    best = choose(ctx, "nudging", [f"gamma={g} nudger={n.name}" for g, n in candidates], items)
    table = [{"gamma": g, "nudger": n.name, "dev_score": sum(s) / len(s)} for (g, n), s in zip(candidates, items)]
    ctx.metrics["nudging_search"] = {"grid": table, "chosen": table[best]}
    return candidates[best]
