"""SQLite response cache: every finished model call is written through at once, so a killed run resumes.

The key covers everything that changes the output: the model fingerprint (weights, adapter, dtype, device
type), the messages (role prompts included), the sampling parameters, the run seed (not for greedy decoding,
where it cannot matter), the replica index (the i-th sample of the same prompt) and the content hashes of
attached images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moco import faults
from moco.errors import StorageError
from moco.models.base import GenRequest, GenResult

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """MOCO_CACHE_DIR, else the user's cache directory (~/.cache/moco)."""
    env = os.environ.get("MOCO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "moco"


def request_key(fingerprint: str, request: GenRequest, run_seed: int, replica: int = 0) -> str:
    """Stable hex key of one model call."""
    payload = {
        "fp": fingerprint,
        "messages": [list(m) for m in request.messages],
        "prefix": request.assistant_prefix,
        "sampling": request.sampling.key(),
        "replica": replica,
    }
    if not request.sampling.greedy:
        payload["seed"] = run_seed
    if request.images:  # text-only keys are unchanged; images count by content
        from moco.models.images import image_key

        payload["images"] = [image_key(i) for i in request.images]
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def seed_from_key(key: str) -> int:
    """A per-request sampling seed, so each row samples independently of its batch neighbours."""
    return int(key[:15], 16)


@dataclass
class CachedResponse:
    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str
    latency_s: float
    extra: dict[str, Any] | None = None

    def to_result(self) -> GenResult:
        extra = self.extra or {}
        return GenResult(self.text, self.tokens_in, self.tokens_out, self.finish_reason, self.latency_s,
                         token_logprobs=extra.get("token_logprobs"), top_logprobs=extra.get("top_logprobs"),
                         extra=extra.get("extra"))


class ResponseCache:
    """Thread-safe write-through cache. Failed calls are never stored, so a re-run retries them.

    A database that is not SQLite, or that SQLite finds corrupt (truncated, overwritten), is moved aside
    (`<name>.corrupt-<time>`) with a warning and a fresh one takes its place: the run goes on and only
    regenerates. A cache that cannot be written (disk full, read-only, no permission) is a StorageError
    naming the file; a batch is then not stored, and never half-stored."""

    def __init__(self, path: Path | str | None = None):
        if path is None:
            path = os.environ.get("MOCO_RESPONSE_CACHE") or cache_dir() / "responses.sqlite"
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self.moved_aside: list[Path] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unwritable(e.strerror or str(e)) from None
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            db = None
            try:
                db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, fingerprint TEXT, text TEXT,"
                    " tokens_in INTEGER, tokens_out INTEGER, finish_reason TEXT, latency_s REAL, created REAL)"
                )
                cols = {row[1] for row in db.execute("PRAGMA table_info(responses)")}
                if "extra" not in cols:
                    db.execute("ALTER TABLE responses ADD COLUMN extra TEXT")
                return db
            except sqlite3.DatabaseError as e:
                if db is not None:
                    db.close()
                if attempt == 1 and _corrupt(e):
                    self._move_aside(e)
                    continue
                raise self._unwritable(str(e)) from None
        raise AssertionError("unreachable")

    def _move_aside(self, e: BaseException) -> None:
        """Rename the broken database (and its WAL/SHM files) so a fresh one can be created; say so."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(aside) + suffix))
        except OSError as err:
            raise StorageError(f"the response cache {self.path} is corrupt ({e}) and cannot be moved aside: "
                               f"{err.strerror}") from None
        self.moved_aside.append(aside)
        log.warning("the response cache %s is corrupt (%s): moved aside to %s; a new cache is started", self.path,
                    e, aside.name)

    def _unwritable(self, why: str) -> StorageError:
        return StorageError(f"the response cache {self.path} cannot be used: {why} (free space or fix its "
                            "permissions, point MOCO_CACHE_DIR elsewhere, or pass --no-cache)")

    def _recover(self, e: sqlite3.DatabaseError) -> None:
        """Corruption found mid-run: move the file aside and continue on a fresh database."""
        if not _corrupt(e):
            raise self._unwritable(str(e)) from None
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._move_aside(e)
        self._db = self._open()

    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            try:
                return self._get(uniq)
            except sqlite3.DatabaseError as e:
                self._recover(e)
                return {}

    def _get(self, uniq: list[str]) -> dict[str, CachedResponse]:
        out: dict[str, CachedResponse] = {}
        for i in range(0, len(uniq), 500):
            chunk = uniq[i : i + 500]
            q = ("SELECT key, text, tokens_in, tokens_out, finish_reason, latency_s, extra FROM responses"
                 " WHERE key IN (%s)")
            for row in self._db.execute(q % ",".join("?" * len(chunk)), chunk):
                extra = json.loads(row[6]) if row[6] else None
                out[row[0]] = CachedResponse(row[1], row[2], row[3], row[4], row[5], extra)
        return out

    def put_many(self, items: list[tuple[str, str, GenResult]]) -> None:
        """Store (key, fingerprint, result) rows in one transaction: a batch is cached whole or not at all."""
        rows = [
            (k, fp, r.text, r.tokens_in, r.tokens_out, r.finish_reason, r.latency_s, time.time(), _extra(r))
            for k, fp, r in items
            if not r.failed
        ]
        storable = [row for row in rows if _encodable(row)]
        if len(storable) < len(rows):  # a lone surrogate from an endpoint: SQLite takes only UTF-8 text
            log.warning("%d response(s) with text that is not Unicode (a lone surrogate) are not cached",
                        len(rows) - len(storable))
            rows = storable
        if not rows:
            return
        with self._lock:
            try:
                self._put(rows)
            except OSError as e:  # an injected fault (MOCO_FAULT=cache.commit:N:ENOSPC)
                raise self._unwritable(e.strerror or str(e)) from None
            except sqlite3.DatabaseError as e:
                self._recover(e)
                try:
                    self._put(rows)
                except sqlite3.DatabaseError as again:
                    raise self._unwritable(str(again)) from None

    def _put(self, rows: list[tuple[Any, ...]]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO responses (key, fingerprint, text, tokens_in, tokens_out, finish_reason,"
                " latency_s, created, extra) VALUES (?,?,?,?,?,?,?,?,?)", rows)
            faults.hit("cache.commit")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already (a full disk): keep the real error
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    def __len__(self) -> int:
        with self._lock:
            n: int = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            return n

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _encodable(row: tuple[Any, ...]) -> bool:
    try:
        for v in row:
            if isinstance(v, str):
                v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _corrupt(e: sqlite3.DatabaseError) -> bool:
    """SQLite's own verdict: not a database, or a malformed one (not: locked, full, read-only, I/O)."""
    name = getattr(e, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(e) or \
        "file is not a database" in str(e)


def _extra(r: GenResult) -> str | None:
    if r.token_logprobs is None and r.top_logprobs is None and r.extra is None:
        return None
    d: dict[str, Any] = {"token_logprobs": r.token_logprobs, "top_logprobs": r.top_logprobs}
    if r.extra is not None:
        d["extra"] = r.extra
    return json.dumps(d)


class NullCache(ResponseCache):
    """A cache that stores nothing (benchmarks, `--no-cache`)."""

    def __init__(self) -> None:  # noqa: D107 - nothing to open
        pass

    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        return {}

    def put_many(self, items: list[tuple[str, str, GenResult]]) -> None:
        return None

    def __len__(self) -> int:
        return 0

    def close(self) -> None:
        return None
