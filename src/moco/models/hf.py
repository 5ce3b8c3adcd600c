"""Hugging Face transformers backend: loaded once, batched by length, per-row seeds, logits available.

Decoding is our own loop over the model's forward with a KV cache rather than `generate`, for three
reasons: every row samples from its own seeded generator (so a prompt's output does not depend on its
batch neighbours' random draws), finished rows leave the batch at once (their KV cache rows are dropped),
and methods that need token-level control (fusion, nudging, deferral) share the same machinery.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moco.errors import ModelError
from moco.models import time_limit
from moco.models.base import Capabilities, GenRequest, GenResult
from moco.models.fingerprint import folder_fingerprint  # noqa: F401 (re-exported)
from moco.models.kv_buffer import new_cache
from moco.models.model_files import check_model_folder
from moco.models.placement import pick_device, pick_dtype  # noqa: F401 (re-exported)
from moco.models.prefix_cache import PrefixStore, shared_prefixes, store_for

if TYPE_CHECKING:
    from moco.config import ModelSpec
    from moco.models.backends import PoolContext

log = logging.getLogger(__name__)

PLAIN_TEMPLATE_NOTE = "no chat template: plain 'User:/Assistant:' format used"


@dataclass
class _Row:
    index: int  # position in the request list
    ids: list[int]
    gen: Any  # torch.Generator
    out: list[int]
    stop_text: tuple[str, ...]
    logprobs: list[float] | None = None
    top: list[float] | None = None
    reused: int = 0  # prompt tokens taken from the prefix store or from a repeated prompt in the batch


class HFBackend:
    """A causal LM from a local folder or the Hub, with its tokenizer and chat template."""

    def __init__(
        self,
        source: str,
        *,
        fingerprint: str,
        device: str = "cpu",
        dtype: str = "auto",
        revision: str | None = None,
        adapter: str | None = None,
        batch_size: int = 16,
        max_batch_tokens: int = 32768,
        device_map: str | dict | None = None,
        max_memory: dict | None = None,
        trust_remote_code: bool = False,
        prefix_cache_mb: int = 1024,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.source = source
        self.device = pick_device(device)
        self.torch_dtype = pick_dtype(dtype, self.device)
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.prefix_cache_bytes = int(prefix_cache_mb) << 20
        t0 = time.time()
        for folder in (source, adapter):  # a broken local file: one line naming it, not a deep traceback
            if folder and os.path.isdir(folder):
                check_model_folder(Path(folder))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
            kwargs: dict[str, Any] = {"dtype": self.torch_dtype, "revision": revision, "trust_remote_code": trust_remote_code}
            if device_map is not None:  # sharded by accelerate over the devices named in max_memory
                kwargs["device_map"] = device_map
                kwargs["max_memory"] = max_memory
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except Exception as e:  # noqa: BLE001 - transformers/safetensors/tokenizers raise many types for bad files
            first = (str(e).strip().splitlines() or [""])[0]
            raise ModelError(f"cannot load model '{source}': {type(e).__name__}: {first}") from e
        if adapter:
            try:
                from peft import PeftModel
            except ImportError:
                raise ModelError("LoRA adapters need peft: pip install peft") from None
            model = PeftModel.from_pretrained(model, adapter)
            model = model.merge_and_unload()
        if device_map is None:
            model = model.to(self.device)
        self.model = model.eval()
        self.load_seconds = time.time() - t0
        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        self.eos_ids = self._eos_ids()
        self.has_template = bool(getattr(tok, "chat_template", None))
        if not self.has_template:
            log.warning("%s: %s", source, PLAIN_TEMPLATE_NOTE)
        self.capabilities = Capabilities(chat=True, logprobs=True, logits=True, weights=True, lora=True, seeded=True)

    # ---------------------------------------------------------------- prompts
    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gc = getattr(self.model, "generation_config", None)
        eos = getattr(gc, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        for special in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid >= 0:
                ids.add(tid)
        return ids

    def render(self, req: GenRequest) -> str:
        """The exact prompt text the model sees (chat template + generation prompt + assistant prefix)."""
        msgs = [{"role": r, "content": c} for r, c in req.messages]
        if self.has_template:
            try:
                text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            except Exception:  # templates that refuse a system role: fold it into the first user turn
                text = self.tokenizer.apply_chat_template(_fold_system(msgs), tokenize=False, add_generation_prompt=True)
        else:
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in msgs) + "Assistant:"
        return text + req.assistant_prefix

    def encode(self, req: GenRequest) -> list[int]:
        text = self.render(req)
        ids = self.tokenizer(text, add_special_tokens=not self.has_template)["input_ids"]
        return list(ids)

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        """Longest prompts first (an out-of-memory error shows up in the first batch), chunked by size and tokens."""
        lengths = [len(self.encode(r)) + r.sampling.max_new_tokens for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (-lengths[i], i))
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            widest = lengths[cur[0]] if cur else lengths[i]
            if cur and (len(cur) >= self.batch_size or widest * (len(cur) + 1) > self.max_batch_tokens):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    @property
    def prefix_stats(self) -> dict[str, int]:
        """What KV reuse saved so far in this process (see models/prefix_cache.py)."""
        store = store_for(self.model, self.prefix_cache_bytes)
        return store.stats.as_dict() if store is not None else {}

    # ---------------------------------------------------------------- decoding
    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return generate_grouped(requests, self._decode)

    def _decode(self, requests: list[GenRequest], sampling) -> list[GenResult]:
        import torch

        with torch.no_grad():
            return self._decode_nograd(requests, sampling)

    def _decode_nograd(self, requests: list[GenRequest], sampling) -> list[GenResult]:
        rows = self.new_rows(requests)
        stream = KVStream(self.model, [r.ids for r in rows], self.tokenizer.pad_token_id,
                          store_for(self.model, self.prefix_cache_bytes))
        for r, n in zip(rows, stream.reused):
            r.reused = n
        finish = decode_rows([stream], rows, sampling, self.eos_ids, lambda logits: logits[0], self._hit_stop)
        return self.results(requests, rows, finish)

    def new_rows(self, requests: list[GenRequest], ids: list[list[int]] | None = None) -> list[_Row]:
        """One decoding row per request: its prompt ids and its own generator seeded from the request."""
        import torch

        dev = _model_device(self.model, self.device)
        gen_device = "cuda" if str(dev).startswith("cuda") else "cpu"
        ids = ids if ids is not None else [self.encode(r) for r in requests]
        return [_Row(i, p, torch.Generator(device=gen_device).manual_seed(r.seed), [], r.sampling.stop)
                for i, (r, p) in enumerate(zip(requests, ids))]

    def results(self, requests: list[GenRequest], rows: list[_Row], finish: list[str]) -> list[GenResult]:
        """Decoded text of finished rows (rows[i] decodes requests[i]) (EOS dropped, cut at stop strings, reasoning blocks removed)."""
        eos = self.eos_ids
        results = []
        for r, fin in zip(rows, finish):
            toks = [t for t in r.out if t not in eos]
            continuing = bool(requests[r.index].assistant_prefix)
            text = self._continuation(r.ids, toks) if continuing else self.tokenizer.decode(toks, skip_special_tokens=True)
            if r.stop_text:
                text = _cut_at_stop(text, r.stop_text)
            if "</think>" in text:  # reasoning models: keep only the answer after the last think block
                text = text.rsplit("</think>", 1)[1]
            # a continuation of an assistant prefix is returned verbatim (spaces, line breaks): prefix + text is the
            # answer so far, and the next continuation may follow it
            text = text if continuing else text.strip()
            err = time_limit.error_for(fin)  # a row cut at the server's time limit is no answer
            results.append(GenResult("" if err else text, tokens_in=len(r.ids), tokens_out=len(r.out), finish_reason=fin,
                                     token_logprobs=r.logprobs, top_logprobs=r.top, tokens_reused=r.reused, error=err))
        return results

    def _continuation(self, prompt_ids: list[int], new_ids: list[int]) -> str:
        """Text the new tokens add after the prompt, decoded in context (some tokenizers drop a leading space
        when a token is decoded alone)."""
        tail = prompt_ids[-4:]
        before = self.tokenizer.decode(tail, skip_special_tokens=True)
        both = self.tokenizer.decode(tail + new_ids, skip_special_tokens=True)
        if both.startswith(before):
            return both[len(before):]
        return self.tokenizer.decode(new_ids, skip_special_tokens=True)

    def _hit_stop(self, row: _Row) -> bool:
        return self.hit_stop(row.out, row.stop_text)

    # ---------------------------------------------------------------- token-level stepping (models/token_model.py)
    def hit_stop(self, tokens: list[int], stops: tuple[str, ...]) -> bool:
        tail = self.tokenizer.decode(tokens[-16:], skip_special_tokens=True)
        return any(s in tail for s in stops)

    def new_kv_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def next_logits(self, input_ids: Any, attention_mask: Any, position_ids: Any, kv_cache: Any = None,
                    hidden: bool = False) -> tuple[Any, Any]:
        """Last-position logits (and last-layer hidden states) of a left-padded batch; see TokenModel."""
        dev = _model_device(self.model, self.device)
        cached = {"past_key_values": kv_cache, "use_cache": True} if kv_cache is not None else {}
        out = self.model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev),
                         position_ids=position_ids.to(dev), logits_to_keep=1, output_hidden_states=hidden, **cached)
        last = out.logits[:, -1, :].float().cpu()
        return last, out.hidden_states[-1][:, -1, :].float().cpu() if hidden else None

    def select_kv_rows(self, kv_cache: Any, rows: list[int]) -> None:
        import torch

        kv_cache.batch_select_indices(torch.tensor(rows, device=_model_device(self.model, self.device)))

    # ---------------------------------------------------------------- scores
    def next_token_logprobs(self, requests: list[GenRequest]):
        """Log-softmax of the next-token distribution after each prompt, shape [n, vocab] (on CPU, fp32)."""
        import torch

        with torch.no_grad():
            return self._next_token_logprobs(requests)

    def _next_token_logprobs(self, requests: list[GenRequest]):
        import torch

        outs = []
        for batch in self.plan_batches(requests):
            ids = [self.encode(requests[i]) for i in batch]
            width = max(map(len, ids))
            pad = self.tokenizer.pad_token_id
            dev = self.model.device
            x = torch.tensor([[pad] * (width - len(s)) + s for s in ids], device=dev)
            am = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in ids], device=dev)
            pos = (am.cumsum(-1) - 1).clamp(min=0)
            lg = self.model(input_ids=x, attention_mask=am, position_ids=pos, logits_to_keep=1).logits[:, -1, :]
            outs.extend(zip(batch, torch.log_softmax(lg.float(), -1).cpu()))
        outs.sort(key=lambda t: t[0])
        return torch.stack([o for _, o in outs])

    def loglikelihood(self, requests: list[GenRequest], continuations: list[str]) -> list[float]:
        """Sum of log-probabilities of each continuation as the assistant's reply to its prompt."""
        import torch

        out: list[float] = [0.0] * len(requests)
        with torch.no_grad():
            for batch in self.plan_batches(requests):
                prompts = [self.encode(requests[i]) for i in batch]
                conts = [self.tokenizer(continuations[i], add_special_tokens=False)["input_ids"] for i in batch]
                seqs = [p + c for p, c in zip(prompts, conts)]
                width = max(map(len, seqs))
                pad = self.tokenizer.pad_token_id
                dev = self.model.device
                x = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=dev)
                am = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=dev)
                pos = (am.cumsum(-1) - 1).clamp(min=0)
                logp = torch.log_softmax(self.model(input_ids=x, attention_mask=am, position_ids=pos).logits.float(), -1)
                for row, (i, c) in enumerate(zip(batch, conts)):
                    if not c:
                        continue
                    idx = torch.arange(width - len(c), width, device=dev)
                    tgt = torch.tensor(c, device=dev)
                    out[i] = float(logp[row, idx - 1, tgt].sum())
        return out

    def close(self) -> None:
        """Drop the weights (an evicted model): memory returns once no method holds this backend."""
        import gc

        import torch

        on_gpu = self.device.startswith("cuda")
        self.model = None  # type: ignore[assignment]
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()


