"""Terminal output rules of the CLI: boxes and colour only on a terminal that wants them, nothing cut or wrapped
when the output goes to a file or a pipe (so it can be grepped)."""
from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.table import Table

# width given to a console that writes to a pipe or a file: lines are never wrapped there
PIPE_WIDTH = 100_000


def wants_plain(stream: object | None = None) -> bool:
    """True without a terminal or with NO_COLOR set (https://no-color.org): no boxes, no colour."""
    stream = stream or sys.stdout
    return bool(os.environ.get("NO_COLOR")) or not getattr(stream, "isatty", lambda: False)()


def make_console(stderr: bool = False) -> Console:
    """The CLI's console: a terminal's own width, or unlimited width (no wrapping) for pipes and files."""
    stream = sys.stderr if stderr else sys.stdout
    tty = getattr(stream, "isatty", lambda: False)()
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(stderr=stderr, no_color=plain or None, color_system=None if plain else "auto",
                   width=None if tty else PIPE_WIDTH, highlight=False)


def make_table(title: str | None = None, **kw: object) -> Table:
    """A rich Table with box lines on a terminal, none (columns separated by spaces) elsewhere."""
    if wants_plain():
        return Table(title=title, box=None, show_edge=False, pad_edge=False, title_justify="left", **kw)
    return Table(title=title, **kw)


def print_table(console: Console, table: Table) -> None:
    """Print a table; without boxes (pipe, NO_COLOR) its lines lose the trailing padding."""
    if table.box is not None:
        console.print(table)
        return
    with console.capture() as cap:
        console.print(table)
    for line in cap.get().splitlines():
        console.print(line.rstrip(), markup=False, highlight=False, soft_wrap=True)


def print_wide(console: Console, table: Table) -> None:
    """Print a table at its natural width even on a narrower terminal (the terminal may wrap the lines; no
    cell is cut or folded)."""
    need = console.measure(table, options=console.options.update(width=PIPE_WIDTH)).maximum
    width = console.width
    console.width = max(width, need)
    try:
        print_table(console, table)
    finally:
        console.width = width
