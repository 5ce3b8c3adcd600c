"""Run untrusted Python (model-written code plus a dataset's tests) in a sandboxed subprocess.

Layers, each of which alone stops the common hostile programs:
- a fresh scratch directory as the working directory, HOME and TMPDIR, removed afterwards;
- a minimal environment (PATH, HOME, TMPDIR, LANG): none of the parent's variables or secrets;
- `python -I -S`: no site-packages, no user site, no PYTHON* variables;
- rlimits: CPU seconds, address space, file size, open files, processes, no core dumps;
- when run as root: the program runs as `nobody` (so the process limit counts, and the host's files and
  other processes' /proc entries are out of reach);
- when `unshare` works: new network and PID namespaces (no network at all; when the sandbox's first process
  dies every process it started dies with it);
- an audit hook inside the child that refuses sockets, subprocesses, fork/exec, ctypes, signals to other
  processes, writes/removals outside the scratch dir, and reads outside the Python
  installation and the scratch dir;
- a wall-clock timeout after which the whole process group is killed;
- a parent-death signal (`setpriv --pdeathsig`, and prctl in the child): when the scoring process is killed
  (SIGKILL, OOM killer), the sandboxed program dies with it instead of running on as an orphan.

A program passes when it runs to its end and exits 0; exiting early (even with status 0, e.g. `sys.exit()`
before the tests ran) fails. Items run in parallel over the CPU cores.
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
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NOBODY = 65534


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits (defaults as the reference's sandbox, with a little more memory)."""

    timeout_s: float = 10.0  # wall clock; CPU time is limited to the same number of seconds
    memory_mb: int = 1024  # address space
    max_processes: int = 4  # processes the program may have (it cannot start any through Python anyway)
    max_file_mb: int = 8  # largest file the program may write (stdout/stderr included)
    max_open_files: int = 64


@dataclass
class RunOutcome:
    passed: bool
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float

    @property
    def reason(self) -> str:
        if self.passed:
            return "passed"
        if self.timed_out:
            return "timeout"
        last = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return last[-1][:300] if last else f"exit code {self.returncode}"


