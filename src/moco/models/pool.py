"""ModelPool: resolves model specs, loads each model once per process, places models on devices.

Pseudo-experts (same weights, different role prompts) share one loaded backend: the role prompt is a system
message, part of every request and of its cache key, not part of the weights. Identical copies of a spec get
distinct replica offsets so that sampled copies do not return the very same text.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moco.config import HardwareSettings, ModelSpec
from moco.errors import ConfigError, ModelError, did_you_mean
from moco.models import builtin
from moco.models.backends import capabilities_of, kind_info, load_backend
from moco.models.base import Backend, Capabilities

log = logging.getLogger(__name__)


@dataclass
class ModelHandle:
    """A collaborator as methods see it: an index, a name, and (through the pool) a backend."""

    index: int
    name: str
    spec: ModelSpec
    backend_key: str
    replica_offset: int = 0

    @property
    def role_prompt(self) -> str | None:
        return self.spec.role_prompt

    @property
    def description(self) -> str:
        return self.spec.description or self.spec.role_prompt or self.spec.model


# ------------------------------------------------------------------ spec checks (no loading)
def _looks_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(model))


def check_spec(spec: ModelSpec) -> None:
    """Raise a one-line ModelError if a model cannot exist; loads nothing."""
    if not kind_info(spec.kind).model_files:
        return
    m = spec.model
    if m.endswith(".gguf"):  # a GGUF file, for engine llamacpp
        if not Path(m).expanduser().is_file():
            raise ModelError(f"GGUF file not found: {m}")
        return
    if builtin.is_embedded(m):
        if builtin.EMBEDDED[m].kind != "causal-lm":
            raise ModelError(f"'{m}' is a sentence encoder, not a language model")
        builtin._package_dir(builtin.EMBEDDED[m].package)
    elif _looks_local(m):
        p = Path(m).expanduser()
        if not p.is_dir():
            raise ModelError(f"model path not found: {m}")
        if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise ModelError(f"model folder {m} has no config.json (not a Hugging Face model folder)")
        from moco.models.model_files import check_model_folder

        check_model_folder(p)  # a broken JSON or weights file: one line naming it, before anything loads
    else:
        if m.count("/") != 1 or any(c.isspace() for c in m):
            hint = did_you_mean(m, list(builtin.EMBEDDED))
            raise ModelError(f"unknown model '{m}'{hint}: not an embedded model, local folder or Hub id (org/name)")
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            try:
                from huggingface_hub import snapshot_download

                snapshot_download(m, revision=spec.revision, local_files_only=True)
            except Exception:
                raise ModelError(f"model '{m}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1") from None
    if spec.adapter:
        a = Path(spec.adapter).expanduser()
        if not (a / "adapter_config.json").exists():
            raise ModelError(f"adapter folder {spec.adapter} has no adapter_config.json")


def _source(spec: ModelSpec) -> str:
    if builtin.is_embedded(spec.model):
        return str(builtin.ensure_converted(spec.model))
    return os.path.expanduser(spec.model)


def uses_engine(spec: ModelSpec, hardware: HardwareSettings) -> bool:
    """A Hugging Face model served by a managed engine (its `engine`, else hardware.engine): moco.engines."""
    return _engine_of(spec, hardware) != "none"


def _engine_of(spec: ModelSpec, hardware: HardwareSettings) -> str:
    from moco import engines  # imports config only; kept lazy so the pool does not load engine code it never uses

    return engines.effective(spec, hardware)


def on_ray(spec: ModelSpec, hardware: HardwareSettings) -> bool:
    """A text Hugging Face model served by Ray actors (hardware.ray); vision models stay in this process."""
    return spec.kind == "hf" and hardware.ray is not None and not uses_engine(spec, hardware) \
        and not is_vision_spec(spec)


def _placed(spec: ModelSpec, hardware: HardwareSettings) -> bool:
    """Its weights load in this process, on the pool's device."""
    return kind_info(spec.kind).placed and not uses_engine(spec, hardware) and not on_ray(spec, hardware)


def backend_kind(spec: ModelSpec, hardware: HardwareSettings) -> str:
    """The registered backend kind that loads a spec: its own kind, except a Hugging Face model, which goes to
    Ray actors under hardware.ray (text models), to a managed engine (`engine:`, hardware.engine) or to the
    vision backend (a vision tower in its config)."""
    if uses_engine(spec, hardware):
        return "engine"
    if on_ray(spec, hardware):
        return "ray"
    if is_vision_spec(spec):
        return "hf_vision"
    return spec.kind


