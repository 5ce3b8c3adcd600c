"""Token-level decoding for methods that interleave models token by token (nudging, Co-LLM, MentorCollab...).

A `Stepper` holds one model's batched decoding state: each row's token ids (the truth) and a KV cache that
follows them lazily. Methods append tokens to a row (`append`), cut a row back (`truncate`, e.g. to drop a
lookahead that was not chosen), and ask for the row's next-token logits (`ensure`), which feeds every pending
token of the asked rows in ONE forward pass over the batch:

* rows are left-padded at prefill; later increments of different lengths are left-padded too, so the last
  column always holds a real token of every fed row; padding and cut-back tokens stay in the cache with
  attention mask 0, and position ids count only a row's real tokens, so the model sees each row exactly as
  if it had been encoded alone;
* rows that finished are dropped from the cache (`release`), as in `HFBackend._decode_nograd`.

With `kv_cache=False` every `ensure` recomputes the asked rows' whole sequences: the same results, the
baseline that shows what the cache saves (benchmarks/token_level_speed.py).

A method writes the algorithm of ONE row as a Python generator that yields the stepper whose logits it needs
next; `run_rows` advances all rows together and batches the forward passes of every model (one per model per
tick). So per-row logic reads top to bottom, and the batch is still decoded in lock-step.
"""
from __future__ import annotations

import functools
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

from moco.models.base import SamplingParams
from moco.models.token_model import TokenModel

Program = Generator["Stepper", None, None]
"""One row's algorithm: yields the stepper whose next-token logits it needs; returns when the row is done."""


@dataclass
class RowUsage:
    """What one model did for one row: its prompt, the tokens fed after it, and how many of those it wrote."""

    prompt: int = 0
    fed: int = 0  # tokens fed after the prompt (its own, other models' text, re-fed ones)
    written: int = 0  # tokens this model generated (kept or not)

    @property
    def tokens_in(self) -> int:
        return self.prompt + max(0, self.fed - self.written)

    @property
    def tokens_out(self) -> int:
        return self.written


