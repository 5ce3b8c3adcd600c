"""Run model-written code in an OS-level sandbox (bubblewrap), or refuse to.

The boundary is bubblewrap (`bwrap`, Debian package `bubblewrap`): each sandboxed process gets a new root
holding only /usr, the Python installation (read-only) and MoCo's small sandbox scripts (read-only), a private
/proc (it sees no other process), a minimal /dev, a writable /tmp that is a tmpfs of `disk_mb` (the disk quota
per item; nothing of it reaches the host disk; past `max_files` entries, watched from outside, the item stops), no network (new network namespace), new PID/IPC/UTS
namespaces, no environment but PATH/HOME/TMPDIR/LANG, no capabilities, and it dies with its parent. Inside,
rlimits cap CPU time, address space, file size, open files and processes. Started as root, the program drops
to a fresh unprivileged uid (so the process limit counts only its own processes and no host file is its own);
started as an ordinary user, it runs in a new user namespace.

Without a working bwrap, code is NOT run: `SandboxUnavailable` says why, unless the user opts in with
`MOCO_UNSAFE_CODE_EXECUTION=1` (or `CodeExecutionScorer(unsafe_code_execution=True)`); then code runs as a plain
subprocess with the rlimits, a scratch directory and an audit hook, which is not a security boundary.

Scoring a solution uses two processes (see `sandboxed/`): the candidate (the solution, in one sandbox) and the
checker (the dataset's tests, in another), talking over two pipes in tagged JSON. Standard library only, so
the tests can load this file under another interpreter and user.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LIB_DIR = str(Path(__file__).resolve().parent / "sandboxed")
UNSAFE_ENV = "MOCO_UNSAFE_CODE_EXECUTION"
BWRAP_ENV = "MOCO_BWRAP"  # a path to bwrap, or "none" to act as if it were missing
UID_BASE, UID_SPAN = 2_100_000_000, 40_000_000  # fresh uids for sandboxes started by root
AUDIT_LAYER = True  # the audit hook inside the solution's process: an extra layer (tests turn it off)


class SandboxUnavailable(RuntimeError):
    """No OS sandbox here and no explicit opt-in to run code without one."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-item limits."""

    timeout_s: float = 10.0  # wall clock for the item; CPU time is limited to the same number of seconds
    memory_mb: int = 1024  # address space of each process
    max_processes: int = 4  # tasks (processes and threads) the solution may have
    max_file_mb: int = 8  # largest file the program may write (its stdout/stderr included)
    max_open_files: int = 64
    disk_mb: int = 16  # size of the private /tmp (the item's whole disk quota)
    max_files: int = 10_000  # files and folders in the private /tmp (empty files cost no bytes, but memory)


@dataclass
class RunOutcome:
    passed: bool
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float
    reason_text: str = ""
    fallback: bool = False  # the tests ran beside the solution (see sandboxed/host.py)
    calls: int = 0

    @property
    def reason(self) -> str:
        if self.passed:
            return "passed"
        if self.timed_out:
            return "timeout"
        if self.reason_text:
            return self.reason_text
        last = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return last[-1][:300] if last else f"exit code {self.returncode}"


