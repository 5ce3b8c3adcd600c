"""Managed engines: MoCo starts a real inference server (vLLM, llama.cpp, SGLang) for a model, routes its calls
through the OpenAI backend and stops the server when it is done (docs/engines.md).

A Hugging Face model with `engine:` (or under `hardware.engine`) loads as the backend kind "engine": one
server per distinct model on a free loopback port (`engines.backend`), kept alive by a watchdog that kills it
when MoCo ends however it ends (`engines.process`). `resolve` decides, before anything loads, which backend
each model will use and why: `moco validate` and `moco run` print the same lines.
"""
from __future__ import annotations

import functools
import os

from moco.config import HardwareSettings, ModelSpec
from moco.engines.launch import check_installed, override_var
from moco.errors import ConfigError
from moco.models import builtin
from moco.models.base import Capabilities

# what a chat server offers: text, per-token logprobs, per-request seeds (vLLM, SGLang, llama.cpp honour them)
CAPABILITIES = Capabilities(chat=True, logprobs=True, seeded=True)
# llama.cpp honours a request's seed, but its results change with the batch the request shares (timing), so a
# seed does not make a sampled answer reproducible (docs/engines.md, Determinism)
LLAMACPP_CAPABILITIES = Capabilities(chat=True, logprobs=True, seeded=False)


def capabilities(engine: str | None) -> Capabilities:
    """What an engine-backed model can do, declared before its server starts."""
    return LLAMACPP_CAPABILITIES if engine == "llamacpp" else CAPABILITIES


IN_PROCESS_ONLY = ("logits", "weights", "lora")


def effective(spec: ModelSpec, hardware: HardwareSettings) -> str:
    """The engine that serves a spec: its own `engine`, else hardware.engine for a Hugging Face model; `auto`
    (the default) decided by `auto`."""
    if spec.kind != "hf":
        return "none"
    engine = spec.engine or hardware.engine
    return auto(spec, hardware)[0] if engine == "auto" else engine


def auto(spec: ModelSpec, hardware: HardwareSettings) -> tuple[str, str]:
    """The engine `auto` picks for a model on this hardware, and why: the fastest measured for that kind of model
    and hardware (docs/engines.md, "Which engine by default"), among those installed."""
    if spec.model.endswith(".gguf"):
        return "llamacpp", "a GGUF file, which llama.cpp serves"
    if hardware.gpu_ids or (spec.device or "").startswith("cuda"):
        for engine in ("vllm", "sglang"):
            if (engine == "vllm" or not spec.adapter) and installed(engine):
                return engine, f"on a GPU {engine} decodes many times faster than the in-process loop"
        return "none", "on a GPU, but no engine is installed (pip install 'moco-collab[vllm]')"
    return "none", CPU_WHY


# measured on this project's 2-core CPU machine (benchmarks/engine_speed.py, README "Engines")
CPU_WHY = "on CPU the in-process backend was measured fastest for the embedded model (README, Engines)"


@functools.lru_cache(maxsize=32)
def _installed(engine: str, python: str | None, path: str | None, command: str | None) -> bool:
    try:
        check_installed(engine)
    except ConfigError:
        return False
    return True


def installed(engine: str) -> bool:
    """Whether `engine` can be started from here (cached: probing MOCO_ENGINE_PYTHON starts a Python)."""
    return _installed(engine, os.environ.get("MOCO_ENGINE_PYTHON"), os.environ.get("PATH"),
                      os.environ.get(override_var(engine)))


def resolve(spec: ModelSpec, hardware: HardwareSettings, needs: Capabilities, name: str) -> tuple[ModelSpec, str]:
    """The spec with its engine decided (`engine` set explicitly) and a line saying which backend and why.
    A method needing logits or weights keeps the model in-process; a missing engine is a one-line ConfigError."""
    picked = auto(spec, hardware) if spec.kind == "hf" and (spec.engine or hardware.engine) == "auto" else None
    engine = picked[0] if picked else effective(spec, hardware)
    if spec.kind == "hf" and spec.model.endswith(".gguf") and engine != "llamacpp":
        raise ConfigError(f"model '{name}': {spec.model} is a GGUF file, which only engine llamacpp serves")
    if engine == "none":
        if spec.kind != "hf":
            return spec, f"{name}: {spec.kind} backend"
        why = f"engine auto: {picked[1]}" if picked else "engine: none"
        return spec.model_copy(update={"engine": "none"}), f"{name}: in-process hf backend ({why})"
    wanted = [k for k in IN_PROCESS_ONLY if getattr(needs, k)]
    if wanted:
        line = (f"{name}: in-process hf backend, not engine {engine}: the method needs {', '.join(wanted)}, "
                "which a server does not give")
        return spec.model_copy(update={"engine": "none"}), line
    gguf = spec.model.endswith(".gguf")
    if engine == "llamacpp" and not gguf and not builtin.is_embedded(spec.model):
        raise ConfigError(f"model '{name}': engine llamacpp serves GGUF files; '{spec.model}' is not one (give the "
                          ".gguf file as `model:`, or use engine vllm/none)")
    if spec.adapter and engine != "vllm":
        raise ConfigError(f"model '{name}': engine {engine} with an `adapter` is not supported (vLLM serves "
                          "adapters of one base from one server: `engine: vllm`; or `engine: none`)")
    check_installed(engine)
    offers = "text, logprobs, seeds" if capabilities(engine).seeded else "text, logprobs"
    line = (f"{name}: {engine} engine, started and stopped by MoCo on 127.0.0.1 ({offers}; "
            f"{hardware.engine_concurrency} requests in flight)")
    if spec.adapter:
        line += f"; LoRA adapter {spec.adapter} served by its base model's server"
    if picked:
        line += f"; auto: {picked[1]}"
    if engine == "llamacpp" and hardware.engine_concurrency > 1:
        line += ("; its parallel slots are not batch-invariant, so sampled answers do not repeat exactly from "
                 "run to run (hardware.engine_concurrency: 1 makes them repeat, decoding one request at a time)")
    return spec.model_copy(update={"engine": engine}), line


__all__ = ["CAPABILITIES", "auto", "capabilities", "effective", "installed", "override_var", "resolve"]