def generate_grouped(requests: list[GenRequest], decode: Callable[[list[GenRequest], Any], list[GenResult]]) -> list[GenResult]:
    """Requests in one call may differ in sampling: decode groups of identical sampling together, and share
    each group's wall time out to its rows by generated tokens."""
    if not requests:
        return []
    results: list[GenResult | None] = [None] * len(requests)
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.sampling, []).append(i)
    for sampling, idx in groups.items():
        t0 = time.time()
        outs = decode([requests[i] for i in idx], sampling)
        dt = time.time() - t0
        total = sum(o.tokens_out + 1 for o in outs) or 1
        for i, o in zip(idx, outs):
            o.latency_s = dt * (o.tokens_out + 1) / total
            results[i] = o
    return [r for r in results if r is not None]


def _model_device(model, fallback: str):
    import torch

    return model.device if hasattr(model, "device") else torch.device(fallback)


class KVStream:
    """One model decoding a batch of rows: a left-padded prefill with an attention mask, then one token per
    step through its own KV cache. Rows leave the batch with `keep` (their cache rows are dropped).

    Identical prompts are prefilled once and their cache rows copied. With a `PrefixStore`, a prompt whose
    start the model already processed (in an earlier call) is prefilled only from where it differs: the
    stored KV is placed right-aligned before the prompt's new tokens, the gap masked out, and positions count
    only real tokens, so every row sees exactly its own sequence. A row's whole sequence (prompt and the
    tokens fed after it) goes into the store when it leaves the batch."""

    def __init__(self, model, prompts: list[list[int]], pad_id: int, store: PrefixStore | None = None):
        import torch

        self.model = model
        self.device = dev = _model_device(model, "cpu")
        self.store = store
        slot: dict[tuple[int, ...], int] = {}
        expand = [slot.setdefault(tuple(p), len(slot)) for p in prompts]
        unique = [list(k) for k in slot]
        charged = self._share_prefixes(unique, pad_id) if store is not None else {}
        matches = [store.match(p) for p in unique] if store is not None else [(0, None)] * len(unique)
        if store is not None:
            store.stats.shared_rows += len(prompts) - len(unique)
        reused = [n for n, _ in matches]
        suffixes = [p[n:] for p, n in zip(unique, reused)]
        groups = prefill_groups([len(x) for x in suffixes]) if store is not None else [list(range(len(unique)))]
        if len(groups) == 1:
            self.cache, self.attn, self.last_pos, self.logits = _prefill(model, suffixes, matches, pad_id, dev)
        else:  # prompts of very different lengths: prefill each group padded to its own width, then join
            kvs: list = [None] * len(unique)
            logits: list = [None] * len(unique)
            for g in groups:
                cache, attn, _pos, lg = _prefill(model, [suffixes[i] for i in g], [matches[i] for i in g], pad_id, dev)
                for j, i in enumerate(g):
                    kvs[i] = _row_kv(cache, attn, j)
                    logits[i] = lg[j]
            lengths = [len(p) for p in unique]
            width = max(lengths)
            self.cache = new_cache(model)
            _fill_cache(self.cache, kvs, lengths, width)
            self.attn = torch.tensor([[0] * (width - n) + [1] * n for n in lengths], device=dev)
            self.last_pos = torch.tensor([n - 1 for n in lengths], device=dev)
            self.logits = torch.stack(logits)
        if len(unique) < len(prompts):  # copy the cache rows of repeated prompts
            self._select(expand)
        # per row: prompt tokens not computed for it (a repeat of an earlier row's prompt reuses all of it)
        first = {u: i for i, u in reversed(list(enumerate(expand)))}
        self.reused = [max(0, reused[u] - charged.get(u, 0)) if first[u] == i else len(prompts[i])
                       for i, u in enumerate(expand)]
        self.fed = [list(p) for p in prompts]  # each alive row's tokens in the cache

    def _share_prefixes(self, unique: list[list[int]], pad_id: int) -> dict[int, int]:
        """Prefill the prefixes that several prompts share (and the store lacks) once, into the store, so each
        prompt then reuses them; returns, per prompt charged with a prefix's computation, its computed tokens."""
        store = self.store
        shared = shared_prefixes(store, unique, [store.peek(p) for p in unique], PREFILL_PASS_COST)
        if not shared:
            return {}
        heads = KVStream(self.model, [h for h, _ in shared], pad_id, store)  # may share shorter prefixes in turn
        heads.close()  # stores every prefix with its KV
        return {rows[0]: len(h) - n for (h, rows), n in zip(shared, heads.reused)}

    def _select(self, rows: list[int]) -> None:
        import torch

        sel = torch.tensor(rows, device=self.device)
        self.cache.batch_select_indices(sel)
        self.attn, self.last_pos, self.logits = self.attn[sel], self.last_pos[sel], self.logits[sel]

    def keep(self, rows: list[int]) -> None:
        if self.store is not None:
            kept = set(rows)
            for j in range(len(self.fed)):
                if j not in kept:
                    self._save(j)
        self._select(rows)
        self.fed = [self.fed[j] for j in rows]

    def advance(self, tokens: list[int]):
        """Feed one token per alive row; returns the next-token logits [rows, vocab]."""
        import torch

        self.attn = torch.cat([self.attn, self.attn.new_ones(len(tokens), 1)], dim=-1)
        self.last_pos = self.last_pos + 1
        out = self.model(input_ids=torch.tensor(tokens, device=self.device)[:, None], attention_mask=self.attn,
                         position_ids=self.last_pos[:, None], past_key_values=self.cache, use_cache=True)
        self.logits = out.logits[:, -1, :]
        for f, t in zip(self.fed, tokens):
            f.append(t)
        return self.logits

    def close(self) -> None:
        """The batch is done: store the rows still in it, free the cache."""
        if self.store is not None:
            for j in range(len(self.fed)):
                self._save(j)
        self.cache = None
        self.fed = []

    def _save(self, j: int) -> None:
        self.store.add(self.fed[j], _row_kv(self.cache, self.attn, j))


