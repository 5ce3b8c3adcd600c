"""Start `moco serve` (or any moco command) in a subprocess on 127.0.0.1 and wait until it answers."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

SRC = Path(__file__).resolve().parent.parent / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moco_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MOCO_SERVE_TOKEN"}  # tests say when they want a token
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def moco(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "moco", *args], env=popen.pop("env", moco_env()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@contextmanager
def served(config: Path, *args: str, timeout: float = 600.0, env: dict[str, str] | None = None):
    """Yield the base URL (http://127.0.0.1:PORT/v1) of a running `moco serve CONFIG ARGS` (its start-up run,
    models loaded and dev work done, may take minutes on a busy machine)."""
    port = free_port()
    proc = moco("serve", str(config), "--port", str(port), *args, env=env or moco_env())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.2)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
