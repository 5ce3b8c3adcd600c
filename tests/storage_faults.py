"""Real storage faults for tests: a full disk (a tiny tmpfs) and a read-only folder, as root or not.

As root, permission bits do not stop writes, so a read-only folder is a read-only bind mount; a full disk is
a tmpfs of a few KiB mounted over the folder. Without the right to mount, `read_only` falls back to
permission bits (which do hold for an ordinary user) and `full_disk` skips the test with the reason."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, timeout=30).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextmanager
def read_only(path: Path):
    """`path` (an existing folder) cannot be written to while inside."""
    path = Path(path)
    if os.geteuid() == 0:
        if not (_mount("--bind", str(path), str(path)) and _mount("-o", "remount,bind,ro", str(path))):
            _umount(path)
            pytest.skip("running as root without the right to mount: cannot make a read-only folder")
        try:
            yield path
        finally:
            _umount(path)
        return
    mode = path.stat().st_mode
    path.chmod(0o500)
    try:
        yield path
    finally:
        path.chmod(mode)


@contextmanager
def full_disk(path: Path, size: str = "64k"):
    """A tmpfs of `size` mounted at `path` (created): writes past it fail with ENOSPC."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        pytest.skip("a full disk needs a tmpfs mount (root with CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        _umount(path)


def fill(path: Path) -> None:
    """Fill the filesystem of `path` to the last byte (unbuffered writes: no flush can fail later)."""
    fd = os.open(Path(path) / ".filler", os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