def _row_kv(cache, attn, j: int) -> list:
    """Row j's KV per layer at its real (unmasked) positions; boolean indexing copies, so the caller owns it."""
    real = attn[j].bool()
    return [(layer.keys[j][:, real, :], layer.values[j][:, real, :]) for layer in cache.layers]


def _prefill(model, suffixes: list[list[int]], matches: list, pad_id: int, dev):
    """One left-padded forward pass over the rows' new tokens, after their stored KV (if any)."""
    import torch

    cache = new_cache(model)
    reused = [n for n, _ in matches]
    width_c = max(reused)
    if width_c:
        _fill_cache(cache, [kv for _, kv in matches], reused, width_c)
    width = max(len(s) for s in suffixes)
    input_ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in suffixes], device=dev)
    attn = torch.tensor([[0] * (width_c - n) + [1] * n + [0] * (width - len(s)) + [1] * len(s)
                         for n, s in zip(reused, suffixes)], device=dev)
    new = attn[:, width_c:]
    pos = (new.cumsum(-1) - 1).clamp(min=0) + torch.tensor(reused, device=dev)[:, None]
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    return cache, attn, pos[:, -1], out.logits[:, -1, :]


PREFILL_PASS_COST = 256  # a forward pass's fixed cost in padded prompt tokens (SmolLM2 on 2 cores: ~150)