# The child: set limits, drop privileges, install the audit hook, run the program, then print the nonce.
_LAUNCHER = r'''
import os, sys, resource, json, traceback

def _guard(nonce, cfg, scratch, main_code):
    # The audit hook. It alone holds the nonce that proves the program ran to its end: the program can reach
    # the launcher's frames (sys._getframe is allowed: namedtuple and TypeVar use it), but not this closure,
    # since everything that leads to it is refused: gc, other threads' frames, tracing, the frames of a
    # traceback of a refused event (they lead to this hook's frame) until the program ended, and program code
    # running inside the hook (paths and names are copied to plain str first).
    readable = [os.path.realpath(p) for p in cfg["readable"] + [sys.prefix, sys.exec_prefix]] + [scratch]
    write, exit_, getframe, realpath = os.write, os._exit, sys._getframe, os.path.realpath
    from _thread import get_ident
    state = {"nonce": nonce, "frame": None, "running": True, "checker": None}
    blocked_prefix = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                      "os.kill", "os.killpg", "os.system", "os.startfile", "ctypes.", "pty.",
                      "os.setuid", "os.setgid", "os.chroot", "sys.setrecursionlimit", "resource.setrlimit",
                      "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.", "winreg.", "_winapi.",
                      "gc.get_", "sys._current_frames", "sys.settrace", "sys.setprofile", "sys.addaudithook",
                      "function.__new__", "code.__new__", "code.replace")
    blocked_imports = {"_posixsubprocess", "_ctypes", "_socket", "_multiprocessing", "pty", "fcntl"}
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
                   "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
                   "os.chdir", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod"}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def plain(x):  # a program's str/bytes subclass must not run its methods inside the hook
        t = type(x)
        if t is str or t is bytes or t is int or x is None:
            return x
        if issubclass(t, str):
            return str.__str__(x)
        if issubclass(t, bytes):
            return bytes(memoryview(x))
        return False

    def inside(path, roots):
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def resolve(p):
        p = plain(p)
        if p is False:
            raise PermissionError("sandbox: unsupported path object")
        return realpath(os.fsdecode(p)) if isinstance(p, (str, bytes)) else None

    def hook(event, args):
        if event.startswith("moco."):  # the launcher's own events, from its own frame only
            caller = getframe(1)
            if event == "moco.begin" and state["frame"] is None and caller.f_code is main_code:
                state["frame"] = caller  # the first begin comes from the launcher, before any program code
            elif event == "moco.finish" and state["nonce"] and caller is state["frame"]:
                write(1, ("\n" + state["nonce"] + "\n").encode())
                exit_(0)
            elif event == "moco.ended":
                state.update(nonce=None, running=False)
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            if type(path) is int:
                return
            p = resolve(path)
            mode, flags = plain(mode), plain(flags)
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing and not inside(p, [scratch]):
                raise PermissionError(f"sandbox: writing outside the scratch directory is not allowed: {p}")
            if not writing and not inside(p, readable):
                raise PermissionError(f"sandbox: reading {p} is not allowed")
        elif event == "import":
            if plain(args[0]) in blocked_imports:
                raise ImportError(f"sandbox: module {plain(args[0])} is not available")
        elif event == "object.__getattr__" and args[1] == "tb_frame" and state["running"]:
            if state["checker"] == get_ident():  # our own look below
                return
            state["checker"] = get_ident()
            try:
                frame = args[0].tb_frame
                while frame is not None and frame.f_code not in own_code:
                    frame = frame.f_back
            finally:
                state["checker"] = None
            if frame is not None:  # a traceback of a refused event: its frames lead to this hook's closure
                raise PermissionError("sandbox: reading the frames of a sandbox refusal is not allowed")
        elif event.startswith(blocked_prefix):
            raise PermissionError(f"sandbox: {event} is not allowed")
        elif event in path_events:
            for a in args:
                p = resolve(a)
                if p is not None and not inside(p, [scratch]):
                    raise PermissionError(f"sandbox: {event} outside the scratch directory is not allowed: {p}")

    own_code = {f.__code__ for f in (hook, plain, inside, resolve)}
    return hook


def _main():
    cfg = json.loads(sys.argv[1])
    for name, value in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if os.getuid() == 0 and cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
    resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
    try:  # die with the process that started us (a setuid clears the death signal unshare had set)
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # the program must import ctypes itself (and the audit hook refuses that)
    scratch = os.path.realpath(os.getcwd())
    code = compile(open(cfg["program"]).read(), "program.py", "exec")
    sys.addaudithook(_guard(sys.stdin.readline().strip(), cfg, scratch, _main.__code__))
    sys.stdin.close()
    audit, flush_out, flush_err = sys.audit, sys.stdout.flush, sys.stderr.flush
    glb = {"__name__": "__main__", "__builtins__": __builtins__}
    audit("moco.begin")
    try:
        exec(code, glb)
    except SystemExit as e:
        audit("moco.ended")
        sys.stdout.flush()
        sys.stderr.write(f"program exited (status {e.code!r}) before its tests finished\n")
        sys.stderr.flush()
        os._exit(3)
    except BaseException:
        audit("moco.ended")
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    try:
        flush_out()
    except BaseException:
        pass
    audit("moco.finish")  # the hook prints the nonce and exits 0
    os._exit(4)

_main()
'''


# Inside a private mount namespace: bind the Python installation read-only where `nobody` can reach it.
_MOUNT_SCRIPT = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" || exit 97; shift 2; exec "$@"'


