"""Managed engines: MoCo starts a real inference server (vLLM, llama.cpp, SGLang) for a model, routes its calls
through the OpenAI backend and stops the server when it is done (docs/engines.md).

A Hugging Face model with `engine:` (or under `hardware.engine`) loads as the backend kind "engine": one
server per distinct model on a free loopback port (`engines.backend`), kept alive by a watchdog that kills it
when MoCo ends however it ends (`engines.process`). `resolve` decides, before anything loads, which backend
each model will use and why: `moco validate` and `moco run` print the same lines.
"""
from __future__ import annotations

from moco.config import HardwareSettings, ModelSpec
from moco.engines.launch import check_installed
from moco.models.base import Capabilities

# what a chat server offers: text, per-token logprobs, per-request seeds (vLLM, SGLang, llama.cpp honour them)
CAPABILITIES = Capabilities(chat=True, logprobs=True, seeded=True)
IN_PROCESS_ONLY = ("logits", "weights", "lora")


def effective(spec: ModelSpec, hardware: HardwareSettings) -> str:
    """The engine that serves a spec: its own `engine`, else hardware.engine for a Hugging Face model."""
    if spec.kind != "hf":
        return "none"
    return spec.engine or hardware.engine


def resolve(spec: ModelSpec, hardware: HardwareSettings, needs: Capabilities, name: str) -> tuple[ModelSpec, str]:
    """The spec with its engine decided (`engine` set explicitly) and a line saying which backend and why.
    A method needing logits or weights keeps the model in-process; a missing engine is a one-line ConfigError."""
    engine = effective(spec, hardware)
    if engine == "none":
        why = "" if spec.kind != "hf" else ": no engine set"
        return spec, f"{name}: {spec.kind} backend{why}"
    wanted = [k for k in IN_PROCESS_ONLY if getattr(needs, k)]
    if wanted:
        line = (f"{name}: in-process hf backend, not engine {engine}: the method needs {', '.join(wanted)}, "
                "which a server does not give")
        return spec.model_copy(update={"engine": "none"}), line
    if spec.adapter and engine != "vllm":
        from moco.errors import ConfigError

        raise ConfigError(f"model '{name}': engine {engine} with an `adapter` is not supported (vLLM serves "
                          "adapters of one base from one server: `engine: vllm`; or `engine: none`)")
    check_installed(engine)
    line = (f"{name}: {engine} engine, started and stopped by MoCo on 127.0.0.1 (text, logprobs, seeds; "
            f"{hardware.engine_concurrency} requests in flight)")
    if spec.adapter:
        line += f"; LoRA adapter {spec.adapter} served by its base model's server"
    if engine == "llamacpp" and hardware.engine_concurrency > 1:
        line += ("; its parallel slots are not batch-invariant, so sampled answers do not repeat exactly from "
                 "run to run (hardware.engine_concurrency: 1 makes them repeat, decoding one request at a time)")
    return spec.model_copy(update={"engine": engine}), line


__all__ = ["CAPABILITIES", "effective", "resolve"]
