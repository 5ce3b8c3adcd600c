"""Content fingerprints of model folders: every byte of every file counts.

A model folder's fingerprint keys the response cache, so weights changed anywhere (a fine-tune written over
the same files, one tensor edited in the middle) must change it, or the cache serves the old model's
answers. Each file is hashed in full (SHA-256) once; the digest is remembered in a small memo file next to
the response cache, keyed by the file's path and its (size, mtime_ns, ctime_ns, inode, device). Any write
changes the ctime, which no user tool can set back, so a re-run of an unchanged model reads no weights.
The memo is only a speed-up: unreadable, corrupt or read-only, it is ignored and the files are hashed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from moco.errors import ModelError

log = logging.getLogger(__name__)
MEMO_NAME = "file_hashes.json"
MEMO_MIN_BYTES = 1 << 20  # smaller files are hashed every time (faster than a memo lookup is worth)
MEMO_MAX_ENTRIES = 20_000
_lock = threading.Lock()


def memo_path() -> Path:
    from moco.cache import cache_dir

    return cache_dir() / MEMO_NAME


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _load_memo(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_memo(path: Path, memo: dict[str, list[Any]]) -> None:
    """Atomic write; a cache directory that cannot be written only costs the next run a re-hash."""
    if len(memo) > MEMO_MAX_ENTRIES:  # keep the newest entries (dicts keep insertion order)
        memo = dict(list(memo.items())[-MEMO_MAX_ENTRIES:])
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memo), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        log.info("fingerprint memo not written (%s): %s", path, e.strerror)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def file_digest(f: Path) -> str:
    """Full SHA-256 of one file's bytes."""
    with open(f, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _files(path: Path) -> list[Path]:
    out = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or rel == "training_log.json":  # the trainer's log (wall time) is not weights
            continue
        out.append(f)
    return out


def folder_fingerprint(path: Path) -> str:
    """16 hex digits over every file's relative name and full content hash (memoised by stat, see above)."""
    if not path.is_dir():
        raise ModelError(f"model folder not found: {path}")
    h = hashlib.sha256()
    with _lock:
        memo_file = memo_path()
        memo = _load_memo(memo_file)
        changed = False
        for f in _files(path):
            rel = f.relative_to(path).as_posix()
            try:
                st = f.stat()
                key = str(f.resolve())
                entry = memo.get(key)
                if st.st_size >= MEMO_MIN_BYTES and isinstance(entry, list) and entry[:-1] == _stat_key(st):
                    digest = entry[-1]
                else:
                    digest = file_digest(f)
                    if st.st_size >= MEMO_MIN_BYTES:
                        memo.pop(key, None)
                        memo[key] = _stat_key(st) + [digest]
                        changed = True
            except OSError as e:
                raise ModelError(f"{f}: cannot read the model file: {e.strerror}") from None
            h.update(f"{rel}:{st.st_size}:{digest}\n".encode())
        if changed:
            _save_memo(memo_file, memo)
    return h.hexdigest()[:16]
