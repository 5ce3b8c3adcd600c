"""The workbench: one resident copy of the architecture into which candidate merges are written in place.

A search loop (soup, swarm, LoraHub, ExPO's α) evaluates many merged models. Writing each to disk and loading
it again costs seconds per candidate and gigabytes of I/O; here a candidate is a light backend view holding
only its recipe. When it must generate, its recipe is evaluated parameter by parameter straight into the
workbench model (`param.copy_`, the in-place equivalent of `load_state_dict`), unless it is already loaded.
Its fingerprint is the recipe's digest, so cached answers of different candidates never mix, and a resumed
run takes finished candidates from the cache without merging at all.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from moco.errors import ModelError
from moco.merging.recipe import Node
from moco.models.base import GenRequest, GenResult
from moco.models.prefix_cache import forget


class Workbench:
    """A private copy of `template` (an HF backend): its tokenizer and decoding, weights set per candidate."""

    def __init__(self, template: Any):
        import torch

        if getattr(template, "model", None) is None:
            raise ModelError("a weight merge needs a loaded Hugging Face model as template")
        bench = copy.copy(template)
        with torch.no_grad():
            bench.model = copy.deepcopy(template.model)
        self.backend = bench
        self.params = dict(bench.model.named_parameters())  # tied weights appear once
        self.dtype = str(next(iter(self.params.values())).dtype).replace("torch.", "")
        self.loaded: str | None = None
        self.merges = 0
        self.merge_seconds = 0.0

    def load(self, recipe: Node) -> None:
        """Write the recipe's weights into the resident model (skipped when it is already loaded)."""
        import torch

        digest = recipe.digest()
        if self.loaded == digest:
            return
        t0 = time.time()
        self.loaded = None
        with torch.no_grad():
            for name, p in self.params.items():
                t = recipe.tensor(name)
                if t.shape != p.shape:
                    raise ModelError(f"merge: parameter {name} has shape {tuple(t.shape)}, the model expects {tuple(p.shape)}")
                p.copy_(t)
        forget(self.backend.model)  # KV computed with the previous weights is wrong now
        self.loaded = digest
        self.merges += 1
        self.merge_seconds += time.time() - t0

    def candidate(self, recipe: Node) -> "CandidateBackend":
        return CandidateBackend(self, recipe)

    def save(self, recipe: Node, out_dir: str | Path) -> Path:
        """Write the merged model as a normal Hugging Face folder (loads with the Auto classes) + its recipe."""
        out = Path(out_dir)
        self.load(recipe)
        out.mkdir(parents=True, exist_ok=True)
        self.backend.model.save_pretrained(out)
        self.backend.tokenizer.save_pretrained(out)
        (out / "merge_recipe.json").write_text(json.dumps(
            {"summary": recipe.summary(), "digest": recipe.digest(), "recipe": recipe.spec()}, indent=1))
        return out


class CandidateBackend:
    """A merged model as a backend: generation loads its recipe into the workbench first."""

    def __init__(self, bench: Workbench, recipe: Node):
        self.bench = bench
        self.recipe = recipe
        self.fingerprint = f"merge:{recipe.digest()}|{bench.dtype}"
        self.capabilities = bench.backend.capabilities

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        return self.bench.backend.plan_batches(requests)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        self.bench.load(self.recipe)
        return self.bench.backend.generate(requests)

    def loglikelihood(self, requests: list[GenRequest], continuations: list[str]) -> list[float]:
        """Log-probability of each continuation under the merged model (e.g. LoraHub's few-shot loss)."""
        self.bench.load(self.recipe)
        return self.bench.backend.loglikelihood(requests, continuations)

    def close(self) -> None:  # the workbench model belongs to the search, not to this view
        pass
