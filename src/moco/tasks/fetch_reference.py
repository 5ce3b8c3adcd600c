"""Datasets with no hub source we trust: the MoCo JSON files published in the reference implementation's repo.

The MoCo paper's repository (github.com/BunsenFeng/model_collaboration) ships every evaluation set as
`model_collaboration/data/<name>.json` in exactly our format. For the datasets whose original hub source we
could not pin down (see `fetch.py`), `moco data fetch` downloads that file instead. The branch is resolved to a
commit at the first fetch; the commit and the file's SHA-256 are recorded in `<name>.source.json`, and later
fetches reuse the commit and refuse a file whose digest changed.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx

from moco.errors import DataError

REPO = "BunsenFeng/model_collaboration"
DATA_PATH = "model_collaboration/data"
BRANCH = "main"

# Shipped with the paper, not rebuilt from a hub dataset (our converters cover the others).
NAMES: tuple[str, ...] = (
    "agieval", "agieval_tiny", "blend", "human_interest", "human_interest_tiny", "infinite_chat_diversity",
    "kaleidoscope", "sciencemeter", "sciriff", "tablemwp_free_text", "tablemwp_multiple_choice", "wikidyk",
)

Getter = Callable[[str, dict[str, str]], httpx.Response]


def _get(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=60.0, follow_redirects=True)


def file_url(name: str, commit: str) -> str:
    return f"https://raw.githubusercontent.com/{REPO}/{commit}/{DATA_PATH}/{name}.json"


def resolve_commit(revision: str, get: Getter | None = None) -> str:
    """A branch or tag name -> the commit it points at now (a 40-hex commit is returned as is)."""
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower()):
        return revision
    r = (get or _get)(f"https://api.github.com/repos/{REPO}/commits/{revision}", {"Accept": "application/vnd.github.sha"})
    if r.status_code != 200:
        raise DataError(f"cannot resolve {REPO}@{revision} on GitHub (HTTP {r.status_code})")
    sha = r.text.strip()
    if len(sha) != 40:
        raise DataError(f"GitHub answered {sha[:60]!r} for the commit of {REPO}@{revision}")
    return sha


def download(name: str, revision: str = BRANCH, expected_sha256: str | None = None,
             get: Getter | None = None) -> tuple[dict[str, Any], str, str]:
    """The dataset object, the commit it came from, and the file's SHA-256."""
    get = get or _get
    try:
        commit = resolve_commit(revision, get)
        r = get(file_url(name, commit), {})
    except httpx.HTTPError as e:
        raise DataError(f"cannot download {name}.json from github.com/{REPO}: {type(e).__name__}: {e}. "
                        "Set MOCO_DATA_DIR to a folder of MoCo JSON files") from None
    if r.status_code != 200:
        raise DataError(f"cannot download {name}.json from github.com/{REPO}@{commit[:12]} (HTTP {r.status_code})")
    digest = hashlib.sha256(r.content).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise DataError(f"{name}.json at {REPO}@{commit[:12]} has SHA-256 {digest[:16]}..., not the recorded "
                        f"{expected_sha256[:16]}...: refusing a dataset that changed (use --force to accept it)")
    try:
        data = json.loads(r.content)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}.json from {REPO}@{commit[:12]} is not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("test"), list):
        raise DataError(f"{name}.json from {REPO}@{commit[:12]} is not in MoCo format (no 'test' list)")
    data.setdefault("dev", [])
    return data, commit, digest