@functools.lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...]:
    """`unshare` arguments for private mount, network and PID namespaces, or () when unavailable.

    As root, a mount namespace is needed too: the program runs as `nobody`, who cannot read a Python
    installed under /root, so the installation is bind-mounted read-only inside the sandbox."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    if os.geteuid() == 0:
        candidates = [(exe, "--mount", "--net", "--pid", "--fork", "--kill-child")]
    else:
        candidates = [(exe, "--map-root-user", "--net", "--pid", "--fork", "--kill-child")]
    for prefix in candidates:
        try:
            r = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return prefix
    log.warning("unshare is not usable here: sandboxed code keeps the host network namespace "
                "(the audit hook still refuses sockets)")
    return ()


def _python_install() -> tuple[str, str] | None:
    """(installation prefix, interpreter path relative to it) of the running Python, for the bind mount."""
    exe = os.path.realpath(sys.executable)
    base = os.path.realpath(sys.base_prefix)
    if not exe.startswith(base + "/"):
        return None
    return base, os.path.relpath(exe, base)


def _command(root: str, cfg_json: str) -> tuple[list[str], bool]:
    """The command line that starts the launcher, and whether it drops to `nobody`."""
    cmd, dropped = _launch_command(root, cfg_json)
    setpriv = shutil.which("setpriv")
    return ([setpriv, "--pdeathsig", "KILL", *cmd] if setpriv else cmd), dropped


def _launch_command(root: str, cfg_json: str) -> tuple[list[str], bool]:
    launcher = ["-I", "-S", "-B", "-c", _LAUNCHER, cfg_json]
    ns = namespace_prefix()
    install = _python_install()
    if os.geteuid() == 0:
        if ns and install and shutil.which("mount"):
            mnt = os.path.join(root, "python")
            os.mkdir(mnt)
            os.chmod(mnt, 0o755)
            return [*ns, "/bin/sh", "-c", _MOUNT_SCRIPT, "sh", install[0], mnt,
                    os.path.join(mnt, install[1]), *launcher], True
        log.warning("sandbox: no mount namespace available; sandboxed code runs as root behind the audit hook")
        return [sys.executable, *launcher], False
    return [*ns, sys.executable, *launcher], False


def _user_process_count(uid: int) -> int:
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                n += d.stat().st_uid == uid
            except OSError:
                pass
    return n


_SWEPT: set[str] = set()


def sweep_stale(base_dir: str | None = None, legacy_age_s: float = 3600) -> int:
    """Remove scratch directories left by killed scoring processes (once per process and base directory).

    A scratch directory is named after the process that made it (`moco-sandbox-<pid>-...`): it is stale when
    that process is gone. Older unnamed ones (`moco-sandbox-<random>`) count as stale after `legacy_age_s`."""
    base = base_dir or tempfile.gettempdir()
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


def run_python(program: str, limits: SandboxLimits = SandboxLimits(), base_dir: str | None = None) -> RunOutcome:
    """Run `program` (Python source) in the sandbox and say whether it ran to its end."""
    sweep_stale(base_dir)
    root = tempfile.mkdtemp(prefix=f"moco-sandbox-{os.getpid()}-", dir=base_dir)
    os.chmod(root, 0o711)
    scratch = os.path.join(root, "work")
    os.mkdir(scratch)
    prog_path = os.path.join(root, "program.py")
    with open(prog_path, "w") as f:
        f.write(program)
    os.chmod(prog_path, 0o644)
    mb = 1024 * 1024
    cfg = {
        "program": prog_path, "uid": None, "gid": None, "nproc": 0,
        "readable": ["/dev/null", "/dev/urandom", "/dev/zero", "/etc/localtime", "/usr/share/zoneinfo", prog_path],
        "rlimits": {"RLIMIT_CPU": max(1, int(limits.timeout_s + 0.999)), "RLIMIT_AS": limits.memory_mb * mb,
                    "RLIMIT_FSIZE": limits.max_file_mb * mb, "RLIMIT_NOFILE": limits.max_open_files,
                    "RLIMIT_CORE": 0},
    }
    drop = os.geteuid() == 0 and bool(namespace_prefix()) and _python_install() is not None
    if drop:
        os.chown(scratch, NOBODY, NOBODY)
        cfg.update(uid=NOBODY, gid=NOBODY, nproc=limits.max_processes)
    else:
        cfg["nproc"] = limits.max_processes + _user_process_count(os.geteuid())
    os.chmod(scratch, 0o700)
    cmd, dropped = _command(root, json.dumps(cfg))
    if drop and not dropped:  # no mount namespace after all: stay as the current user
        cfg.update(uid=None, gid=None, nproc=limits.max_processes + _user_process_count(os.geteuid()))
        os.chown(scratch, os.geteuid(), os.getegid())
        cmd, _ = _command(root, json.dumps(cfg))
    env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    nonce = secrets.token_hex(16)
    out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
    t0 = time.time()
    timed_out = False
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                    start_new_session=True)
            try:
                proc.stdin.write((nonce + "\n").encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
            returncode = proc.returncode
        stdout = _read_tail(out_path)
        stderr = _read_tail(err_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines = stdout.rstrip("\n").split("\n")
    finished = bool(lines) and lines[-1] == nonce
    if finished:
        stdout = "\n".join(lines[:-1])
    passed = not timed_out and returncode == 0 and finished
    return RunOutcome(passed, returncode, timed_out, stdout[-4000:], stderr[-4000:], round(time.time() - t0, 3))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not get ignored
        proc.kill()
        proc.wait()


def _read_tail(path: str, limit: int = 64 * 1024) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - limit))
        return f.read().decode("utf-8", "replace")


def run_many(programs: Sequence[str], limits: SandboxLimits = SandboxLimits(), workers: int | None = None) -> list[RunOutcome]:
    """Run programs in parallel (one subprocess each, `workers` at a time; default: one per CPU core)."""
    if not programs:
        return []
    n = max(1, min(len(programs), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda p: run_python(p, limits), programs))


def describe_isolation() -> dict:
    """What this machine's sandbox actually provides (for run manifests and the docs)."""
    drop = os.geteuid() == 0 and bool(namespace_prefix()) and _python_install() is not None
    return {"namespaces": " ".join(namespace_prefix()[1:]) or "none", "drops_to_nobody": drop,
            "limits": asdict(SandboxLimits())}
