"""Token streaming for a single local model: transformers `generate` with a text streamer, in a thread.

Only a model answering alone can stream token by token: a collaboration's output exists only once the
collaboration has finished (it is then sent as one chunk). A streamed answer bypasses the micro-batcher
and the response cache: it is one sequence decoded as it is read.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from moco.models.base import GenRequest

_SEED_LOCK = threading.Lock()


class TokenStreamer:
    """A transformers streamer that hands out the new text after every token (the stock TextIteratorStreamer
    waits for whole words). Text that ends inside a multi-byte character is held until it completes."""

    def __init__(self, tokenizer: Any, prompt_len: int, timeout_s: float = 600.0):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.timeout_s = timeout_s
        self.ids: list[int] = []
        self.sent = 0
        self.q: queue.Queue[str | None] = queue.Queue()
        self.skipped_prompt = False

    def put(self, value: Any) -> None:
        ids = value.reshape(-1).tolist()
        if not self.skipped_prompt:  # generate() first puts the prompt
            self.skipped_prompt = True
            if len(ids) == self.prompt_len:
                return
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        if len(text) > self.sent:
            self.q.put(text[self.sent:])
            self.sent = len(text)

    def end(self) -> None:
        self.q.put(None)

    def __iter__(self) -> Iterator[str]:
        while True:
            piece = self.q.get(timeout=self.timeout_s)
            if piece is None:
                return
            yield piece


def hf_stream(backend: Any, req: GenRequest) -> Iterator[str]:
    """Pieces of text of the HF backend's answer to `req` as they are decoded."""
    import torch

    ids = backend.encode(req)
    streamer = TokenStreamer(backend.tokenizer, len(ids))
    s = req.sampling
    kwargs = {"input_ids": torch.tensor([ids], device=backend.model.device),
              "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=backend.model.device),
              "max_new_tokens": s.max_new_tokens, "do_sample": not s.greedy, "streamer": streamer,
              "eos_token_id": sorted(backend.eos_ids), "pad_token_id": backend.tokenizer.pad_token_id}
    if not s.greedy:
        kwargs.update(temperature=s.temperature, top_p=s.top_p)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.no_grad():
                if s.greedy:
                    backend.model.generate(**kwargs)
                else:
                    with _SEED_LOCK:
                        torch.manual_seed(req.seed % (2**63))
                        backend.model.generate(**kwargs)
        except BaseException as e:  # noqa: BLE001 - reported to the reader below
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if errors:
        raise errors[0]


def cut_stream(pieces: Iterable[str], stops: tuple[str, ...]) -> Iterator[str]:
    """Pass pieces through until a stop string appears (held-back text never shows a partial stop)."""
    if not stops:
        yield from pieces
        return
    hold = max(len(x) for x in stops) - 1
    text, sent = "", 0
    for piece in pieces:
        text += piece
        hits = [text.find(x) for x in stops if x in text]
        if hits:
            end = min(hits)
            if end > sent:
                yield text[sent:end]
            return
        safe = len(text) - hold
        if safe > sent:
            yield text[sent:safe]
            sent = safe
    if len(text) > sent:
        yield text[sent:]