def prefill_groups(lengths: list[int], pass_cost: int = PREFILL_PASS_COST) -> list[list[int]]:
    """Rows (by index) grouped for prefill so that padding to each group's longest prompt plus a fixed cost per
    forward pass is least (exact, over groups of consecutive lengths): one group unless lengths differ a lot."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[k]: cost of the k longest rows
    cut = [0] * (n + 1)
    for k in range(1, n + 1):
        for j in range(k):  # rows j..k-1 form the last group, padded to the length of row j
            c = best[j] + lengths[order[j]] * (k - j) + pass_cost
            if c < best[k]:
                best[k], cut[k] = c, j
    groups, k = [], n
    while k > 0:
        groups.append(order[cut[k]:k])
        k = cut[k]
    return groups[::-1]


def _fill_cache(cache, kvs: list, lengths: list[int], width: int) -> None:
    """Put each row's stored KV right-aligned in a cache `width` columns wide (zeros where a row has none)."""
    ref = next(kv for kv in kvs if kv is not None)
    for layer, (k0, v0) in enumerate(ref):
        keys = k0.new_zeros((len(kvs), k0.shape[0], width, k0.shape[-1]))
        values = v0.new_zeros((len(kvs), v0.shape[0], width, v0.shape[-1]))
        for i, (kv, n) in enumerate(zip(kvs, lengths)):
            if n:
                keys[i, :, width - n:] = kv[layer][0]
                values[i, :, width - n:] = kv[layer][1]
        cache.update(keys, values, layer)


