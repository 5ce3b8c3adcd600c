"""A KV cache that appends in place instead of concatenating.

transformers' `DynamicLayer` grows by `torch.cat` at every decoding step, so each step copies the whole cache:
at 64 rows of 200 tokens that copy was a third of a decoding step on 2 CPU cores. `GrowingLayer` keeps the
keys and values in a buffer with spare columns, writes each step's token into the next column and hands the
model a view of the filled part; the buffer is reallocated (with room to spare) only when it is full.
Dropping finished rows selects rows of the buffer, so the spare columns stay.
"""
from __future__ import annotations

from typing import Any

SPARE = 64  # free columns after a reallocation: a usual answer fits without another copy


def _layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A full-attention layer cache whose `keys`/`values` are views into a larger buffer."""

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            super().lazy_initialization(key_states, value_states)
            self._kbuf = self._vbuf = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, add = self.get_seq_length(), key_states.shape[-2]
            buf = self._kbuf
            if (buf is None or buf.shape[0] != key_states.shape[0] or n + add > buf.shape[-2]
                    or (n and not self._in_buffer())):  # full, or keys replaced from outside
                self._grow(n, n + add + SPARE + n // 4, key_states, value_states)
            self._kbuf[:, :, n:n + add] = key_states
            self._vbuf[:, :, n:n + add] = value_states
            self.keys, self.values = self._kbuf[:, :, :n + add], self._vbuf[:, :, :n + add]
            return self.keys, self.values

        def _grow(self, n: int, cap: int, key_states: Any, value_states: Any) -> None:
            b, h, _, d = key_states.shape
            kbuf = key_states.new_empty((b, h, cap, d))
            vbuf = value_states.new_empty((b, value_states.shape[1], cap, value_states.shape[-1]))
            if n:
                kbuf[:, :, :n] = self.keys
                vbuf[:, :, :n] = self.values
            self._kbuf, self._vbuf = kbuf, vbuf

        def _in_buffer(self) -> bool:
            """`keys` still views our buffer (and was not replaced by a tensor set from outside)."""
            return self._kbuf is not None and self.keys.data_ptr() == self._kbuf.data_ptr()

        def batch_select_indices(self, indices: Any) -> None:
            n = self.get_seq_length()
            if n and self._in_buffer():
                self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]
                self.keys, self.values = self._kbuf[:, :, :n], self._vbuf[:, :, :n]
            else:
                super().batch_select_indices(indices)

        def reset(self) -> None:
            self._kbuf = self._vbuf = None
            super().reset()

    return GrowingLayer


_CLASS: list[type] = []


def new_cache(model: Any) -> Any:
    """A `DynamicCache` for `model` whose full-attention layers append in place; other layer kinds (sliding
    window, linear attention) are left as transformers builds them."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if not _CLASS:
        _CLASS.append(_layer_class())
    cache = DynamicCache(config=model.config)
    layers = getattr(cache, "layers", None)
    if layers:
        cache.layers = [_CLASS[0]() if type(layer) is DynamicLayer else layer for layer in layers]
    return cache