def is_vision_spec(spec: ModelSpec) -> bool:
    """A Hugging Face model with a vision tower (read from its config; embedded models are text-only)."""
    if spec.kind != "hf" or builtin.is_embedded(spec.model):
        return False
    from moco.models.hf_vision import is_vision_source

    return is_vision_source(os.path.expanduser(spec.model), spec.revision, spec.trust_remote_code)


def _weights_fingerprint(spec: ModelSpec) -> str:
    from moco.models.hf import folder_fingerprint, hub_fingerprint

    m = spec.model
    if builtin.is_embedded(m):
        fp = builtin.fingerprint(m)
    elif _looks_local(m):
        fp = f"local:{folder_fingerprint(Path(m).expanduser())}"
    else:
        fp = hub_fingerprint(m, spec.revision)
    if spec.adapter:
        fp += f"+lora:{folder_fingerprint(Path(spec.adapter).expanduser())}"
    return fp


# ------------------------------------------------------------------ process-wide residency
class _Resident:
    """Loaded backends of this process, least recently used first."""

    def __init__(self) -> None:
        self.backends: OrderedDict[str, Backend] = OrderedDict()
        self.sizes: dict[str, float] = {}
        self.lock = threading.RLock()


RESIDENT = _Resident()


@dataclass
class ModelPool:
    specs: list[ModelSpec]
    hardware: HardwareSettings = field(default_factory=HardwareSettings)
    overrides: dict[str, Backend] = field(default_factory=dict)  # spec.model -> a ready backend (tests)

    def __post_init__(self) -> None:
        self.handles: list[ModelHandle] = []
        self._fingerprints: dict[str, str] = {}
        self._placement: dict[str, str] = {}
        seen: dict[str, int] = {}
        names: dict[str, int] = {}
        for i, spec in enumerate(self.specs):
            key = self._backend_key(spec)
            ident = key + "|" + (spec.role_prompt or "")
            offset = seen.get(ident, 0)
            seen[ident] = offset + 1
            name = spec.name or _default_name(spec)
            if name in names:
                if spec.name:
                    raise ConfigError(f"models: duplicate model name '{name}'")
                n = 2
                while f"{name}#{n}" in names:
                    n += 1
                name = f"{name}#{n}"
            names[name] = i
            self.handles.append(ModelHandle(i, name, spec, key, offset))
        self._extra: dict[str, ModelHandle] = {}

    # -------------------------------------------------------------- lookup
    def __len__(self) -> int:
        return len(self.handles)

    def handle(self, ref: "int | str | ModelHandle") -> ModelHandle:
        if isinstance(ref, ModelHandle):
            return ref
        if isinstance(ref, int):
            if not 0 <= ref < len(self.handles):
                raise ConfigError(f"model index {ref} out of range (pool has {len(self.handles)} models)")
            return self.handles[ref]
        for h in [*self.handles, *self._extra.values()]:
            if h.name == ref:
                return h
        raise ConfigError(f"no model named '{ref}' in the pool{did_you_mean(ref, [h.name for h in self.handles])}")

    def add_extra(self, name: str, spec: ModelSpec) -> ModelHandle:
        """A model outside the collaborating pool (a judge, a router...), loaded like any other."""
        h = ModelHandle(-1, name, spec, self._backend_key(spec))
        self._extra[name] = h
        return h

    def register_backend(self, name: str, backend: Backend) -> ModelHandle:
        """An in-memory backend as an extra model (not part of the collaborating pool)."""
        model = f"memory:{name}"
        self.overrides[model] = backend
        self._fingerprints.pop(f"memory|{model}", None)
        h = ModelHandle(-1, name, ModelSpec(model=model, backend="scripted"), f"memory|{model}")
        self._extra[name] = h
        return h

    def source_path(self, handle: ModelHandle) -> str:
        if not kind_info(handle.spec.kind).model_files:
            raise ModelError(f"model '{handle.name}' is not a local Hugging Face model (it is {handle.spec.kind})")
        return _source(handle.spec)

    def check(self) -> None:
        """Every model can exist and fits the memory budget on its own; loads nothing, converts nothing."""
        budget = self.hardware.memory_budget_gb
        for h in [*self.handles, *self._extra.values()]:
            if h.spec.model not in self.overrides:
                check_spec(h.spec)
                if budget is not None:
                    _within_budget(h.name, self.estimate_gb(h, convert=False), budget)

    def is_remote(self, handle: ModelHandle) -> bool:
        """Its backend waits on other processes (an endpoint, Ray actors), so it can run in a thread while local
        models decode; decided from the spec, without loading anything."""
        spec = handle.spec
        if spec.model in self.overrides:
            return bool(getattr(self.overrides[spec.model], "remote", False))
        return kind_info(spec.kind).remote or uses_engine(spec, self.hardware) or on_ray(spec, self.hardware)

    def estimate_gb(self, handle: ModelHandle, convert: bool = True) -> float:
        """Weights of a Hugging Face model in the dtype it will be loaded in (0 for other kinds, Ray actors,
        and an embedded model not converted yet when `convert` is False)."""
        spec = handle.spec
        if spec.model in self.overrides or not _placed(spec, self.hardware):
            return 0.0
        from moco.models.memory import estimate_gb, local_snapshot
        from moco.models.placement import dtype_name, pick_device

        dtype = dtype_name(spec.dtype, pick_device(self.device_for(handle)))
        m = spec.model
        if builtin.is_embedded(m):
            folder = builtin.ensure_converted(m) if convert else builtin.model_dir(m)
            return estimate_gb(folder, dtype)
        if _looks_local(m):
            return estimate_gb(Path(m).expanduser(), dtype)
        return estimate_gb(local_snapshot(m, spec.revision), dtype, repo_id=m, revision=spec.revision)

    # -------------------------------------------------------------- placement and loading
    def _backend_key(self, spec: ModelSpec) -> str:
        engine = _engine_of(spec, self.hardware)
        if engine != "none":  # `engine: vllm` and hardware.engine=vllm are one server
            return kind_info("engine").backend_key(spec.model_copy(update={"engine": engine}))
        return kind_info(spec.kind).backend_key(spec)

    def device_for(self, handle: ModelHandle) -> str:
        """Explicit spec.device, else round-robin over hardware.gpu_ids by distinct weights, else CPU."""
        if handle.spec.device:
            return handle.spec.device
        ids = self.hardware.gpu_ids
        if not ids:
            return "cpu"
        if handle.backend_key not in self._placement:
            pos, _ = self.gpu_position(handle)
            self._placement[handle.backend_key] = f"cuda:{ids[pos % len(ids)]}"
        return self._placement[handle.backend_key]

    def engine_adapters(self, handle: ModelHandle) -> list[str]:
        """LoRA adapter folders of this pool's models served by the same engine server as `handle` (its base):
        the server is started with room for all of them."""
        from moco.models.backends import engine_server_key

        def server(spec: ModelSpec) -> str:
            return engine_server_key(spec.model_copy(update={"engine": _engine_of(spec, self.hardware)}))

        mine = server(handle.spec)
        return sorted({h.spec.adapter for h in self.handles if h.spec.adapter and uses_engine(h.spec, self.hardware)
                       and server(h.spec) == mine})

    def gpu_position(self, handle: ModelHandle) -> tuple[int, int]:
        """This model's position among the distinct weights placed on the GPUs, and how many there are (an
        engine is one, like an in-process model: engines.placement groups the GPUs by these)."""
        distinct = list(dict.fromkeys(h.backend_key for h in self.handles if kind_info(h.spec.kind).placed))
        pos = distinct.index(handle.backend_key) if handle.backend_key in distinct else len(self._placement)
        return pos, max(len(distinct), pos + 1)

    def fingerprint(self, handle: ModelHandle) -> str:
        key = handle.backend_key
        if key not in self._fingerprints:
            if handle.spec.model in self.overrides:
                fp = self.overrides[handle.spec.model].fingerprint
            elif _placed(handle.spec, self.hardware):
                from moco.models.placement import dtype_name, pick_device

                dev = pick_device(self.device_for(handle))
                fp = f"{_weights_fingerprint(handle.spec)}|{dtype_name(handle.spec.dtype, dev)}|{dev.split(':')[0]}"
            else:
                fp = self.backend(handle).fingerprint
            self._fingerprints[key] = fp
        return self._fingerprints[key]

    def capabilities(self, handle: ModelHandle) -> Capabilities:
        """What the model's backend can do, without loading it (declared by its kind; a ready backend's own)."""
        if handle.spec.model in self.overrides:
            return self.overrides[handle.spec.model].capabilities
        return capabilities_of(backend_kind(handle.spec, self.hardware), handle.spec)

    def backend(self, ref: "int | str | ModelHandle") -> Backend:
        """The loaded backend of a model; loads it on first use (once per process)."""
        handle = self.handle(ref)
        spec = handle.spec
        if spec.model in self.overrides:
            return self.overrides[spec.model]
        key = handle.backend_key + f"|{self.device_for(handle)}|{self.hardware.batch_size}"
        if _placed(spec, self.hardware):  # weights changed on disk: load again
            key += f"|{self.fingerprint(handle)}"
        if self.hardware.ray is not None and on_ray(spec, self.hardware):
            key += "|ray:" + self.hardware.ray.model_dump_json()
        with RESIDENT.lock:
            if key in RESIDENT.backends:
                RESIDENT.backends.move_to_end(key)
                resident = RESIDENT.backends[key]
                if hasattr(resident, "prefix_cache_bytes"):  # a resident model follows this run's setting
                    resident.prefix_cache_bytes = self.hardware.prefix_cache_mb << 20
                return resident
            need = self.estimate_gb(handle)
            self._make_room(need, handle.name)
            if on_ray(spec, self.hardware):  # free Ray CPUs/GPUs for the new actors
                from moco.models.ray_backend import make_room

                make_room(self.hardware.ray, RESIDENT.backends, RESIDENT.sizes)
            backend = self._load(handle)
            RESIDENT.backends[key] = backend
            RESIDENT.sizes[key] = need
            return backend

    def _make_room(self, need_gb: float, name: str) -> None:
        """Evict least recently used models until `need_gb` fits the budget (an error if it never can)."""
        budget = self.hardware.memory_budget_gb
        if budget is None:
            return
        _within_budget(name, need_gb, budget)
        while RESIDENT.backends and sum(RESIDENT.sizes.values()) + need_gb > budget:
            old, backend = RESIDENT.backends.popitem(last=False)
            RESIDENT.sizes.pop(old, None)
            log.info("evicting %s to stay within %.2f GB", old, budget)
            backend.close()

    def _load(self, handle: ModelHandle) -> Backend:
        """Build the backend through its kind's registry entry (models/backends.py); model files are checked
        first (one line naming what is wrong)."""
        kind = backend_kind(handle.spec, self.hardware)
        if kind_info(kind).model_files:
            check_spec(handle.spec)
        return load_backend(kind, handle.spec, _Loading(self, handle))


