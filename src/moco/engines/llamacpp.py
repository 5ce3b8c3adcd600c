"""llama.cpp's server for GGUF files: `llama-server` when on PATH, else llama-cpp-python's server."""
from __future__ import annotations

import shutil

from moco.engines.launch import Launch


def command(launch: Launch) -> tuple[list[str], dict[str, str]]:
    """`--parallel` slots = the requests MoCo keeps in flight (llama.cpp splits its context between them)."""
    binary = shutil.which("llama-server")
    if binary:
        argv = [binary, "-m", launch.source, "--host", "127.0.0.1", "--port", str(launch.port), "--alias",
                launch.name, "--threads", str(launch.threads), "--parallel", str(launch.concurrency),
                "--seed", str(launch.seed)]
        if launch.max_len:
            argv += ["--ctx-size", str(launch.max_len * launch.concurrency)]
        return argv, {}
    argv = [launch.python, "-m", "llama_cpp.server", "--model", launch.source, "--model_alias", launch.name,
            "--host", "127.0.0.1", "--port", str(launch.port), "--n_threads", str(launch.threads),
            "--seed", str(launch.seed)]
    if launch.max_len:
        argv += ["--n_ctx", str(launch.max_len)]
    return argv, {}
