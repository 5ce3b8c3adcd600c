"""What a token-level method needs from a model, declared: the `TokenModel` protocol.

Methods that interleave models token by token (nudging, Co-LLM, MentorCollab; `moco.models.stepper`) do not
ask a model for finished answers but for its next-token logits after text they build themselves, with a KV
cache that follows their edits. This module says exactly what they use, so any backend that provides it can
take part (today `moco.models.hf.HFBackend`), and a backend that cannot (an endpoint, a scripted model) is
rejected with one line instead of an AttributeError deep inside the decoding loop.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from moco.errors import ConfigError
from moco.models.base import GenRequest


class Tokenizer(Protocol):
    """The tokenizer calls the token-level code makes (a Hugging Face tokenizer satisfies it)."""

    pad_token_id: int | None
    eos_token_id: int | None

    def __call__(self, text: str, add_special_tokens: bool = ...) -> Any: ...  # ["input_ids"]: list[int]

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...

    def convert_ids_to_tokens(self, ids: int) -> str | None: ...  # which tokens start a word

    def get_vocab(self) -> dict[str, int]: ...  # whether two models can exchange token ids

    def __len__(self) -> int: ...


@runtime_checkable
class TokenModel(Protocol):
    """A loaded model a token-level method can step.

    `next_logits` runs one forward pass over a left-padded batch (torch tensors on the CPU; the model moves
    them) and returns the last position's next-token logits [rows, vocab] and, with `hidden`, the last layer's
    hidden state there [rows, dim], both float32 on the CPU. With a `kv_cache` (made by `new_kv_cache`) the
    pass reads the cached positions and appends the new ones to it; `select_kv_rows` keeps only some rows of
    such a cache (finished rows leave the batch)."""

    fingerprint: str  # identifies the weights: composite backends key cached answers on it
    batch_size: int  # rows the model decodes at once (its engine setting)
    tokenizer: Tokenizer
    eos_ids: set[int]

    def encode(self, request: GenRequest) -> list[int]:
        """The exact prompt ids the model reads for a request (chat template, role prompt, assistant prefix)."""
        ...

    def new_kv_cache(self) -> Any: ...

    def next_logits(self, input_ids: Any, attention_mask: Any, position_ids: Any, kv_cache: Any = None,
                    hidden: bool = False) -> tuple[Any, Any]: ...

    def select_kv_rows(self, kv_cache: Any, rows: list[int]) -> None: ...

    def hit_stop(self, tokens: list[int], stops: tuple[str, ...]) -> bool:
        """Whether the text of the generated `tokens` contains one of the stop strings."""
        ...


@runtime_checkable
class TrainableTokenModel(TokenModel, Protocol):
    """A token model whose torch module can be trained on (Co-LLM's deferral head reads its hidden states)."""

    model: Any


def require_token_model(backend: object, name: str, kind: str, method: str) -> TokenModel:
    """The backend as a TokenModel, or the one-line error a user of `method` needs."""
    if not isinstance(backend, TokenModel):
        raise ConfigError(f"method {method} decodes token by token and needs a local Hugging Face model; "
                          f"'{name}' is a {kind} backend")
    return backend