@dataclass
class _Loading:
    """The pool's answers about one model, for its kind's factory (`backends.PoolContext`)."""

    pool: ModelPool
    handle: ModelHandle

    @property
    def hardware(self) -> HardwareSettings:
        return self.pool.hardware

    def device(self) -> str:
        return self.pool.device_for(self.handle)

    def fingerprint(self) -> str:
        return self.pool.fingerprint(self.handle)

    def estimate_gb(self) -> float:
        return self.pool.estimate_gb(self.handle)

    def gpu_position(self) -> tuple[int, int]:
        return self.pool.gpu_position(self.handle)

    def engine_adapters(self) -> list[str]:
        return self.pool.engine_adapters(self.handle)

    def source(self) -> str:
        return _source(self.handle.spec)

    def weights_fingerprint(self) -> str:
        return _weights_fingerprint(self.handle.spec)


def _within_budget(name: str, need_gb: float, budget: float) -> None:
    if need_gb > budget:
        raise ModelError(f"model '{name}' needs {need_gb:.2f} GB, more than memory_budget_gb={budget:g}")


def _default_name(spec: ModelSpec) -> str:
    if spec.kind == "scripted" and ":" in spec.model:
        return spec.model.split(":", 1)[1]
    base = spec.model.rstrip("/").split("/")[-1]
    return base or spec.model


