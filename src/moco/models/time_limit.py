"""A deadline that decoding loops honour, so `moco serve` can stop a request at its time limit.

The server's worker thread runs a batch inside `deadline(at)`; the local decoding loops (hf.decode_rows,
the scripted model's paced replies) call `passed()` between decode steps. Rows still decoding when the
deadline passes stop there with finish reason "time_limit" and an error (never cached, never an answer);
rows that had finished keep their text. So one slow request frees the worker at its limit and its batch
neighbours keep their answers. Outside a `deadline` block nothing is ever stopped (runs, scoring, tests).
Calls to remote endpoints keep their own HTTP timeout; the server's 504 covers them.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

FINISH = "time_limit"
ERROR = "stopped at the request's time limit"
_local = threading.local()


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Inside the block, `passed()` is true once time.monotonic() reaches `at` (None: no limit)."""
    prev = getattr(_local, "at", None)
    _local.at = at
    try:
        yield
    finally:
        _local.at = prev


def passed() -> bool:
    at = getattr(_local, "at", None)
    return at is not None and time.monotonic() >= at


def error_for(finish: str) -> str | None:
    """The error a result carries for its finish reason (only a row stopped at the deadline has one)."""
    return ERROR if finish == FINISH else None
