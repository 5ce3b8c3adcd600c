"""Runs one engine server and kills its whole process group when MoCo goes away (standalone: no moco import).

    python watchdog.py ENGINE-ARGV...      (stdin: the read end of a pipe whose write end only MoCo holds)

MoCo ending in any way (normal stop, Ctrl-C, SIGTERM, a crash, even SIGKILL) closes that pipe; EOF on stdin
is the signal to stop the server: SIGTERM to its process group (vLLM's engine-core children included), then
SIGKILL after a grace period. The server also gets PR_SET_PDEATHSIG, so it dies if this watchdog is killed.
The watchdog exits with the server's code when the server ends by itself (MoCo reports its log).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = float(os.environ.get("MOCO_ENGINE_GRACE_S", "10"))


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1 (Linux)
    except (OSError, AttributeError):
        pass


def _kill_group(pgid: int, proc: subprocess.Popen) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + GRACE_S
    while time.monotonic() < end and proc.poll() is None:
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)  # stragglers of the group too (spawned engine workers)
    except ProcessLookupError:
        pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is MoCo's to handle; it closes the pipe
    proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent)  # noqa: PLW1509 - forked before any thread starts
    print(f"[watchdog] engine pid {proc.pid}", flush=True)
    stop = threading.Event()

    def on_term(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)

    def watch_pipe() -> None:
        while os.read(0, 4096):
            pass
        stop.set()

    threading.Thread(target=watch_pipe, daemon=True).start()
    while proc.poll() is None and not stop.wait(0.2):
        pass
    _kill_group(proc.pid, proc)
    code = proc.wait()
    print(f"[watchdog] engine exited with code {code}", flush=True)
    os._exit(0 if stop.is_set() else (code or 1))  # not sys.exit: the pipe-reading thread is still blocked


if __name__ == "__main__":
    main()
