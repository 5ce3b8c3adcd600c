"""Call records: every model call (cached or not) goes to calls.jsonl as it happens, and into phase totals."""
from __future__ import annotations

import contextvars
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from moco import faults
from moco.failures import FailedCall

KEEP_FAILED = 10_000  # failed calls kept with their prompts; a run fails long before (a server may not)


@dataclass
class PhaseStats:
    """Cost of one phase (dev = selection/training/search, test = answering)."""

    calls: int = 0
    cache_hits: int = 0
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0  # all output tokens the method consumed (cached ones included): its true cost
    generated_tokens: int = 0  # tokens actually decoded in this process (cache misses)
    tokens_reused: int = 0  # prompt tokens of those calls whose KV was reused instead of computed
    compute_s: float = 0.0  # model time attributed to the calls, cached calls at their original cost
    wall_s: float = 0.0
    per_model: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, model: str, tokens_in: int, tokens_out: int, latency: float, cached: bool, failed: bool,
            reused: int = 0) -> None:
        self.calls += 1
        self.tokens_reused += 0 if cached else reused
        self.cache_hits += int(cached)
        self.failed += int(failed)
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.generated_tokens += 0 if cached else tokens_out
        self.compute_s += latency
        pm = self.per_model.setdefault(model, {"calls": 0, "tokens_in": 0, "tokens_out": 0})
        pm["calls"] += 1
        pm["tokens_in"] += tokens_in
        pm["tokens_out"] += tokens_out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_s"] = round(self.compute_s, 3)
        d["wall_s"] = round(self.wall_s, 3)
        return d


class CallRecorder:
    """Appends one JSON line per model call and keeps per-phase totals.

    A run directory re-used after an interruption keeps the earlier attempts' lines: each line carries
    `attempt` (1 for the first run into the directory, 2 for the first re-run, ...), and a line torn by a
    kill is cut off before the new attempt appends, so every line stays valid JSON."""

    def __init__(self, path: Path | None, attempt: int = 1):
        self.path = path
        self.attempt = attempt
        if path:
            drop_torn_tail(path)
        self._fh: IO[str] | None = open(path, "a", buffering=1) if path else None
        self._lock = threading.Lock()
        self.phases: dict[str, PhaseStats] = {}
        self._phase: contextvars.ContextVar[str] = contextvars.ContextVar(f"moco_phase_{id(self)}", default="test")
        self.failures: list[FailedCall] = []  # calls that failed after their retries, in order (see failures.py)
        self.failures_untraced = 0  # failed calls past KEEP_FAILED (a long-lived server): counted, not kept

    @property
    def phase(self) -> str:
        """The phase calls are accounted to, per task: calls of one run made concurrently (asyncio.gather) in
        different phases do not overwrite each other's."""
        return self._phase.get()

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase.set(name)

    def enter(self, name: str) -> contextvars.Token[str]:
        """Account this task's calls to `name` until `leave(token)`."""
        return self._phase.set(name)

    def leave(self, token: contextvars.Token[str]) -> None:
        self._phase.reset(token)

    def stats(self, phase: str | None = None) -> PhaseStats:
        return self.phases.setdefault(phase or self.phase, PhaseStats())

    def record(self, *, model: str, key: str, tag: str, tokens_in: int, tokens_out: int, latency: float,
               cached: bool, finish: str, error: str | None, batch: int | None, reused: int = 0,
               prompt: str | None = None, phase: str | None = None) -> None:
        """`prompt` (the call's text) lets a failed call be traced to the items it belonged to; `phase`: the phase
        the call was made in (default: the current one)."""
        phase = phase or self.phase
        with self._lock:
            if error is not None and len(self.failures) < KEEP_FAILED:
                self.failures.append(FailedCall(phase, tag, model, error, prompt))
            elif error is not None:
                self.failures_untraced += 1
            self.stats(phase).add(model, tokens_in, tokens_out, latency, cached, error is not None, reused)
            if self._fh:
                faults.torn_write("calls.write", self._fh, json.dumps({
                    "t": round(time.time(), 3), "phase": phase, "tag": tag, "model": model, "key": key[:16],
                    "tokens_in": tokens_in, "tokens_out": tokens_out, "tokens_reused": 0 if cached else reused,
                    "latency_s": round(latency, 4),
                    "cache_hit": cached, "finish": finish, "error": error, "batch": batch, "attempt": self.attempt,
                }) + "\n")

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None


def drop_torn_tail(path: Path) -> int:
    """Cut a last line that a kill left without its newline (returns the bytes removed)."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, 2)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            keep, pos = 0, size
            while pos > 0:  # find the last newline, reading backwards in blocks
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    keep = pos + nl + 1
                    break
            f.truncate(keep)
            return size - keep
    except FileNotFoundError:
        return 0
