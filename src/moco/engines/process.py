"""One engine server as a child of MoCo: started on a free loopback port, waited for, and never left behind.

The server runs under `watchdog.py`, which holds the read end of a pipe only this process writes to: whatever
ends MoCo (a normal stop, Ctrl-C, SIGTERM, a crash, SIGKILL) closes it and the watchdog kills the server's
process group. `stop()` (also run at exit) closes the pipe and waits for the watchdog, so a run that returns
has no engine left running.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from moco.errors import ModelError

WATCHDOG = str(Path(__file__).with_name("scripts") / "watchdog.py")
_LIVE: set[ManagedServer] = set()
# (label, time.time() when it started, seconds to ready) of every engine this process started
STARTUPS: list[tuple[str, float, float]] = []
_LOCK = threading.Lock()


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cores() -> int:
    """The CPU cores this process may use (its affinity), which the engine is given."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ManagedServer:
    """A server process: `start`, `wait_ready`, `stop`. `label` names it in messages ("vllm for 'smollm2'")."""

    def __init__(self, label: str, argv: list[str], port: int, env: dict[str, str] | None = None):
        self.label = label
        self.argv = argv
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log_path = Path(tempfile.mkdtemp(prefix="moco-engine-")) / "server.log"
        self.proc: subprocess.Popen | None = None
        self._pipe: int | None = None
        self.startup_s: float | None = None

    def start(self) -> None:
        read, write = os.pipe()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, WATCHDOG, *self.argv], stdin=read, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        os.close(read)
        self._pipe = write  # not inheritable: no other child keeps the watchdog alive
        with _LOCK:
            _LIVE.add(self)

    def wait_ready(self, timeout_s: float, say: Callable[[str], None], every_s: float = 10.0) -> float:
        """Poll GET /v1/models until it answers 200; a progress line every `every_s` (3x that after a minute).
        Returns seconds taken; a server that exits or is not ready in `timeout_s` is stopped and reported in one
        line with its log."""
        assert self.proc is not None
        t0 = time.monotonic()
        next_say = t0 + every_s
        say(f"engine {self.label}: starting on {self.base_url} (log {self.log_path})")
        while True:
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise ModelError(f"engine {self.label} exited with code {code} before it was ready; "
                                 f"last log lines: {self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/models", timeout=2.0).status_code == 200:
                    self.startup_s = time.monotonic() - t0
                    say(f"engine {self.label}: ready in {self.startup_s:.1f} s")
                    return self.startup_s
            except httpx.HTTPError:
                pass
            now = time.monotonic()
            if now - t0 > timeout_s:
                self.stop()
                raise ModelError(f"engine {self.label} not ready after {timeout_s:g} s "
                                 f"(hardware.engine_start_timeout_s); last log lines: {self.log_tail()}")
            if now >= next_say:
                say(f"engine {self.label}: starting, {now - t0:.0f} s")
                next_say = now + (every_s if now - t0 < 6 * every_s else 3 * every_s)  # vLLM on CPU: minutes
            time.sleep(0.25)

    def log_tail(self, lines: int = 5, chars: int = 400) -> str:
        """The last lines of the server's log on one line (' | ' between them)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("[watchdog]")][-lines:]
        return (" | ".join(tail) or "(empty log)")[-chars:] + f" (log {self.log_path})"

    def last_error(self, chars: int = 300) -> str:
        """The last line of the log that names an error (a server that died mid-run ends its log with noise
        such as leak warnings), else its last lines."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        errors = [ln.strip() for ln in lines if re.search(r"\b\w*(Error|Exception)\b:|\berror:", ln)]
        return (errors[-1][-chars:] + f" (log {self.log_path})") if errors else self.log_tail()

    def stop(self, wait_s: float = 30.0) -> None:
        """Close the watchdog's pipe (it kills the server's process group) and wait for it to finish. The log is
        deleted when a server that had become ready was still running (a normal end); it is kept when the server
        failed to start or died by itself, for the error message that names it."""
        with _LOCK:
            _LIVE.discard(self)
        normal_end = self.startup_s is not None and self.running
        if self._pipe is not None:
            try:
                os.close(self._pipe)
            except OSError:
                pass
            self._pipe = None
        if self.proc is not None:
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # the server has PR_SET_PDEATHSIG on its watchdog
                self.proc.wait()
        if normal_end and not os.environ.get("MOCO_KEEP_ENGINE_LOGS"):
            shutil.rmtree(self.log_path.parent, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def startups_since(t0: float) -> dict[str, float]:
    """Seconds each engine took to become ready, for engines started at or after `t0` (a run's start)."""
    return {label: round(s, 3) for label, started, s in STARTUPS if started >= t0}


def stop_all() -> None:
    """Stop every engine this process started (at exit; also after Ctrl-C/SIGTERM, which MoCo turns into one)."""
    with _LOCK:
        live = list(_LIVE)
    for server in live:
        server.stop()


atexit.register(stop_all)
