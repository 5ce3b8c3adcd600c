"""The "engine" backend kind: start a server for one model, then talk to it as an OpenAI endpoint."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from moco.engines import CAPABILITIES, placement
from moco.engines.launch import Launch, command
from moco.engines.process import STARTUPS, ManagedServer, free_port, run_cores
from moco.errors import ModelError
from moco.models import builtin
from moco.models.memory import DTYPE_BYTES, estimate_gb
from moco.models.openai import OpenAIBackend

if TYPE_CHECKING:
    from moco.config import ModelSpec
    from moco.models.backends import PoolContext

class EngineBackend(OpenAIBackend):
    """An OpenAI backend that owns its server: closing it stops the engine."""

    server: ManagedServer

    def close(self) -> None:
        super().close()
        self.server.stop()


def _source(spec: ModelSpec, engine: str, ctx: PoolContext) -> str:
    """A GGUF file for llama.cpp (the model itself, or the file an embedded model ships); a folder otherwise."""
    if engine != "llamacpp":
        return ctx.source()
    if spec.model.endswith(".gguf"):
        return str(Path(spec.model).expanduser())
    if builtin.is_embedded(spec.model):
        m = builtin.EMBEDDED[spec.model]
        return str(builtin._package_dir(m.package) / m.filename)
    raise ModelError(f"engine llamacpp needs a .gguf file; model '{spec.model}' is not one")


def _dtype(spec: ModelSpec, gpus: tuple[int, ...]) -> str:
    """MoCo's own choice (fp32 on CPU, where bf16 is slow), so answers match the in-process backend."""
    if spec.dtype != "auto":
        return spec.dtype
    return "auto" if gpus else "float32"


def _gpus(spec: ModelSpec, source: str, ctx: PoolContext) -> tuple[tuple[int, ...], float]:
    """The engine's GPU group and memory share (engines.placement); no GPUs: CPU."""
    device = ctx.device()
    if not device.startswith("cuda:"):
        return (), placement.MEMORY_SHARE
    ids = ctx.hardware.gpu_ids or [int(device.split(":")[1])]
    asked = ctx.hardware.engine_gpus_per_model
    if asked is None and len(ids) > 1 and Path(source).is_dir():
        dtype = spec.dtype if spec.dtype in DTYPE_BYTES else "bfloat16"
        weights = estimate_gb(Path(source), dtype)
        size = placement.group_size(weights, placement.gpu_memory_gb(ids[0]), len(ids), None, spec.model)
    else:
        size = placement.group_size(0.0, 1.0, len(ids), asked, spec.model)
    position, models = ctx.gpu_position()
    return placement.place(ids, size, position, models, spec.device)


def load(spec: ModelSpec, ctx: PoolContext) -> EngineBackend:
    """The backend registry's factory: start the engine, wait until it answers, return its client."""
    engine = spec.engine or ctx.hardware.engine
    hw = ctx.hardware
    name = spec.model.rstrip("/").split("/")[-1] or "model"
    source = _source(spec, engine, ctx)
    gpus, share = _gpus(spec, source, ctx)
    launch = Launch(engine=engine, source=source, name=name, port=free_port(), dtype=_dtype(spec, gpus), seed=0,
                    threads=run_cores(), concurrency=hw.engine_concurrency, max_len=hw.engine_max_len, gpus=gpus,
                    gpu_share=share, extra=tuple(hw.engine_args))
    argv, env = command(launch)
    server = ManagedServer(f"{engine} for '{spec.model}'", argv, launch.port, env)
    started = time.time()
    server.start()
    seconds = server.wait_ready(hw.engine_start_timeout_s, _say)
    STARTUPS.append((f"{engine}:{name}", started, seconds))
    try:
        b = EngineBackend(server.base_url, name, concurrency=hw.engine_concurrency, timeout_s=600.0, seeded=True)
        b.server = server
        b.capabilities = CAPABILITIES
        b.fingerprint = f"engine:{engine}:{_weights(spec, launch, ctx)}|{launch.dtype}"
        b.check()
    except BaseException:
        server.stop()
        raise
    return b


def _weights(spec: ModelSpec, launch: Launch, ctx: PoolContext) -> str:
    """What the cache key changes with: the weights (a GGUF file by path, size and time), never the port."""
    if spec.model.endswith(".gguf"):
        st = Path(launch.source).stat()
        return f"gguf:{launch.source}:{st.st_size}:{int(st.st_mtime)}"
    return ctx.weights_fingerprint()


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
