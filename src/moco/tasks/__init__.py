"""Tasks: datasets, their prompts, and which scorer reads the answers."""
from moco.tasks.base import DataProblem, Example, Task
from moco.tasks.registry import TaskInfo, available_tasks, resolve_task

__all__ = ["DataProblem", "Example", "Task", "TaskInfo", "available_tasks", "resolve_task"]
