"""Progress reporting: a rich progress bar on a terminal (or when asked), nothing in tests."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class Progress:
    """`task(desc, total)` returns an id; `advance(id, n)`; `done(id)`. The null version does nothing."""

    def task(self, desc: str, total: int) -> Any:
        return None

    def advance(self, task: Any, n: int = 1) -> None:
        return None

    def done(self, task: Any) -> None:
        return None

    def message(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None


class RichProgress(Progress):
    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RP

        self.console = console or Console(stderr=True)
        self._p = RP(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), console=self.console, transient=False)
        self._p.start()

    def task(self, desc: str, total: int) -> Any:
        return self._p.add_task(desc, total=total)

    def advance(self, task: Any, n: int = 1) -> None:
        self._p.advance(task, n)

    def done(self, task: Any) -> None:
        t = self._p.tasks[task] if isinstance(task, int) and task < len(self._p.tasks) else None
        if t is not None and t.total is not None:
            self._p.update(task, completed=t.total)

    def message(self, text: str) -> None:
        self._p.console.print(text)

    def close(self) -> None:
        self._p.stop()


def make_progress(enabled: bool | None = None) -> Progress:
    if enabled is None:
        enabled = sys.stderr.isatty()
    return RichProgress() if enabled else Progress()