def unload_all() -> None:
    """Free every resident model (tests, long-lived servers)."""
    with RESIDENT.lock:
        for b in RESIDENT.backends.values():
            b.close()
        RESIDENT.backends.clear()
        RESIDENT.sizes.clear()


@dataclass(frozen=True)
class LocalModel:
    """In-process access to one model, for what is not generation: its weights or next-token logits (weight
    and logit methods), its fingerprint (to key trained artifacts), device and files (training)."""

    handle: ModelHandle
    _pool: ModelPool

    @property
    def backend(self) -> Any:
        """The loaded backend (loads it on first use, once per process)."""
        return self._pool.backend(self.handle)

    @property
    def fingerprint(self) -> str:
        return self._pool.fingerprint(self.handle)

    @property
    def device(self) -> str | None:
        return self._pool.device_for(self.handle)

    @property
    def capabilities(self) -> Capabilities:
        """What its backend can do (declared by its kind; nothing loaded)."""
        return self._pool.capabilities(self.handle)

    def token_model(self, method: str) -> Any:
        """Its token-level interface (`models.token_model.TokenModel`: next-token logits, KV cache) for a method
        decoding token by token; a model without one (an endpoint, a scripted model) is a one-line ConfigError."""
        from moco.models.token_model import require_token_model

        return require_token_model(self.backend, self.handle.name, self.handle.spec.kind, method)

    @property
    def preloaded(self) -> Any:
        """The ready in-memory backend given for this model (tests, merged weights), or None."""
        return self._pool.overrides.get(self.handle.spec.model)

    @property
    def path(self) -> str:
        """The local folder of a Hugging Face model (embedded models are converted first), e.g. to train it."""
        return self._pool.source_path(self.handle)
