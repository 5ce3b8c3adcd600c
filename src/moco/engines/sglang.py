"""SGLang's server (GPU only in practice: it does not install on this CPU machine)."""
from __future__ import annotations

from moco.engines.launch import Launch

# temperature and top-p only, as MoCo samples in-process
SAMPLING = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}


def command(launch: Launch) -> tuple[list[str], dict[str, str]]:
    argv = [launch.python, "-m", "sglang.launch_server", "--model-path", launch.source, "--served-model-name",
            launch.name, "--host", "127.0.0.1", "--port", str(launch.port), "--dtype", launch.dtype,
            "--random-seed", str(launch.seed)]
    if launch.max_len:
        argv += ["--context-length", str(launch.max_len)]
    if launch.gpus:
        argv += ["--tp-size", str(len(launch.gpus)), "--mem-fraction-static", str(launch.gpu_share)]
    return argv, launch.visible
