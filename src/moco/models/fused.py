"""Token-level collaboration as a backend: several Hugging Face models decode in lockstep.

Each member model reads the prompt through its own chat template and role prompt, with its own left padding,
attention mask and KV cache. At every step the members' next-token logits are combined by a method-supplied
function into one score vector per row (e.g. the log of the average probability); each row samples its next
token from that with its own seeded generator (as in the HF backend), the token is fed to every member, and
a row leaves every member's batch as soon as it emits EOS. Members that are the same loaded model with the
same role prompt share one forward pass.

Registered with `ctx.add_model` (`fused_model`), a fused model is called through `ctx.generate` like any
other model: batched by its lead member's `plan_batches`, cached under its fingerprint (the method's combine
key and every member's weights and role prompt), seeded per request, traced. Each result lists its per-member
usage in `extra["usage"]` ({name: [tokens_in, tokens_out]}), so calls.jsonl holds one record per member model,
counted as the token-level methods count (models/stepper.py `RowUsage`): the fused tokens are written once,
by the first member (its generator samples them, its tokenizer decodes them); every other member reads its
prompt and is fed those tokens (its tokens_in); a member sharing an earlier member's forward pass costs nothing.
So the run's tokens_out is the text's tokens, not one copy per member.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from moco.errors import ModelError
from moco.models.base import Capabilities, GenRequest, GenResult, with_role_prompt
from moco.models.hf import KVStream, decode_rows, generate_grouped
from moco.models.prefix_cache import store_for

if TYPE_CHECKING:
    from moco.context import RunContext
    from moco.models.pool import ModelHandle

Combine = Callable[[list[Any]], Any]
"""Member logits (each [rows, vocab], float32, in member order) -> scores [rows, vocab] to sample from."""


@dataclass
class Member:
    name: str
    backend: Any  # an HFBackend (needs .model, .tokenizer, .encode)
    role_prompt: str | None = None


class FusedBackend:
    def __init__(self, members: list[Member], combine: Combine, combine_key: str):
        if not members:
            raise ModelError("a fused model needs at least one member")
        for m in members:
            if getattr(m.backend, "model", None) is None or not hasattr(m.backend, "encode"):
                raise ModelError(f"model '{m.name}' is not a local Hugging Face model: token-level methods need its logits")
        self.members = members
        self.combine = combine
        self.lead = members[0].backend
        self._check_vocabulary()
        self.vocab = len(self.lead.tokenizer)
        self.eos_ids: set[int] = set().union(*(m.backend.eos_ids for m in members))
        ident = {"combine": combine_key, "members": [[m.backend.fingerprint, m.role_prompt or ""] for m in members]}
        self.fingerprint = "fused:" + hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        self.capabilities = Capabilities(chat=True, logprobs=True, seeded=True)
        self.batch_size = self.lead.batch_size

    def _check_vocabulary(self) -> None:
        ref = self.lead.tokenizer
        ref_vocab = None
        for m in self.members[1:]:
            tok = m.backend.tokenizer
            if tok is ref:
                continue
            ref_vocab = ref_vocab if ref_vocab is not None else ref.get_vocab()
            if tok.get_vocab() != ref_vocab:
                raise ModelError(f"models '{self.members[0].name}' and '{m.name}' have different vocabularies: "
                                 "token-level methods need one shared tokenizer")

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        return self.lead.plan_batches(requests)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return generate_grouped(requests, self._decode)

    def _decode(self, requests: list[GenRequest], sampling) -> list[GenResult]:
        import torch

        with torch.no_grad():
            streams: list[KVStream] = []
            prompt_ids: list[list[list[int]]] = []
            index: dict[tuple[int, str], int] = {}
            member_stream: list[int] = []
            for m in self.members:
                key = (id(m.backend), m.role_prompt or "")
                if key not in index:
                    ids = [m.backend.encode(replace(r, messages=with_role_prompt(r.messages, m.role_prompt)))
                           for r in requests]
                    index[key] = len(streams)
                    prompt_ids.append(ids)
                    streams.append(KVStream(m.backend.model, ids, m.backend.tokenizer.pad_token_id,
                                           store_for(m.backend.model, getattr(m.backend, "prefix_cache_bytes", 0))))
                member_stream.append(index[key])
            rows = self.lead.new_rows(requests, ids=prompt_ids[member_stream[0]])
            v = self.vocab

            def step(stream_logits: list[Any]) -> Any:
                return self.combine([stream_logits[i][:, :v].float() for i in member_stream])

            finish = decode_rows(streams, rows, sampling, self.eos_ids, step, self.lead._hit_stop)
            results = self.lead.results(requests, rows, finish)
        first = {s: k for k, s in reversed(list(enumerate(member_stream)))}  # the member that owns each stream
        for j, res in enumerate(results):  # prompt tokens every distinct member had to read
            res.tokens_in = sum(len(ids[j]) for ids in prompt_ids)
            res.extra = {"usage": {m.name: self._usage(k, len(prompt_ids[s][j]), res.tokens_out, first[s] == k)
                                   for k, (m, s) in enumerate(zip(self.members, member_stream))}}
        return results

    @staticmethod
    def _usage(member: int, prompt: int, out: int, own_stream: bool) -> list[int]:
        """[tokens_in, tokens_out] of one member for one row (see the module docstring)."""
        if not own_stream:
            return [0, 0]
        return [prompt, out] if member == 0 else [prompt + out, 0]

    def close(self) -> None:  # members belong to the pool
        pass


def fused_model(ctx: RunContext, name: str, handles: list[ModelHandle], combine: Combine,
                combine_key: str) -> ModelHandle:
    """Register the fusion of `handles` (in order) as the model `name`, to be called with `ctx.generate`.
    `combine_key` names the method and its settings: responses are cached under it and the members' weights."""
    members = [Member(h.name, ctx.local(h).backend, h.role_prompt) for h in handles]
    return ctx.add_model(name, FusedBackend(members, combine, combine_key))
