"""SGLang's server (GPU only in practice: it does not install on this CPU machine)."""
from __future__ import annotations

from moco.engines.launch import Launch


def command(launch: Launch) -> tuple[list[str], dict[str, str]]:
    argv = [launch.python, "-m", "sglang.launch_server", "--model-path", launch.source, "--served-model-name",
            launch.name, "--host", "127.0.0.1", "--port", str(launch.port), "--dtype", launch.dtype,
            "--random-seed", str(launch.seed)]
    if launch.max_len:
        argv += ["--context-length", str(launch.max_len)]
    return argv, ({} if launch.gpu is None else {"CUDA_VISIBLE_DEVICES": str(launch.gpu)})
