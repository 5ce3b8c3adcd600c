"""DevSearch: score merge recipes on dev through in-memory candidates, keep the cost, finish on test.

Every weight-level method follows the same path: build recipes, score them on dev (each a candidate
registered with `ctx.add_backend` under its recipe digest, generated through `ctx.generate`), pick one,
save it to the run directory as a Hugging Face folder, and answer the test set with it.
"""
from __future__ import annotations

import time
from typing import Any

from moco.context import Call, Output, RunContext
from moco.merging.recipe import Node
from moco.merging.workbench import Workbench
from moco.models.pool import ModelHandle
from moco.selection import dev_repeats, dev_sampling, record
from moco.tasks.base import Example


class DevSearch:
    def __init__(self, ctx: RunContext, template: Any, label: str, dev: list[Example] | None = None):
        self.ctx = ctx
        self.label = label
        self.dev = list(ctx.task.dev if dev is None else dev)
        self.bench = Workbench(template)
        self.handles: dict[str, ModelHandle] = {}
        self.scores: dict[str, float] = {}
        self.items: dict[str, list[float]] = {}  # recipe digest -> per-item dev scores (means over repeats)
        self.log: list[dict[str, Any]] = []
        self.seconds = 0.0

    def handle(self, recipe: Node) -> ModelHandle:
        """The candidate as a model `ctx.generate` can call (registered once per recipe)."""
        digest = recipe.digest()
        if digest not in self.handles:
            self.handles[digest] = self.ctx.add_model(f"{self.label}:{digest}", self.bench.candidate(recipe))
        return self.handles[digest]

    async def score(self, recipe: Node, **note: Any) -> float:
        """Mean dev score of the merged model (a recipe scored before is not evaluated again)."""
        digest = recipe.digest()
        if digest in self.scores:
            return self.scores[digest]
        if not self.dev:
            raise ValueError(f"task {self.ctx.task.name} has no dev examples; a dev-scored weight search is impossible")
        t0 = time.time()
        merges0 = self.bench.merges
        h = self.handle(recipe)
        sampling, reps, n = dev_sampling(self.ctx), dev_repeats(self.ctx), len(self.dev)
        with self.ctx.phase("dev"):  # greedy or `dev_repeats` samples per item (moco.selection)
            rs = await self.ctx.generate([Call(h, ex.prompt, sampling, replica=r) for r in range(reps) for ex in self.dev],
                                   tag=f"{self.label} candidate")
        scored = await self.ctx.score(self.dev * reps, [r.text for r in rs])  # batched (a judge scorer: one call)
        flat = [0.0 if r.failed else x.score for x, r in zip(scored, rs)]
        self.items[digest] = [sum(flat[r * n + i] for r in range(reps)) / reps for i in range(n)]
        s = sum(self.items[digest]) / max(1, n)
        dt = time.time() - t0
        self.seconds += dt
        self.scores[digest] = s
        self.log.append({"candidate": len(self.log), "recipe": recipe.summary(), "digest": digest, "dev_score": s,
                         "seconds": round(dt, 3), "merged": self.bench.merges > merges0,
                         "cached": all(r.cached for r in rs), **note})
        return s

    def report(self) -> dict[str, Any]:
        n = len(self.log)
        return {"candidates": n, "dev_examples": len(self.dev), "search_seconds": round(self.seconds, 3),
                "seconds_per_candidate": round(self.seconds / n, 3) if n else None,
                "merges": self.bench.merges, "merge_seconds": round(self.bench.merge_seconds, 3),
                "candidates_log": self.log}

    def record_choice(self, recipe: Node, top: int = 10) -> None:
        """Record the choice in metrics (`dev_selection.<label>`): the chosen candidate and the `top` best by
        dev score, each with its 95% interval over items, so a reader sees how close the choice was."""
        chosen = recipe.digest()
        if chosen not in self.items:
            return
        names = {e["digest"]: f"#{e['candidate']} {e['recipe']}" for e in self.log}
        best = sorted(self.items, key=lambda d: -self.scores[d])[:top]
        shown = best + ([chosen] if chosen not in best else [])
        record(self.ctx, self.label, [names.get(d, d) for d in shown], [self.items[d] for d in shown],
               names.get(chosen, chosen), evaluated=len(self.items))

    async def finish(self, recipe: Node, trace: dict[str, Any] | None = None) -> list[Output]:
        """Save the chosen model to the run directory, answer the test set with it, record the search cost."""
        saved = None
        if self.ctx.artifacts_dir is not None:
            saved = self.bench.save(recipe, self.ctx.artifacts_dir / "merged_model")
        h = self.handle(recipe)
        with self.ctx.phase("test"):
            rs = await self.ctx.ask(h, [ex.prompt for ex in self.ctx.task.test], tag=f"{self.label} final")
        self.ctx.metrics["search"] = self.report()
        self.record_choice(recipe)
        self.ctx.metrics["final_model"] = {"recipe": recipe.summary(), "digest": recipe.digest(),
                                                 "dev_score": self.scores.get(recipe.digest()),
                                                 "path": str(saved) if saved else None}
        base = {"model": recipe.summary(), "digest": recipe.digest(), **(trace or {})}
        return [Output(r.text, trace=dict(base), failed=r.failed) for r in rs]
