"""KV reuse across calls: a prompt that starts with tokens a model already processed is prefilled only from
where it differs.

Collaboration asks the same model about the same text again and again: k samples of one prompt, the next
patch of an answer so far (switch generation), the next round of a debate over the same question and system
prompt. vLLM and SGLang keep such prefixes (automatic prefix caching, RadixAttention); this is the same idea
for the in-process backend, kept small: each stored sequence keeps its own KV tensors, it is found through
hashes of its 16-token blocks, and sequences are evicted least-recently used within a byte budget.

A store belongs to one model object (`store_for`); code that writes weights in place calls `forget`.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

BLOCK = 16  # tokens per hashed block: a shorter shared prefix is not worth a lookup


@dataclass
class PrefixStats:
    """What reuse saved: prompt tokens taken from the store vs prompt tokens the model computed."""

    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0
    computed_tokens: int = 0
    shared_rows: int = 0  # rows whose prompt repeated another row's in the same batch
    stored: int = 0
    evicted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Entry:
    ids: tuple[int, ...]
    kv: list[tuple[Any, Any]]  # per layer: keys, values as [kv_heads, len, head_dim]
    nbytes: int
    hashes: list[int] = field(default_factory=list)


class PrefixStore:
    """Token sequences with their per-layer KV, looked up by longest shared prefix."""

    def __init__(self, budget_bytes: int, block: int = BLOCK):
        self.budget = int(budget_bytes)
        self.block = block
        self.entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        self.index: dict[int, list[int]] = {}  # chain hash of the first k blocks -> entries holding them
        self.used = 0
        self.stats = PrefixStats()
        self._next = 0
        self._lock = threading.RLock()  # a served model may be asked from more than one thread

    def _chain(self, ids: tuple[int, ...] | list[int]) -> list[int]:
        hashes, h = [], 0
        for b in range(len(ids) // self.block):
            h = hash((h, tuple(ids[b * self.block:(b + 1) * self.block])))
            hashes.append(h)
        return hashes

    def _longest(self, ids: list[int]) -> tuple[int, int | None]:
        """(shared length, entry id) of the stored sequence sharing the longest prefix with `ids`."""
        best, blocks = None, 0
        for k, h in enumerate(self._chain(ids)):
            cands = self.index.get(h)
            if not cands:
                break
            best, blocks = cands[-1], k + 1
        if best is None:
            return 0, None
        e = self.entries[best]
        n = blocks * self.block
        if list(e.ids[:n]) != list(ids[:n]):  # a hash collision: no reuse rather than wrong keys
            return 0, None
        lim = min(len(e.ids), len(ids))
        while n < lim and e.ids[n] == ids[n]:
            n += 1
        return n, best

    def _usable(self, ids: list[int]) -> tuple[int, int | None]:
        """(tokens to reuse, entry) for `ids`: at least one token left to compute, at least a block reused."""
        n, eid = self._longest(ids)
        n = min(n, len(ids) - 1)
        return (n, eid) if eid is not None and n >= self.block else (0, None)

    def peek(self, ids: list[int]) -> int:
        """How many leading tokens of `ids` `match` would reuse now (no statistics, no recency update)."""
        with self._lock:
            return self._usable(ids)[0]

    def match(self, ids: list[int]) -> tuple[int, list[tuple[Any, Any]] | None]:
        """How many leading tokens of `ids` have stored KV, and that KV (cut to length). At least one token
        is always left to compute: its logits are the first decoding step."""
        with self._lock:
            return self._match(ids)

    def _match(self, ids: list[int]) -> tuple[int, list[tuple[Any, Any]] | None]:
        self.stats.lookups += 1
        n, eid = self._usable(ids)
        if eid is None:
            self.stats.computed_tokens += len(ids)
            return 0, None
        self.entries.move_to_end(eid)
        self.stats.hits += 1
        self.stats.reused_tokens += n
        self.stats.computed_tokens += len(ids) - n
        return n, [(k[:, :n], v[:, :n]) for k, v in self.entries[eid].kv]

    def add(self, ids: list[int], kv: list[tuple[Any, Any]]) -> None:
        """Keep `ids` with its KV (per layer [kv_heads, len(ids), head_dim], owned by the store from now on).
        A sequence that a stored one already extends is skipped; stored ones it extends are replaced."""
        with self._lock:
            self._add(ids, kv)

    def _add(self, ids: list[int], kv: list[tuple[Any, Any]]) -> None:
        if len(ids) < self.block or self.budget <= 0:
            return
        n, eid = self._longest(ids)
        if eid is not None and n == len(ids):
            self.entries.move_to_end(eid)
            return
        while eid is not None and n == len(self.entries[eid].ids):  # a stored sequence is a prefix of this one
            self._drop(eid)
            n, eid = self._longest(ids)
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if nbytes > self.budget:
            return
        while self.entries and self.used + nbytes > self.budget:
            self._drop(next(iter(self.entries)))
            self.stats.evicted += 1
        eid = self._next
        self._next += 1
        entry = _Entry(tuple(ids), kv, nbytes, self._chain(ids))
        self.entries[eid] = entry
        for h in entry.hashes:
            self.index.setdefault(h, []).append(eid)
        self.used += nbytes
        self.stats.stored += 1

    def _drop(self, eid: int) -> None:
        e = self.entries.pop(eid)
        self.used -= e.nbytes
        for h in e.hashes:
            lst = self.index.get(h)
            if lst is not None:
                lst.remove(eid)
                if not lst:
                    del self.index[h]

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            self.index.clear()
            self.used = 0


_STORES: "weakref.WeakKeyDictionary[Any, PrefixStore | None]" = weakref.WeakKeyDictionary()  # None: not plain


def store_for(model: Any, budget_bytes: int) -> PrefixStore | None:
    """The store of this model object (created on first use); None when reuse is off or the model's cache
    is not a plain per-layer KV cache (sliding-window, recurrent and hybrid models keep other state)."""
    if budget_bytes <= 0 or model is None:
        return None
    if model not in _STORES:  # the cache check builds a cache: once per model, not once per batch
        _STORES[model] = PrefixStore(budget_bytes) if plain_kv_cache(model) else None
    store = _STORES[model]
    if store is None:
        return None
    store.budget = int(budget_bytes)  # the run's setting; a smaller one takes effect at the next insert
    return store


def forget(model: Any) -> None:
    """Drop the stored KV of `model` (its weights were changed in place)."""
    store = _STORES.get(model)
    if store is not None:
        store.clear()


def shared_prefixes(store: PrefixStore, prompts: list[list[int]], reused: list[int],
                    pass_cost: int) -> list[tuple[list[int], list[int]]]:
    """Block-aligned prefixes that several prompts of one batch share beyond what the store already holds:
    (prefix, the rows that start with it), only when computing each prefix once saves more prompt tokens than a
    forward pass of its own costs (`pass_cost`). In a merged batch the prompts of different methods for the
    same model and question start alike (system prompt, question, the first round's answers)."""
    b = store.block
    chains = [store._chain(p[:len(p) - 1]) for p in prompts]  # whole blocks, at least one token left after
    count: dict[int, int] = {}
    for i, ch in enumerate(chains):
        for h in ch[reused[i] // b:]:
            count[h] = count.get(h, 0) + 1
    groups: dict[int, tuple[int, list[int]]] = {}  # chain hash of the shared prefix -> (its blocks, rows)
    for i, ch in enumerate(chains):
        k = len(ch)
        while k > reused[i] // b and count[ch[k - 1]] < 2:
            k -= 1
        if k * b > reused[i]:
            groups.setdefault(ch[k - 1], (k, []))[1].append(i)
    out, saved = [], 0
    for k, rows in groups.values():
        head = prompts[rows[0]][:k * b]
        rows = [i for i in rows if prompts[i][:k * b] == head]  # a hash collision never shares keys
        if len(rows) < 2:
            continue
        saved += sum(k * b - reused[i] for i in rows) - (k * b - min(reused[i] for i in rows))
        out.append((head, rows))
    return out if saved > pass_cost else []


def clear_all() -> None:
    """Empty the store of every loaded model: what a new process would start with, without reloading weights
    (a benchmark timing a run "alone" must not reuse KV that other runs computed)."""
    for store in list(_STORES.values()):
        if store is not None:
            store.clear()


def plain_kv_cache(model: Any) -> bool:
    """True when every layer of the model's cache is a full-attention DynamicLayer."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=model.config)
        layers = getattr(cache, "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
    except Exception:
        return False
