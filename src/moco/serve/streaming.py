"""One model call decoded piece by piece: what streams the last stage of a served collaboration.

`decode_one(backend, request, on_piece, top_k)` runs ONE request and calls `on_piece(text)` as its answer
grows. A local transformers model runs its own batched decoding loop (`moco.models.hf.decode_rows`) on a batch
of one, with the same per-request seed, so the streamed answer is the answer `generate` gives (and may be
cached as such); it can also report the log-probability of every token with the `top_k` most likely
alternatives (the model's distribution at temperature 1). An OpenAI-compatible endpoint is asked with
`stream: true` and its pieces are passed on as they arrive. The scripted test backend replies word by word.
Any other backend (vision models, Ray engines) answers whole: its text arrives as one piece.

`StopCutter` holds back text that could be the start of a stop string, so a client never sees part of one.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from moco.models.base import GenRequest, GenResult

OnPiece = Callable[[str], None]


@dataclass
class TokenLogprob:
    """One generated token: its text, log-probability, and the `top_k` most likely tokens at that step."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


class StopCutter:
    """Feed text pieces; get back what can be shown. Text that might begin a stop string is held until it is
    known not to; at a stop string everything after it is dropped (`stopped`)."""

    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        hits = [self.text.find(s) for s in self.stops if s in self.text]
        if hits:
            self.stopped = True
            return self._upto(min(hits))
        return self._upto(len(self.text) - self.hold)

    def finish(self) -> str:
        return "" if self.stopped else self._upto(len(self.text))

    def _upto(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out, self.sent = self.text[self.sent:end], end
        return out


def cut_stream(pieces: Iterable[str], stops: tuple[str, ...]) -> Iterator[str]:
    """Pass pieces through until a stop string appears (held-back text never shows a partial stop)."""
    cutter = StopCutter(stops)
    for piece in pieces:
        out = cutter.feed(piece)
        if out:
            yield out
        if cutter.stopped:
            return
    out = cutter.finish()
    if out:
        yield out


class _Emitter:
    """Turns a growing answer into pieces that add up to exactly the answer the backend returns: cut at its
    stop strings (text that could begin one is held back), stripped (leading whitespace dropped, trailing
    whitespace held); text ending inside a multi-byte character waits for the rest of it."""

    def __init__(self, on_piece: OnPiece, stops: tuple[str, ...]):
        self.on_piece = on_piece
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.sent = ""

    def update(self, text: str, final: bool = False) -> None:
        if text.endswith("\ufffd") and not final:
            return
        cut = min((text.find(s) for s in self.stops if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        elif not final:
            text = text[:max(0, len(text) - self.hold)]
        shown = text.strip()
        if len(shown) > len(self.sent) and shown.startswith(self.sent):
            self.on_piece(shown[len(self.sent):])
            self.sent = shown


def decode_one(backend: Any, req: GenRequest, on_piece: OnPiece | None = None,
               top_k: int | None = None) -> tuple[GenResult, list[TokenLogprob] | None]:
    """Run one request, streaming its text to `on_piece`; with `top_k` (0-20) also each token's log-probability
    (local transformers models only: `supports_logprobs`)."""
    on_piece = on_piece or (lambda _piece: None)
    if is_text_hf(backend):
        return _hf_decode_one(backend, req, on_piece, top_k)
    if top_k is not None:
        raise ValueError(f"{type(backend).__name__} gives no token log-probabilities")
    if _is_endpoint(backend):
        return _endpoint_decode_one(backend, req, on_piece), None
    res = backend.generate([req])[0]
    if not res.failed:
        pieces = re.findall(r"\s*\S+|\s+$", res.text) if _is_scripted(backend) else [res.text]
        for piece in [p for p in pieces if p]:
            on_piece(piece)
    return res, None


def supports_logprobs(backend: Any) -> bool:
    return is_text_hf(backend)


def is_text_hf(backend: Any) -> bool:
    from moco.models.hf import HFBackend

    return isinstance(backend, HFBackend)


def _is_endpoint(backend: Any) -> bool:
    from moco.models.openai import OpenAIBackend

    return isinstance(backend, OpenAIBackend)


def _is_scripted(backend: Any) -> bool:
    from moco.models.scripted import ScriptedBackend

    return isinstance(backend, ScriptedBackend)


def _hf_decode_one(backend: Any, req: GenRequest, on_piece: OnPiece,
                   top_k: int | None) -> tuple[GenResult, list[TokenLogprob] | None]:
    """The backend's own decoding loop on a batch of one, watched token by token."""
    import torch

    from moco.models.hf import KVStream, decode_rows, store_for

    t0 = time.time()
    tok = backend.tokenizer
    row = backend.new_rows([req])[0]
    stops = row.stop_text
    emitter = _Emitter(on_piece, stops)
    steps: list[Any] = []  # the log-softmax of each step's next-token distribution (top_k only)

    def watch(r) -> bool:  # called after every new token; says whether a stop string was hit (as _hit_stop does)
        emitter.update(tok.decode([t for t in r.out if t not in backend.eos_ids], skip_special_tokens=True))
        return bool(stops) and any(s in tok.decode(r.out[-16:], skip_special_tokens=True) for s in stops)

    def combine(logits: list[Any]) -> Any:
        if top_k is not None:
            steps.append(torch.log_softmax(logits[0][0].float(), dim=-1).cpu())
        return logits[0]

    row.stop_text = ("",)  # makes decode_rows call `watch` after every token; restored before decoding the text
    with torch.no_grad():
        stream = KVStream(backend.model, [row.ids], tok.pad_token_id,
                          store_for(backend.model, backend.prefix_cache_bytes))
        row.reused = stream.reused[0]
        finish = decode_rows([stream], [row], req.sampling, backend.eos_ids, combine, watch)
    row.stop_text = stops
    res = backend.results([req], [row], finish)[0]
    res.latency_s = time.time() - t0
    if not res.failed:
        emitter.update(res.text, final=True)
    lps = None if top_k is None else _token_logprobs(tok, row.out, steps, backend.eos_ids, top_k)
    return res, lps


def _endpoint_decode_one(backend: Any, req: GenRequest, on_piece: OnPiece) -> GenResult:
    """The request with `stream: true`, pieces passed on as they arrive. A server that fails before sending
    any text gets the backend's own call (with its retries and down detection); one that fails after it is a
    failed call (the text already sent cannot be taken back)."""
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from moco.models.openai import _run

    emitter = _Emitter(on_piece, req.sampling.stop)

    async def streamed() -> GenResult:
        t0 = time.time()
        body = {**backend._body(req), "stream": True, "stream_options": {"include_usage": True}}
        chunks = await backend._api().post("/chat/completions", body=body, cast_to=ChatCompletion, stream=True,
                                           stream_cls=openai.AsyncStream[ChatCompletionChunk],
                                           options=backend._options())
        text, finish, usage = "", "stop", None
        async for c in chunks:
            usage = c.usage or usage
            for choice in c.choices[:1]:
                text += choice.delta.content or ""
                finish = "length" if choice.finish_reason == "length" else finish
                emitter.update(text)
        text = text if req.assistant_prefix else text.strip()
        emitter.update(text, final=True)
        return GenResult(text, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0, finish,
                         time.time() - t0)

    if backend.down:
        return backend.generate([req])[0]
    try:
        return _run(asyncio.wait_for(streamed(), backend.timeout_s))
    except Exception as e:  # noqa: BLE001 - below: retried whole, or a failed call
        if not emitter.sent:
            return backend.generate([req])[0]
        return GenResult("", finish_reason="error", error=f"the stream broke off: {type(e).__name__}: {e}")


def _token_logprobs(tok: Any, out: list[int], steps: list[Any], eos: set[int], top_k: int) -> list[TokenLogprob]:
    rows = []
    for token_id, lp in zip(out, steps):
        if token_id in eos:
            break
        top = []
        if top_k:
            vals, idx = lp.topk(top_k)
            top = [(tok.decode([int(i)]), float(v)) for v, i in zip(vals, idx)]
        rows.append(TokenLogprob(tok.decode([token_id]), float(lp[token_id]), top))
    return rows


def logprobs_within(lps: list[TokenLogprob], text: str) -> list[TokenLogprob]:
    """The first tokens whose text covers `text` (an answer cut at a stop string keeps the tokens before the cut)."""
    kept: list[TokenLogprob] = []
    covered, want = "", len(text.strip())
    for t in lps:
        if kept and len(covered.strip()) >= want:
            break
        kept.append(t)
        covered += t.token
    return kept
