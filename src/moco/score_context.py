"""The run context `moco score` gives a model-based scorer (a judge, a reward model) outside a run: its role bound
to a model named on the command line, its calls batched, cached and traced to `out_dir/calls.jsonl`.

It lives outside `moco.scoring` so that scoring never imports the run context.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from moco.cache import ResponseCache
from moco.config import DecodingSettings, ModelSpec
from moco.context import RunContext
from moco.errors import ConfigError
from moco.models.pool import ModelPool
from moco.tasks.base import Task
from moco.trace import CallRecorder


def scoring_context(task: Task, scorer: Any, role_models: dict[str, str | None], out_dir: Path,
                    seed: int = 0) -> RunContext | None:
    """A run context for a model-based scorer outside a run (its role bound to a model given on the CLI)."""
    role = getattr(scorer, "role", None)
    if role is None:
        return None
    model = role_models.get(role)
    if not model:
        raise ConfigError(f"scorer '{scorer.name}' needs a model for the role '{role}': pass --{role} MODEL")
    pool = ModelPool([])
    handle = pool.add_extra(role, ModelSpec(model=model))
    pool.check()
    out_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(pool=pool, task=task, scorer=scorer, cache=ResponseCache(), recorder=CallRecorder(out_dir / "calls.jsonl"),
                      decoding=DecodingSettings(), seed=seed, roles={role: handle})
