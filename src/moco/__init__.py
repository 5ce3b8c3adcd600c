"""MoCo: model collaboration — run, evaluate and compare multi-LLM collaboration methods from one config.

    import moco
    result = moco.run("examples/majority_vote_pseudo_experts.yaml", limit=20, seed=1)
    result.score, result.interval, result.cost, result.to_pandas()

`run`, `compare` and `score` are the notebook API (docs/python-api.md); `load_config`, `parse_config`, `plan`
and `run_experiment` the lower layer the CLI uses; `method` registers a new collaboration method. Everything
is imported on first use, so `import moco` costs nothing.
"""
from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from moco.api import Comparison, Cost, RunResult, ScoreResult, compare, release_models, run, score
    from moco.config import ExperimentConfig, load_config, parse_config
    from moco.errors import ConfigError, MocoError
    from moco.methods.registry import method
    from moco.runner import plan, run_experiment

_LAZY = {
    "run": "moco.api", "compare": "moco.api", "score": "moco.api", "release_models": "moco.api",
    "RunResult": "moco.api", "Comparison": "moco.api", "ScoreResult": "moco.api", "Cost": "moco.api",
    "load_config": "moco.config", "parse_config": "moco.config", "ExperimentConfig": "moco.config",
    "run_experiment": "moco.runner", "plan": "moco.runner", "method": "moco.methods.registry",
    "MocoError": "moco.errors", "ConfigError": "moco.errors",
}

# spelled out as a literal so linters and type checkers see the re-exports (tests/test_python_api.py pins it)
__all__ = [
    "Comparison", "ConfigError", "Cost", "ExperimentConfig", "MocoError", "RunResult", "ScoreResult", "compare",
    "load_config", "method", "parse_config", "plan", "release_models", "run", "run_experiment", "score",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moco' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
