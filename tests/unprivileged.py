"""Run a command as an ordinary user, and/or where no namespace can be created, from tests that run as root.

As root (this machine, CI), `as_user` switches to `nobody` (uid 65534) with `setpriv` (or `runuser`) and a
writable temporary HOME. The interpreter may live where `nobody` cannot look (pyenv under /root, mode 700):
then the command starts inside a mount namespace (bubblewrap, as root) whose view of such a folder is an empty
tmpfs with only the needed paths bound back read-only; nothing else of the host changes. Run by an ordinary
user already, the command runs as that user. `no_namespaces=True` wraps it (as that user) in `bwrap
--unshare-user --disable-userns`: inside, creating a namespace fails for real, as in a container without
CAP_SYS_ADMIN or on a kernel that forbids unprivileged user namespaces. `as_root=True` (tests running as root
only) keeps uid 0 but drops every capability and forbids user namespaces: root in a container.

`why_not(...)` says why this cannot be done here ("" when it can); tests skip with it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

NOBODY = 65534
ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _switch() -> list[str] | None:
    if shutil.which("setpriv"):
        return [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if shutil.which("runuser"):
        return [shutil.which("runuser"), "-u", "nobody", "--"]
    return None


def _needed() -> list[Path]:
    """What the command must read: the interpreter's installation, the virtualenv, the source and tests."""
    paths = {Path(os.path.realpath(sys.base_prefix)), Path(os.path.realpath(sys.prefix)), ROOT}
    paths |= {Path(os.path.realpath(p)) for p in sys.path if p and os.path.isdir(p)}
    return sorted(p for p in paths if not any(q in p.parents for q in paths))


def _blocking(path: Path) -> Path | None:
    """The highest folder on the way to `path` that others cannot traverse, or None."""
    for parent in [*reversed(path.parents), path]:
        if parent.is_dir() and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def _root_view() -> list[str]:
    """bwrap arguments (as root) that hide each blocking folder behind a tmpfs and bind the needed paths back."""
    hide: dict[Path, list[Path]] = {}
    for p in _needed():
        b = _blocking(p)
        if b is not None:
            hide.setdefault(b, []).append(p)
    if not hide:
        return []
    args = [shutil.which("bwrap"), "--dev-bind", "/", "/"]
    for b, under in hide.items():
        args += ["--tmpfs", str(b)]
        for p in under:
            for a in [a for a in reversed(p.parents) if b in a.parents]:  # folders bwrap would make 0700
                args += ["--perms", "0755", "--dir", str(a)]
            args += ["--ro-bind", str(p), str(p)]
    return [*args, "--die-with-parent", "--"]


@functools.lru_cache(maxsize=2)
def why_not(no_namespaces: bool = False) -> str:
    if os.geteuid() == 0:
        if _switch() is None:
            return "running as root without setpriv or runuser to switch to an ordinary user"
        if (_root_view() or no_namespaces) and not shutil.which("bwrap"):
            return "running as root and the interpreter is hidden from other users, but bwrap is missing"
    elif no_namespaces and not shutil.which("bwrap"):
        return "bwrap is needed to forbid namespaces"
    if no_namespaces:
        probe = subprocess.run(["bwrap", "--help"], capture_output=True, text=True)
        if "--disable-userns" not in probe.stdout:
            return "this bwrap has no --disable-userns (bubblewrap >= 0.8 needed)"
    try:  # the real thing, once: a kernel or container may still forbid it
        r = subprocess.run(command([shutil.which("true") or "/bin/true"], Path("/"), no_namespaces),
                           capture_output=True, text=True, timeout=60, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the switch to an ordinary user failed: {e}"
    if r.returncode != 0:
        return f"the switch to an ordinary user failed: {r.stderr.strip()[-200:] or r.returncode}"
    return ""


@contextlib.contextmanager
def user_dir(prefix: str = "moco-user-") -> Iterator[Path]:
    """A temporary folder the ordinary user owns (and root can clean up)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        d.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(d, NOBODY, NOBODY)
        yield d
    finally:
        if os.geteuid() != 0:  # the user may have made things read-only
            for p in [d, *d.rglob("*")]:
                if p.is_dir() and not p.is_symlink():
                    with contextlib.suppress(OSError):
                        p.chmod(0o755)
        shutil.rmtree(d, ignore_errors=True)


def give(path: Path) -> None:
    """Make `path` (and what is below it) the ordinary user's, as a file they wrote would be."""
    if os.geteuid() == 0:
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(p, NOBODY, NOBODY, follow_symlinks=False)


def command(argv: list[str], home: Path, no_namespaces: bool = False, as_root: bool = False) -> list[str]:
    env = [shutil.which("env"), f"HOME={home}", f"PYTHONPATH={SRC}{os.pathsep}{ROOT / 'tests'}"]
    inner = [*env, *argv]
    if as_root:
        return [shutil.which("bwrap"), "--unshare-user", "--disable-userns", "--uid", "0", "--gid", "0", "--cap-drop",
                "ALL", "--dev-bind", "/", "/", "--die-with-parent", "--", *inner]
    if no_namespaces:
        inner = [shutil.which("bwrap"), "--unshare-user", "--disable-userns", "--dev-bind", "/", "/", "--die-with-parent", "--",
                 *inner]
    if os.geteuid() != 0:
        return inner
    return [*_root_view(), *_switch(), *inner]


def run(argv: list[str], home: Path, *, no_namespaces: bool = False, as_root: bool = False,
        env: dict[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`argv` as the ordinary user (see the module docstring); `python` at argv[0] means this interpreter."""
    argv = [sys.executable if a == "python" else a for a in argv]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MOCO_", "PYTEST"))}
    base.update({"MOCO_CACHE_DIR": str(home / ".cache" / "moco"), "TMPDIR": "/tmp"})
    base.update(env or {})
    return subprocess.run(command(argv, home, no_namespaces, as_root), capture_output=True, text=True, env=base,
                          cwd=str(cwd or home), timeout=timeout)
