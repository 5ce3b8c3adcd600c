"""MoCo: model collaboration — run, evaluate and compare multi-LLM collaboration methods from one config.

Public API: `load_config`, `parse_config`, `run_experiment`, `plan`, and the method decorator `method`.
"""
from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from moco.config import ExperimentConfig, load_config, parse_config
    from moco.methods.registry import method
    from moco.runner import plan, run_experiment

_LAZY = {
    "load_config": "moco.config", "parse_config": "moco.config", "ExperimentConfig": "moco.config",
    "run_experiment": "moco.runner", "plan": "moco.runner", "method": "moco.methods.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
