"""User-facing errors: one line, exit code 2, no traceback unless --debug."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class MocoError(Exception):
    """An error caused by the user's input (config, data, models, endpoints), not a bug in MoCo."""

    exit_code = 2

    def __str__(self) -> str:  # a config value echoed in the message must not break the one line
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


class ConfigError(MocoError):
    """The config file is malformed or asks for something that cannot run."""


class DataError(MocoError):
    """A dataset file or row is malformed."""


class ModelError(MocoError):
    """A model cannot be found, loaded or reached."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest candidate, or '' when nothing is close."""
    pool = list(candidates)
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in pool}
        close = [lowered[w] for w in difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)]
    return f" (did you mean '{close[0]}'?)" if close else ""


class StorageError(MocoError):
    """A file MoCo must write (run directory, response cache) cannot be: disk full, read-only, no permission."""


class CallsFailed(MocoError):
    """Model calls failed after their retries (or a backend went down): the run has no score. Exit code 3, so a
    script tells it from a usage error (2); the answered calls are cached, and re-running redoes only the rest."""

    exit_code = 3


class BackendDown(CallsFailed):
    """A backend stopped answering at the connection level (refused, reset, timed out with its health endpoint
    gone): the run stops at once instead of waiting out every retry of every remaining call."""
