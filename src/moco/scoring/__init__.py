"""Scorers, one per file; `scorer_for(task_type)` picks one."""
from moco.scoring.base import Scorer, ScoreResult
from moco.scoring.registry import scorer_for

__all__ = ["ScoreResult", "Scorer", "scorer_for"]
