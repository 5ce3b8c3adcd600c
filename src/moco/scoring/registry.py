"""Which scorer reads which task type."""
from __future__ import annotations

from moco.errors import ConfigError
from moco.scoring.base import Scorer


def scorer_for(task_type: str, task_name: str = "") -> Scorer:
    from moco.scoring.exact import ExactMatchScorer
    from moco.scoring.multiple_choice import MultipleChoiceScorer

    table = {"multiple_choice": MultipleChoiceScorer, "exact_match": ExactMatchScorer}
    if task_type not in table:
        raise ConfigError(
            f"task '{task_name}' has task type '{task_type}', which has no scorer yet "
            f"(available: {', '.join(sorted(table))})"
        )
    return table[task_type]()