class Stepper:
    """One token model (`moco.models.token_model.TokenModel`) decoding a batch of rows (see the module docstring)."""

    def __init__(self, backend: TokenModel, prompts: list[list[int]], *, name: str = "", kv_cache: bool = True,
                 hidden: bool = False):
        if not prompts or any(not p for p in prompts):
            raise ValueError("every row needs a non-empty prompt")
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.eos_ids: set[int] = set(backend.eos_ids)
        self.name = name
        self.kv_cache = kv_cache
        self.want_hidden = hidden
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.ids: list[list[int]] = [list(p) for p in prompts]
        self.prompt_len = [len(p) for p in prompts]
        self.usage = [RowUsage() for _ in prompts]
        self.forwards = 0  # forward passes run
        self.fed_tokens = 0  # real tokens processed (recomputed ones included without the cache)
        self.padded_tokens = 0  # batch positions processed (real + padding)
        n = len(prompts)
        self._fed = [0] * n  # how many of ids[row] the cache holds
        self._cols: list[list[int]] = [[] for _ in range(n)]  # cache column of each fed token
        self._slot: dict[int, int] = {r: r for r in range(n)}  # row -> position in the cache batch
        self._mask: Any = None  # [batch, columns] attention mask of the cache
        self._cache: Any = None
        self.logits: Any = None  # last next-token logits of each row ([rows, vocab], fp32, CPU) after a forward
        self.hidden: Any = None  # last hidden state of each row when hidden=True
        # nothing runs yet: the prompts are prefilled when a row first needs this model

    @classmethod
    def from_requests(cls, backend: TokenModel, requests: list, **kwargs: Any) -> "Stepper":
        """A stepper over the exact prompts the backend would render for these GenRequests."""
        return cls(backend, [backend.encode(r) for r in requests], **kwargs)

    # ------------------------------------------------------------------ row edits (no model call)
    def append(self, row: int, tokens: Iterable[int]) -> None:
        self.ids[row].extend(int(t) for t in tokens)

    def truncate(self, row: int, length: int) -> None:
        """Cut the row back to its first `length` tokens (never into the prompt)."""
        if length < self.prompt_len[row]:
            raise ValueError("cannot cut into the prompt")
        del self.ids[row][length:]
        if self._fed[row] > length:  # the cache holds cut tokens: un-feed them, and re-feed the last kept
            keep = length - 1  # token so that its next-token logits are recomputed
            if self.kv_cache and self._mask is not None:
                slot = self._slot[row]
                for col in self._cols[row][keep:]:
                    self._mask[slot, col] = 0
                del self._cols[row][keep:]
            self._fed[row] = keep

    def generated(self, row: int) -> list[int]:
        return self.ids[row][self.prompt_len[row]:]

    def current(self, row: int) -> bool:
        """Whether logits[row] are the next-token logits after all of ids[row]."""
        return self._fed[row] == len(self.ids[row])

    # ------------------------------------------------------------------ model calls
    def ensure(self, rows: Iterable[int]) -> None:
        """Bring the asked rows' logits up to date with one forward pass (nothing to do: no call)."""
        import torch

        todo = [r for r in rows if not self.current(r)]
        if not todo:
            return
        with torch.no_grad():
            if self.kv_cache:
                self._forward_cached(todo)
            else:
                self._forward_full(todo)
        self.forwards += 1

    def wrote(self, row: int, n: int = 1) -> None:
        """Count n tokens as generated by this model for the row (for cost accounting)."""
        self.usage[row].written += n

    def _forward_cached(self, todo: list[int]) -> None:
        import torch

        if self._cache is None:  # prefill the rows still alive: left-padded, positions count real tokens only
            self._cache = self.backend.new_kv_cache()
            alive = self._slot_order()
            self._slot = {r: i for i, r in enumerate(alive)}
            width = max(len(self.ids[r]) for r in alive)
            x = torch.full((len(alive), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(alive), width), dtype=torch.long)
            pos = torch.zeros((len(alive), width), dtype=torch.long)
            for i, r in enumerate(alive):
                seq, k = self.ids[r], len(self.ids[r])
                x[i, width - k:] = torch.tensor(seq)
                mask[i, width - k:] = 1
                pos[i, width - k:] = torch.arange(k)
                self._cols[r] = list(range(width - k, width))
                self._fed[r] = k
                self.usage[r].prompt = self.prompt_len[r]
                self.usage[r].fed += k - self.prompt_len[r]
            self._mask = mask
            self._run(x, mask, pos, alive)
            self.fed_tokens += int(mask.sum())
            self.padded_tokens += len(alive) * width
            return
        slots = self._mask.shape[0]  # the cache batch (released rows stay until a compaction)
        inc = {r: self.ids[r][self._fed[r]:] for r in todo}
        width = max(len(t) for t in inc.values())
        x = torch.full((slots, width), self.pad, dtype=torch.long)
        new_mask = torch.zeros((slots, width), dtype=torch.long)
        pos = torch.zeros((slots, width), dtype=torch.long)
        start_col = self._mask.shape[1]
        for r, toks in inc.items():
            s, k = self._slot[r], len(toks)
            x[s, width - k:] = torch.tensor(toks)
            new_mask[s, width - k:] = 1
            pos[s, width - k:] = torch.arange(self._fed[r], self._fed[r] + k)
            self._cols[r].extend(range(start_col + width - k, start_col + width))
            self.usage[r].fed += k
            self._fed[r] += k
            self.fed_tokens += k
        self._mask = torch.cat([self._mask, new_mask], dim=1)
        self.padded_tokens += slots * width
        self._run(x, self._mask, pos, todo)

    def _run(self, x, mask, pos, rows: list[int]) -> None:
        out = self.backend.next_logits(x, mask, pos, kv_cache=self._cache, hidden=self.want_hidden)
        self._store(out, [(r, self._slot[r]) for r in rows])

    def _forward_full(self, todo: list[int]) -> None:
        """No cache: recompute each asked row's whole sequence (left-padded batch of those rows only)."""
        import torch

        seqs = [self.ids[r] for r in todo]
        width = max(map(len, seqs))
        x = torch.full((len(todo), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(todo), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.backend.next_logits(x, mask, pos, hidden=self.want_hidden)
        for r in todo:
            if self._fed[r] >= self.prompt_len[r]:
                self.usage[r].fed += len(self.ids[r]) - self._fed[r]
            else:
                self.usage[r].prompt = self.prompt_len[r]
                self.usage[r].fed += len(self.ids[r]) - self.prompt_len[r]
            self._fed[r] = len(self.ids[r])
        self.fed_tokens += int(mask.sum())
        self.padded_tokens += len(todo) * width
        self._store(out, [(r, i) for i, r in enumerate(todo)])

    def _store(self, out: tuple[Any, Any], row_and_index: list[tuple[int, int]]) -> None:
        import torch

        last, hid = out
        if self.logits is None:
            self.logits = torch.zeros(len(self.ids), last.shape[-1])
        if hid is not None and self.hidden is None:
            self.hidden = torch.zeros(self.logits.shape[0], hid.shape[-1])
        for r, i in row_and_index:
            self.logits[r] = last[i]
            if hid is not None:
                self.hidden[r] = hid[i]

    # ------------------------------------------------------------------ finished rows
    def _slot_order(self) -> list[int]:
        return sorted(self._slot, key=lambda r: self._slot[r])

    def release(self, rows: Iterable[int]) -> None:
        """Rows that are done leave the cache batch (when at least half of it is done: a copy costs time)."""
        import torch

        for r in rows:
            self._slot.pop(r, None)
        if not self.kv_cache or self._cache is None:
            return
        alive = self._slot_order()
        size = self._mask.shape[0]
        if not alive or len(alive) * 2 > size:
            return
        keep = [self._slot[r] for r in alive]
        self.backend.select_kv_rows(self._cache, keep)
        self._mask = self._mask[torch.tensor(keep)]
        self._slot = {r: i for i, r in enumerate(alive)}

    def tokens(self, text: str) -> list[int]:
        """`text` in this model's tokens (no special tokens), for text handed over from another model."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.eos_ids], skip_special_tokens=True)

    def text_of(self, row: int, start: int, end: int | None = None) -> str:
        """Text of ids[row][start:end], decoded in context (a few tokens before it) so leading spaces survive."""
        ids = self.ids[row]
        end = len(ids) if end is None else end
        ctx = ids[max(0, start - 4):start]
        before = self.decode(ctx)
        both = self.decode(ctx + ids[start:end])
        return both[len(before):] if both.startswith(before) else self.decode(ids[start:end])


# ---------------------------------------------------------------------- scheduling rows
def run_rows(programs: dict[int, Program], steppers: list[Stepper]) -> None:
    """Advance every row's program until all are done, one batched forward per model per tick."""
    waiting: dict[int, Stepper] = {}

    def advance(row: int) -> None:
        prog = programs[row]
        while True:
            try:
                st = next(prog)
            except StopIteration:
                for s in steppers:
                    s.release([row])
                return
            if st.current(row):  # nothing to compute: continue this row at once
                continue
            waiting[row] = st
            return

    for row in list(programs):
        advance(row)
    while waiting:
        groups: dict[int, tuple[Stepper, list[int]]] = {}
        for row, st in waiting.items():
            groups.setdefault(id(st), (st, []))[1].append(row)
        waiting = {}
        for st, rows in groups.values():
            st.ensure(rows)
        for _st, rows in groups.values():
            for row in rows:
                advance(row)


# ---------------------------------------------------------------------- helpers for programs
def sample(logits, sampling: SamplingParams, generator) -> int:
    """One token from one row's logits: argmax when greedy, else temperature + top-p with the row's generator."""
    from moco.models.hf import _sample

    if sampling.greedy:
        return int(logits.argmax())
    return _sample(logits[None], sampling, [generator])[0]


def top1_prob(logits) -> float:
    """Probability of the most likely next token (untempered softmax)."""
    import torch

    return float(torch.softmax(logits.float(), -1).max())


@functools.lru_cache(maxsize=16)
def _word_start_table(tokenizer: Any) -> tuple[bool, ...]:
    marks = ("Ġ", "Ċ", "ĉ", "▁", " ", "\n", "\t", "\r")
    vocab = len(tokenizer)
    out = []
    for i in range(vocab):
        piece = tokenizer.convert_ids_to_tokens(i) or ""
        out.append(piece.startswith(marks) or piece.startswith("<0x0A>") or piece.startswith("<0x20>"))
    return tuple(out)


def starts_word(tokenizer: Any, token: int) -> bool:
    """Whether the token begins with white space, i.e. starts a new word (byte-level BPE, SentencePiece, chars)."""
    table = _word_start_table(tokenizer)
    return token < len(table) and table[token]


def same_vocabulary(a: Any, b: Any) -> bool:
    """Two tokenizers map every token string to the same id (ids can be exchanged between the models)."""
    return a is b or a.get_vocab() == b.get_vocab()


@dataclass
class Seeds:
    """Per-row torch generators, seeded from the per-request seeds (reproducible whatever the batch)."""

    seeds: list[int]
    gens: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        import torch

        self.gens = [torch.Generator().manual_seed(int(s) % (2**63)) for s in self.seeds]

    def __getitem__(self, row: int):
        return self.gens[row]


def write_word(st: Stepper, row: int, sampling: SamplingParams, generator: Any, *, max_tokens: int,
               word_start: Any = starts_word) -> Generator[Stepper, None, bool]:
    """Sub-program: append the model's next word to the row — its tokens up to (not including) the next token
    that starts a word, at most `max_tokens`. Returns True when the model ends the text (end-of-sequence)
    before writing anything, False otherwise."""
    start = len(st.ids[row])
    while True:
        yield st
        tok = sample(st.logits[row], sampling, generator)
        n = len(st.ids[row]) - start
        if tok in st.eos_ids:
            return n == 0
        if n and word_start(st.tokenizer, tok):
            return False
        st.append(row, [tok])
        st.wrote(row)
        if n + 1 >= max_tokens:
            return False


def write_tokens(st: Stepper, row: int, sampling: SamplingParams, generator: Any,
                 n: int) -> Generator[Stepper, None, bool]:
    """Sub-program: append up to `n` tokens; returns True when the model ended the text (end-of-sequence)."""
    for _ in range(n):
        yield st
        tok = sample(st.logits[row], sampling, generator)
        if tok in st.eos_ids:
            return True
        st.append(row, [tok])
        st.wrote(row)
    return False