def decode_rows(streams: list[KVStream], rows: list[_Row], sampling, eos: set[int],
                combine: Callable[[list[Any]], Any], hit_stop: Callable[[_Row], bool]) -> list[str]:
    """The decoding loop shared by single models and token-level collaborations: each step, `combine` turns
    the streams' next-token logits into one score vector per row, every row samples its token with its own
    generator, and rows that hit EOS or a stop string leave every stream. Fills `rows[i].out` (and log-probs
    of the combined distribution when asked); returns each row's finish reason."""
    import torch

    alive = list(range(len(rows)))
    finish = ["length"] * len(rows)
    want_lp = sampling.logprobs
    if want_lp:
        for r in rows:
            r.logprobs, r.top = [], []
    logits = combine([s.logits for s in streams])
    for step in range(sampling.max_new_tokens):
        if time_limit.passed():  # the server's per-request limit: rows still decoding stop here
            for a in alive:
                finish[a] = time_limit.FINISH
            break
        nxt = _sample(logits, sampling, [rows[a].gen for a in alive])
        if want_lp:
            lp = torch.log_softmax(logits.float(), dim=-1)
            chosen = lp.gather(1, torch.tensor(nxt, device=lp.device)[:, None])[:, 0].tolist()
            best = lp.max(dim=-1).values.tolist()
            for j, a in enumerate(alive):
                rows[a].logprobs.append(chosen[j])
                rows[a].top.append(best[j])
        keep: list[int] = []
        for j, a in enumerate(alive):
            tok = nxt[j]
            rows[a].out.append(tok)
            if tok in eos or (rows[a].stop_text and hit_stop(rows[a])):
                finish[a] = "stop"
            else:
                keep.append(j)
        if not keep or step == sampling.max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            for s in streams:
                s.keep(keep)
            alive = [alive[j] for j in keep]
            nxt = [nxt[j] for j in keep]
        logits = combine([s.advance(nxt) for s in streams])
    for s in streams:
        s.close()
    return finish


