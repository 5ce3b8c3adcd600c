"""The "engine" backend kind: start a server for one model, then talk to it as an OpenAI endpoint."""
from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from moco.engines import capabilities, effective, placement
from moco.engines.launch import Launch, command, sampling_body
from moco.engines.process import STARTUPS, ManagedServer, free_port, run_cores
from moco.errors import ModelError
from moco.models import builtin
from moco.models.memory import estimate_gb
from moco.models.placement import DTYPE_BYTES
from moco.models.openai import OpenAIBackend

if TYPE_CHECKING:
    from moco.config import ModelSpec
    from moco.models.backends import PoolContext


@dataclass
class _Shared:
    """One running server and the clients using it (the base model, its pseudo-experts' client, its adapters)."""

    server: ManagedServer
    launch: Launch
    users: int = 0
    adapters: dict[str, str] = field(default_factory=dict)  # adapter folder -> the name it is served under


_SERVERS: dict[str, _Shared] = {}
_SERVERS_LOCK = threading.Lock()


class EngineBackend(OpenAIBackend):
    """An OpenAI backend on a server MoCo started: closing the last client of a server stops the engine."""

    shared: _Shared
    server_key: str

    @property
    def server(self) -> ManagedServer:
        return self.shared.server

    @property
    def down(self) -> str | None:
        """Why the server stopped answering; when its process died, with the error its log ends on."""
        why = super().down
        if why is not None and not self.shared.server.running:
            return f"{why}; engine {self.shared.server.label} exited: {self.shared.server.last_error()}"
        return why

    def close(self) -> None:
        super().close()
        with _SERVERS_LOCK:
            self.shared.users -= 1
            last = self.shared.users <= 0
            if last and _SERVERS.get(self.server_key) is self.shared:
                del _SERVERS[self.server_key]
        if last:
            self.shared.server.stop()


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
    """The backend registry's factory: the model's server (started, or already running for its base model),
    its adapter loaded into it when it has one, and a client for the name it is served under."""
    engine = effective(spec, ctx.hardware)
    hw = ctx.hardware
    name = spec.model.rstrip("/").split("/")[-1] or "model"
    source = _source(spec, engine, ctx)
    gpus, share = _gpus(spec, source, ctx)
    adapters = ctx.engine_adapters()
    launch = Launch(engine=engine, source=source, name=name, port=free_port(), dtype=_dtype(spec, gpus), seed=0,
                    threads=run_cores(), concurrency=hw.engine_concurrency, max_len=hw.engine_max_len, gpus=gpus,
                    gpu_share=share, extra=tuple(hw.engine_args), model_len=_model_len(source), loras=len(adapters),
                    lora_rank=_lora_rank(adapters))
    key = f"{engine}|{source}|{launch.dtype}|{gpus}|{share}|{hw.engine_args}|lora={bool(adapters)}"
    with _SERVERS_LOCK:
        shared = _SERVERS.get(key)
        if shared is None or not shared.server.running:
            shared = _SERVERS[key] = _Shared(_start(spec, launch, hw.engine_start_timeout_s), launch)
        shared.users += 1
    try:
        served = _served_adapter(shared, spec.adapter) if spec.adapter else name
        b = EngineBackend(shared.server.base_url, served, concurrency=hw.engine_concurrency, timeout_s=600.0,
                          seeded=True, extra_body=sampling_body(engine))
        b.shared, b.server_key = shared, key
        b.capabilities = capabilities(engine)
        b.fingerprint = f"engine:{engine}:{_weights(spec, launch, ctx)}|{launch.dtype}"
        b.check()
    except BaseException:
        with _SERVERS_LOCK:
            shared.users -= 1
        if shared.users <= 0:
            _SERVERS.pop(key, None)
            shared.server.stop()
        raise
    return b


def _model_len(source: str) -> int | None:
    """The context length a Hugging Face folder declares (config.json), or None."""
    try:
        cfg = json.loads((Path(source) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    n = cfg.get("max_position_embeddings") or cfg.get("text_config", {}).get("max_position_embeddings")
    return int(n) if isinstance(n, int) else None


def _start(spec: ModelSpec, launch: Launch, timeout_s: float) -> ManagedServer:
    argv, env = command(launch)
    server = ManagedServer(f"{launch.engine} for '{spec.model}'", argv, launch.port, env)
    started = time.time()
    server.start()
    seconds = server.wait_ready(timeout_s, _say)
    STARTUPS.append((f"{launch.engine}:{launch.name}", started, seconds))
    return server


# vLLM accepts these as --max-lora-rank
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _lora_rank(adapters: list[str]) -> int:
    """The smallest rank vLLM accepts that holds every adapter's `r` (0 without adapters)."""
    if not adapters:
        return 0
    ranks = []
    for folder in adapters:
        cfg = json.loads((Path(folder).expanduser() / "adapter_config.json").read_text())
        ranks.append(int(cfg.get("r", 8)))
    wanted = max(ranks)
    fit = next((r for r in _LORA_RANKS if r >= wanted), None)
    if fit is None:
        raise ModelError(f"LoRA rank {wanted} is above what vLLM serves ({_LORA_RANKS[-1]})")
    return fit


def _served_adapter(shared: _Shared, adapter: str) -> str:
    """The name an adapter is served under, loading it into the running server the first time
    (vLLM: POST /v1/load_lora_adapter)."""
    folder = str(Path(adapter).expanduser().resolve())
    with _SERVERS_LOCK:
        if folder in shared.adapters:
            return shared.adapters[folder]
        if not shared.launch.loras:
            raise ModelError(f"engine {shared.launch.engine} for '{shared.launch.name}' was started without LoRA; "
                             f"adapter {adapter} cannot be added to it")
        name = f"{Path(folder).name}-{hashlib.sha256(folder.encode()).hexdigest()[:8]}"
        r = httpx.post(shared.server.base_url + "/load_lora_adapter", json={"lora_name": name, "lora_path": folder},
                       timeout=600.0)
        if r.status_code != 200:
            raise ModelError(f"engine {shared.launch.engine} could not load adapter {adapter}: HTTP {r.status_code} "
                             f"{r.text[:300]}")
        shared.adapters[folder] = name
        return name


def _weights(spec: ModelSpec, launch: Launch, ctx: PoolContext) -> str:
    """What the cache key changes with: the weights (a GGUF file by path, size and time), never the port."""
    if spec.model.endswith(".gguf"):
        st = Path(launch.source).stat()
        return f"gguf:{launch.source}:{st.st_size}:{int(st.st_mtime)}"
    return ctx.weights_fingerprint()


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