@functools.lru_cache(maxsize=4)
def _probe_bwrap(exe: str) -> str | None:
    """None when `exe` can build our sandbox here, else why not (one line)."""
    try:
        r = subprocess.run([*_bwrap_args(exe, []), _python_install()[1], "-I", "-S", "-c", "import json"],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{exe} failed: {e}"
    if r.returncode != 0:
        return f"{exe} cannot create namespaces here: " + (r.stderr.decode(errors="replace").strip()[-200:] or
                                                           f"exit code {r.returncode}")
    return None


def find_bwrap() -> tuple[str | None, str]:
    """(path of a working bwrap, '') or (None, why there is none)."""
    choice = os.environ.get(BWRAP_ENV, "")
    if choice.lower() == "none":
        return None, f"{BWRAP_ENV}=none"
    exe = choice or shutil.which("bwrap")
    if not exe:
        return None, "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    why = _probe_bwrap(exe)
    return (None, why) if why else (exe, "")


def unsafe_opt_in() -> bool:
    return os.environ.get(UNSAFE_ENV, "").strip().lower() in ("1", "true", "yes")


_WARNED: set[str] = set()


def require_sandbox(unsafe: bool = False) -> str | None:
    """The bwrap to use; None when running unsandboxed was explicitly allowed; SandboxUnavailable otherwise."""
    exe, why = find_bwrap()
    if exe:
        return exe
    if unsafe or unsafe_opt_in():
        if why not in _WARNED:
            _WARNED.add(why)
            log.warning("running model-written code WITHOUT an OS sandbox (%s; opted in)", why)
        return None
    raise SandboxUnavailable(f"refusing to run model-written code without an OS sandbox: {why}; install "
                             f"bubblewrap, or pass --unsafe-code-execution (or set {UNSAFE_ENV}=1) to run it unsandboxed "
                             "at your own risk")


def _python_install() -> tuple[str, str]:
    """(installation directory to bind, interpreter path) of the running Python."""
    exe = os.path.realpath(sys.executable)
    base = os.path.realpath(sys.base_prefix)
    if not exe.startswith(base + "/"):
        base = os.path.dirname(os.path.dirname(exe))
    return base, exe


def _bwrap_args(exe: str, binds: list[tuple[str, str]], disk_mb: int = 16) -> list[str]:
    args = [exe, "--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    install, _ = _python_install()
    if not (install == "/usr" or install.startswith("/usr/")):
        binds = [(install, install), *binds]
    made: set[str] = set()
    for src, dst in binds:
        parents, p = [], os.path.dirname(dst)
        while p not in ("/", "") and p not in made:
            parents.append(p)
            p = os.path.dirname(p)
        for p in reversed(parents):  # world-traversable, whatever the host's modes (e.g. /root is 0700)
            args += ["--perms", "0755", "--dir", p]
            made.add(p)
        args += ["--ro-bind", src, dst]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(disk_mb * 1024 * 1024),
             "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp",
             "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
             "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if os.geteuid() == 0:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # only to drop to the fresh uid
    else:
        args += ["--unshare-user"]
    args += ["--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "PYTHONHASHSEED", "0", "--"]
    return args


def _rlimits(limits: SandboxLimits) -> dict[str, int]:
    mb = 1024 * 1024
    return {"RLIMIT_CPU": max(1, int(limits.timeout_s + 0.999)), "RLIMIT_AS": limits.memory_mb * mb,
            "RLIMIT_FSIZE": limits.max_file_mb * mb, "RLIMIT_NOFILE": limits.max_open_files, "RLIMIT_CORE": 0}


@dataclass
class _Proc:
    popen: subprocess.Popen
    out_path: str
    err_path: str


class _Spawner:
    """Starts sandboxed Python scripts for one item; every file it makes lives under `root`."""

    def __init__(self, bwrap: str | None, limits: SandboxLimits, root: str):
        self.bwrap, self.limits, self.root = bwrap, limits, root
        self.python = _python_install()[1]

    def start(self, name: str, script: str, cfg: dict, files: dict[str, str], pass_fds: Sequence[int] = (),
              confine: bool = True) -> _Proc:
        d = os.path.join(self.root, name)
        item = os.path.join(d, "item")
        os.makedirs(item)
        os.chmod(d, 0o711)
        os.chmod(item, 0o755)
        for fname, text in files.items():
            with open(os.path.join(item, fname), "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(os.path.join(item, fname), 0o644)
        rl = _rlimits(self.limits) if confine else {k: v for k, v in _rlimits(self.limits).items() if k != "RLIMIT_FSIZE"}
        cfg = {**cfg, "rlimits": rl, "fds": list(pass_fds)}
        if self.bwrap:
            lib, item_in = "/moco/lib", "/moco/item"
            root_user = os.geteuid() == 0
            cfg["uid"] = UID_BASE + secrets.randbelow(UID_SPAN) if root_user else None
            cfg["nproc"] = (self.limits.max_processes if root_user else self.limits.max_processes + 1) if confine else None
            cmd = [*_bwrap_args(self.bwrap, [(LIB_DIR, lib), (item, item_in)], self.limits.disk_mb),
                   self.python, "-I", "-S", "-B", f"{lib}/{script}"]
            cwd = None
        else:
            lib, item_in = LIB_DIR, item
            scratch = os.path.join(d, "tmp")
            os.mkdir(scratch)
            cfg.update(uid=None, nproc=None)
            cmd = [self.python, "-I", "-S", "-B", os.path.join(lib, script)]
            cwd = scratch
        cfg["audit"] = confine and AUDIT_LAYER
        cfg.update(lib=lib, **{k: f"{item_in}/{v}" for k, v in cfg.pop("paths", {}).items()})
        with open(os.path.join(item, "config.json"), "w") as f:
            json.dump(cfg, f)
        cmd.append(f"{item_in}/config.json")
        setpriv = shutil.which("setpriv")
        if setpriv:  # the sandbox dies with the scorer, even when the scorer is SIGKILLed
            cmd = [setpriv, "--pdeathsig", "KILL", *cmd]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        if cwd:
            env.update(HOME=cwd, TMPDIR=cwd)
        out_path, err_path = os.path.join(d, "stdout"), os.path.join(d, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen(cmd, cwd=cwd or "/", env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 pass_fds=tuple(pass_fds), start_new_session=True)
        return _Proc(p, out_path, err_path)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not get ignored
        proc.kill()
        proc.wait()


def _read_tail(path: str, limit: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


_SWEPT: set[str] = set()
_SWEEP_LOCK = threading.Lock()


def sweep_stale(base_dir: str | None = None, legacy_age_s: float = 3600) -> int:
    """Remove item directories left by killed scoring processes (once per process and base directory).

    An item directory is named after the process that made it (`moco-sandbox-<pid>-...`): it is stale when
    that process is gone. Older unnamed ones (`moco-sandbox-<random>`) count as stale after `legacy_age_s`."""
    base = base_dir or tempfile.gettempdir()
    with _SWEEP_LOCK:
        if base in _SWEPT:
            return 0
        _SWEPT.add(base)
    removed = 0
    for d in Path(base).glob("moco-sandbox-*"):
        pid = d.name.split("-")[2]
        try:
            if pid.isdigit():
                if int(pid) == os.getpid() or _alive(int(pid)):
                    continue
            elif time.time() - d.stat().st_mtime < legacy_age_s:
                continue
        except OSError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed += not d.exists()
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _item_dir(base_dir: str | None) -> str:
    sweep_stale(base_dir)
    root = tempfile.mkdtemp(prefix=f"moco-sandbox-{os.getpid()}-", dir=base_dir)
    os.chmod(root, 0o711)
    return root


def run_python(program: str, limits: SandboxLimits = SandboxLimits(), base_dir: str | None = None,
               unsafe: bool = False) -> RunOutcome:
    """Run a whole program in the sandbox; `passed` means it exited 0 within the limits."""
    bwrap = require_sandbox(unsafe)
    root = _item_dir(base_dir)
    t0 = time.time()
    try:
        proc = _Spawner(bwrap, limits, root).start(
            "program", "host.py", {"mode": "program", "paths": {"solution": "program.py"}}, {"program.py": program})
        timed_out, stopped = _wait(proc.popen, limits.timeout_s, [proc] if bwrap else [], limits)
        rc = proc.popen.returncode
        out, err = _read_tail(proc.out_path), _read_tail(proc.err_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return RunOutcome(not timed_out and not stopped and rc == 0, rc, timed_out, out[-4000:], err[-4000:],
                      round(time.time() - t0, 3), stopped)


def _wait(p: subprocess.Popen, timeout: float, watch: Sequence[_Proc] = (), limits: SandboxLimits | None = None
          ) -> tuple[bool, str]:
    """Wait for `p`, kill its process group either way; (True when it ran out of time, why it was stopped).
    Meanwhile the private /tmp of each sandbox in `watch` is checked: past `limits.max_files` entries (a
    tmpfs counts bytes, not files) the item is stopped."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            _kill(p)
            return True, ""
        try:
            p.wait(timeout=min(left, 0.1) if watch else left)
            break
        except subprocess.TimeoutExpired:
            pass
        if limits is not None and any(_files_in_tmp(w, limits) > limits.max_files for w in watch):
            _kill(p)
            return False, f"disk quota: more than {limits.max_files} files in the sandbox's /tmp"
    _kill(p)
    return False, ""


def _files_in_tmp(proc: _Proc, limits: SandboxLimits) -> int:
    """Entries in a bwrap sandbox's private /tmp, seen through its first process's root (0 when unknown)."""
    pid = proc.popen.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        for kid in kids:
            st = os.statvfs(f"/proc/{kid}/root/tmp")
            if st.f_blocks * st.f_frsize == limits.disk_mb * 1024 * 1024:  # the sandbox's tmpfs, set up already
                return st.f_files - st.f_ffree
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class CodeItem:
    """What the scorer checks: the solution's code, the prompt's code, the dataset's tests, the entry point."""

    solution: str
    prompt_code: str
    test_code: str
    entry: str


def check_solution(item: CodeItem, limits: SandboxLimits = SandboxLimits(), base_dir: str | None = None,
                   unsafe: bool = False) -> RunOutcome:
    """Run the item's tests (in the checker) against the solution (in its own sandbox)."""
    bwrap = require_sandbox(unsafe)
    root = _item_dir(base_dir)
    t0 = time.time()
    try:
        out = _checked(item, limits, _Spawner(bwrap, limits, root))
        if out.fallback:
            shutil.rmtree(root, ignore_errors=True)
            os.mkdir(root, 0o711)
            out = _fallback(item, limits, _Spawner(bwrap, limits, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out.seconds = round(time.time() - t0, 3)
    return out


def _checked(item: CodeItem, limits: SandboxLimits, sp: _Spawner) -> RunOutcome:
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    try:
        cand = sp.start("candidate", "host.py", {"mode": "serve", "paths": {"solution": "solution.py"}},
                        {"solution.py": item.solution}, pass_fds=(req_r, rep_w))
        try:
            checker = sp.start("checker", "checker.py", {"entry": item.entry, "prompt_code": item.prompt_code,
                                                         "test_code": item.test_code},
                               {}, pass_fds=(req_w, rep_r), confine=False)
        except BaseException:
            _kill(cand.popen)
            raise
    finally:
        for fd in (req_r, req_w, rep_r, rep_w):
            os.close(fd)
    timed_out, stopped = _wait(checker.popen, limits.timeout_s, [cand] if sp.bwrap else [], limits)
    _kill(cand.popen)
    if stopped:
        return RunOutcome(False, checker.popen.returncode, False, _read_tail(cand.out_path)[-4000:],
                          _read_tail(cand.err_path)[-4000:], 0.0, stopped)
    lines = _read_tail(checker.out_path).strip().splitlines()
    try:
        verdict = json.loads(lines[-1]) if lines else {}
    except ValueError:
        verdict = {}
    c_out, c_err = _read_tail(cand.out_path), _read_tail(cand.err_path)
    if timed_out or not verdict:
        why = "" if timed_out else "the checker gave no verdict: " + (_read_tail(checker.err_path).strip()[-200:])
        return RunOutcome(False, checker.popen.returncode, timed_out, c_out[-4000:], c_err[-4000:], 0.0, why)
    return RunOutcome(verdict.get("passed") is True, checker.popen.returncode, False, c_out[-4000:], c_err[-4000:],
                      0.0, str(verdict.get("reason", ""))[:300], bool(verdict.get("fallback")),
                      int(verdict.get("calls", 0)))


def _fallback(item: CodeItem, limits: SandboxLimits, sp: _Spawner) -> RunOutcome:
    """The tests run in the solution's sandbox, in their own namespace (the verdict is not protected)."""
    rep_r, rep_w = os.pipe()
    try:
        cand = sp.start("candidate", "host.py",
                        {"mode": "fallback", "entry": item.entry, "prompt_code": item.prompt_code,
                         "test_code": item.test_code,
                         "paths": {"solution": "solution.py"}},
                        {"solution.py": item.solution}, pass_fds=(rep_w, rep_w))
    finally:
        os.close(rep_w)
    try:
        timed_out, stopped = _wait(cand.popen, limits.timeout_s, [cand] if sp.bwrap else [], limits)
        os.set_blocking(rep_r, False)
        try:
            data = os.read(rep_r, 65536)
        except BlockingIOError:
            data = b""
    finally:
        os.close(rep_r)
    line = data.decode(errors="replace").strip().splitlines()[:1]
    try:
        verdict = json.loads(line[0]) if line else {}
    except ValueError:
        verdict = {}
    passed = not timed_out and not stopped and verdict.get("passed") is True
    err = _read_tail(cand.err_path)
    why = stopped or ("" if passed or timed_out else (str(verdict.get("raised", ""))[:300] or ""))
    return RunOutcome(passed, cand.popen.returncode, timed_out, _read_tail(cand.out_path)[-4000:], err[-4000:], 0.0,
                      why, fallback=True)


def _in_parallel(work, inputs: Sequence, workers: int | None, unsafe: bool) -> list[RunOutcome]:
    """`work` over `inputs`, `workers` at a time (default one per CPU core); each call is its own sandbox."""
    if not inputs:
        return []
    require_sandbox(unsafe)
    n = max(1, min(len(inputs), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(work, inputs))


def check_many(items: Sequence[CodeItem], limits: SandboxLimits = SandboxLimits(), workers: int | None = None,
               unsafe: bool = False, base_dir: str | None = None) -> list[RunOutcome]:
    """Check items in parallel (`workers` at a time; default one per CPU core)."""
    return _in_parallel(lambda it: check_solution(it, limits, base_dir, unsafe), items, workers, unsafe)


def run_many(programs: Sequence[str], limits: SandboxLimits = SandboxLimits(), workers: int | None = None,
             unsafe: bool = False, base_dir: str | None = None) -> list[RunOutcome]:
    """Run whole programs in parallel (one sandbox each, `workers` at a time)."""
    return _in_parallel(lambda p: run_python(p, limits, base_dir, unsafe), programs, workers, unsafe)


def describe_isolation() -> dict:
    """What this machine's sandbox provides (for run manifests and the docs)."""
    exe, why = find_bwrap()
    return {"sandbox": "bubblewrap" if exe else "none", "why_not": why,
            "unsafe_opt_in": unsafe_opt_in(), "runs_as": "fresh uid" if os.geteuid() == 0 else "user namespace",
            "limits": asdict(SandboxLimits())}