def _fold_system(msgs: list[dict]) -> list[dict]:
    system = "\n".join(m["content"] for m in msgs if m["role"] == "system")
    rest = [dict(m) for m in msgs if m["role"] != "system"]
    if system and rest:
        rest[0]["content"] = system + "\n\n" + rest[0]["content"]
    return rest


def _sample(logits, sampling, generators) -> list[int]:
    """Greedy, or temperature + top-p sampling with one seeded generator per row."""
    import torch

    if sampling.greedy:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    top_p = sampling.top_p
    if top_p >= 1.0:
        return [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, generators)]
    # exact top-p: the nucleus almost always lies in the top 256 tokens; fall back to a full sort if not
    k = min(256, probs.shape[-1])
    vals, idx = probs.topk(k, dim=-1)
    if bool((vals.sum(-1) < top_p).any()):
        vals, idx = probs.sort(dim=-1, descending=True)
    cum = vals.cumsum(-1)
    vals = vals.masked_fill(cum - vals >= top_p, 0.0)
    picks = []
    for v, ix, g in zip(vals, idx, generators):
        picks.append(int(ix[torch.multinomial(v, 1, generator=g)]))
    return picks


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def hub_fingerprint(repo_id: str, revision: str | None) -> str:
    """Hub models are identified by repo and resolved commit (from the local snapshot when offline)."""
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id, revision=revision, local_files_only=True)
        return f"hub:{repo_id}@{Path(local).name}"
    except Exception:
        return f"hub:{repo_id}@{revision or 'main'}"


def is_local_model(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def load(spec: "ModelSpec", ctx: "PoolContext") -> HFBackend:
    """The backend registry's factory (models/backends.py): on the pool's device, or sharded over
    hardware.gpu_ids under hardware.big_model_mode."""
    from moco.models.placement import big_model_kwargs, load_kwargs

    kwargs = load_kwargs(spec, ctx.hardware)
    device = ctx.device()
    gpu_ids = ctx.hardware.gpu_ids
    if ctx.hardware.big_model_mode and gpu_ids:
        kwargs.update(big_model_kwargs(gpu_ids, ctx.estimate_gb()))
        device = f"cuda:{gpu_ids[0]}"
    return HFBackend(ctx.source(), fingerprint=ctx.fingerprint(), device=device, **kwargs)
