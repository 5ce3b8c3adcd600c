"""Fault injection for the reliability tests: the process kills itself (SIGKILL) at a named site.

`MOCO_FAULT=<site>:<n>[:<signal>][,...]` makes the process send itself SIGKILL (or the signal named: INT
for a Ctrl-C, TERM) the n-th time it passes `<site>` (n counts from 1); `ENOSPC` or `EROFS` in place of
the signal raises the OSError of a full or read-only disk there instead. `MOCO_FAULT_LOG=<file>` gets one
line `<site>:<n> <signal> <pid>` just before, so a test can tell an injected fault from a crash. When MOCO_FAULT is unset (always, outside tests) `hit` is
a function that does nothing and `torn_write` is a plain write.

Sites (each is where a real crash would hurt most):
"""
from __future__ import annotations

import errno
import os
import signal
from collections import Counter
from typing import IO

SITES = {
    "generate.batch": "a backend batch is generated and not yet cached",
    "cache.commit": "cache rows written inside the SQLite transaction, before COMMIT",
    "calls.write": "half of a calls.jsonl line written (a torn line)",
    "file.write": "a run-directory file's temporary copy written, before the atomic rename",
    "score.batch": "the scorer is about to score a batch (code runs in the sandbox then)",
    "train.step": "an optimizer step of LoRA training finished",
}
__doc__ += "".join(f"\n- `{k}`: {v}" for k, v in SITES.items()) + "\n"


SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
# storage faults: instead of a signal, the site raises the OSError a full or read-only disk gives
ERRNOS = {"ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS}


def parse(spec: str) -> dict[str, tuple[int, str]]:
    """'site:n[:SIG],...' -> {site: (n, SIG)}; unknown sites are an error (a typo must not inject nothing)."""
    plan: dict[str, tuple[int, str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        bits = part.split(":")
        site, n, sig = bits[0], bits[1] if len(bits) > 1 else "", bits[2] if len(bits) > 2 else "KILL"
        if site not in SITES or not n.isdigit() or int(n) < 1 or sig not in {**SIGNALS, **ERRNOS} or len(bits) > 3:
            raise ValueError(f"MOCO_FAULT: bad entry '{part}' (sites: {', '.join(SITES)}; n >= 1; "
                             f"signals: {', '.join(SIGNALS)}; or an error: {', '.join(ERRNOS)})")
        plan[site] = (int(n), sig)
    return plan


_PLAN = parse(os.environ.get("MOCO_FAULT", ""))
_COUNTS: Counter[str] = Counter()


def _due(site: str) -> bool:
    if site not in _PLAN:
        return False
    _COUNTS[site] += 1
    return _COUNTS[site] == _PLAN[site][0]


def _die(site: str) -> None:
    sig = _PLAN[site][1]
    log = os.environ.get("MOCO_FAULT_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{site}:{_COUNTS[site]} {sig} {os.getpid()}\n")
    if sig in ERRNOS:
        raise OSError(ERRNOS[sig], os.strerror(ERRNOS[sig]), f"<{site}>")
    os.kill(os.getpid(), SIGNALS[sig])


def _hit(site: str) -> None:
    if _due(site):
        _die(site)


def _torn_write(site: str, fh: IO[str], text: str) -> None:
    if _due(site):
        fh.write(text[: len(text) // 2])
        fh.flush()
        _die(site)
    fh.write(text)


def _noop(site: str) -> None:
    return None


def _plain_write(site: str, fh: IO[str], text: str) -> None:
    fh.write(text)


hit = _hit if _PLAN else _noop
"""Pass `site`: kill the process when this is the planned n-th pass."""
torn_write = _torn_write if _PLAN else _plain_write
"""Write `text` to `fh`; at the planned pass of `site`, write half of it, flush, and kill the process."""
