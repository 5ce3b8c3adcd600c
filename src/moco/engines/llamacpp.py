"""llama.cpp's server for GGUF files: `llama-server` when on PATH, else llama-cpp-python's server."""
from __future__ import annotations

import shutil

from moco.engines.launch import Launch

# what MoCo's sampling is (temperature and top-p only), said explicitly: llama-server's own defaults add top-k 40
# and min-p 0.05, a different distribution than the in-process backend and the other engines sample from
SAMPLING = {"top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "presence_penalty": 0.0,
            "frequency_penalty": 0.0}

# context of one sequence when hardware.engine_max_len is not set (SmolLM2's own is 8192; a run's prompts and
# answers are far shorter), and how many such sequences the shared KV pool holds at once
DEFAULT_SEQ_LEN = 2048
FULL_SEQUENCES = 16


def command(launch: Launch) -> tuple[list[str], dict[str, str]]:
    """`--parallel` slots = the requests MoCo keeps in flight, decoded together (continuous batching). The slots
    share one KV pool (`--kv-unified`) sized for FULL_SEQUENCES sequences of full length: llama.cpp would
    otherwise split the context evenly, leaving 64 slots of a 2048-token context 32 tokens each; a pool of
    `concurrency` full lengths would cost a 7B model tens of GB."""
    seq = launch.max_len or DEFAULT_SEQ_LEN
    binary = shutil.which("llama-server")
    if binary:
        argv = [binary, "-m", launch.source, "--host", "127.0.0.1", "--port", str(launch.port), "--alias",
                launch.name, "--threads", str(launch.threads), "--parallel", str(launch.concurrency),
                "--kv-unified", "--ctx-size", str(seq * min(launch.concurrency, FULL_SEQUENCES)),
                "--seed", str(launch.seed), "--no-webui"]
        if launch.gpus:  # every layer on the GPUs it is given, split between them by layers
            argv += ["--n-gpu-layers", "999"]
        return argv, launch.visible
    # llama-cpp-python's server decodes one request at a time: correct, but no continuous batching
    argv = [launch.python, "-m", "llama_cpp.server", "--model", launch.source, "--model_alias", launch.name,
            "--host", "127.0.0.1", "--port", str(launch.port), "--n_threads", str(launch.threads),
            "--seed", str(launch.seed), "--n_ctx", str(seq)]
    if launch.gpus:
        argv += ["--n_gpu_layers", "-1"]
    return argv, launch.visible
