"""What the weight-level methods share: the experts' weights as merge sources, checks that need no loaded
model, and the particle-swarm hyperparameters (reference key names accepted as aliases)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from moco.config import ModelSpec
from moco.context import RunContext
from moco.errors import ConfigError
from moco.merging import LoraAdapter, LoraSource, Node, Source
from moco.methods.registry import MethodParams
from moco.models.compat import base_identity
from moco.models.pool import ModelHandle
from moco.search import SwarmSettings


class PSOParams(MethodParams):
    """Particle swarm hyperparameters. Defaults: the MoCo reference implementation's NumericSwarm (its §2.4),
    not a paper's; `weight_model_swarms` overrides them with the Model Swarms authors' code defaults."""

    inertia: float = Field(0.2, ge=0, description="weight of the particle's previous velocity")
    cognitive: float = Field(0.3, ge=0, alias="cognitive_coefficient", description="pull towards the particle's best")
    social: float = Field(0.4, ge=0, alias="social_coefficient", description="pull towards the swarm's best")
    repel: float = Field(0.05, ge=0, alias="repel_coefficient", description="push away from the swarm's worst")
    repel_term: bool = Field(True, alias="repel_term_flag", description="use the repel term")
    weight_randomness: bool = Field(True, alias="weight_randomness_flag",
                                    description="draw the four term weights from U(0,1) every step")
    step_length: float = Field(0.5, gt=0, description="initial step length")
    step_length_factor: float = Field(0.95, gt=0, le=1, description="step length decay per iteration")
    minimum_step_length: float = Field(0.1, gt=0, description="lower bound of the step length")
    patience: int = Field(5, ge=1, description="stop when the global best has not improved for this many iterations")
    restart_patience: int = Field(3, ge=1, description="restart a particle at its best after this many stale iterations")
    max_iterations: int = Field(10, ge=1, description="at most this many swarm updates")

    def swarm_settings(self, seed: int, **overrides: Any) -> SwarmSettings:
        keys = ("inertia", "cognitive", "social", "repel", "repel_term", "weight_randomness", "step_length",
                "step_length_factor", "minimum_step_length", "patience", "restart_patience")
        return SwarmSettings(**{k: getattr(self, k) for k in keys}, seed=seed, **overrides)


def check_weight_pool(params: Any, pool: Any) -> list[str]:
    """Merged weights cannot carry role prompts: pseudo-experts are the same weights."""
    for h in pool.handles:
        if h.role_prompt:
            raise ConfigError(f"weight-level methods merge weights; model '{h.name}' has a role_prompt, which a "
                              "merged model cannot keep (use fine-tuned models, e.g. from `moco zoo build`)")
    return []


def lora_pool(handles: list[ModelHandle]) -> bool:
    """Every model is a LoRA adapter on one base (then the base plus low-rank deltas stand for the experts)."""
    return all(h.spec.adapter for h in handles) and len({base_identity(h.spec) for h in handles}) == 1


def base_spec(spec: ModelSpec, model: str | None = None) -> ModelSpec:
    """The base of an adapter spec (or `model`), loaded like it (same dtype, device, revision)."""
    return ModelSpec(model=model or spec.model, revision=spec.revision if model is None else None, dtype=spec.dtype,
                     device=spec.device, trust_remote_code=spec.trust_remote_code)


def source_of(ctx: RunContext, handle: ModelHandle) -> Source:
    """A pool model's weights (its resident parameters; nothing is copied)."""
    backend = ctx.local(handle).backend
    return Source(handle.name, ctx.local(handle).fingerprint, backend.model.state_dict())


@dataclass
class Experts:
    sources: list[Node]  # one per pool model, pool order
    template: Any  # a loaded backend of this architecture (the workbench copies it)
    base: Source | None  # the adapters' base when the pool is LoRA adapters


def experts(ctx: RunContext, *, prefer_lora: bool) -> Experts:
    """The experts as merge sources. With `prefer_lora` and a pool of adapters on one base, only the base is
    loaded and each expert is base + its low-rank delta (exact; two models in memory instead of n + 1)."""
    handles = ctx.models
    if prefer_lora and lora_pool(handles):
        bh = ctx.add_model(f"base:{handles[0].spec.model}", base_spec(handles[0].spec))
        backend = ctx.local(bh).backend
        base = Source(bh.name, ctx.local(bh).fingerprint, backend.model.state_dict())
        srcs: list[Node] = [LoraSource(h.name, ctx.local(h).fingerprint, base, LoraAdapter.load(h.spec.adapter))
                            for h in handles]
        return Experts(srcs, backend, base)
    srcs = [source_of(ctx, h) for h in handles]
    return Experts(srcs, ctx.local(handles[0]).backend, None)


async def dev_ranking(ctx: RunContext) -> tuple[list[int], list[float]]:
    """Model indices best first by dev score (ties keep pool order), and the scores (recorded with their
    intervals in metrics `dev_selection.dev_ranking`)."""
    from moco.selection import ranking

    return await ranking(ctx)
