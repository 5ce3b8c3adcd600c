"""Backend kinds as plug-ins: one registry entry per kind says how to load it and what it can do.

An entry is a lazy factory `(spec, ctx) -> Backend` (a `module:function` imported only when a model of that
kind loads: a run on endpoints never imports the Hugging Face backend, nor torch), the `Capabilities` it
declares (checked by `runner.plan` before anything loads; a function of the spec where they depend on it),
the name messages call it by, and the optional extra to install when its packages are missing. `ModelPool`
loads and `runner.plan` checks every kind through this table; adding a backend is its own module plus one
`register(...)` call (docs/adding-a-backend.md).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from moco.config import HardwareSettings, ModelSpec
from moco.errors import ModelError
from moco.models.base import Backend, Capabilities
from moco.registry import Registry


class PoolContext(Protocol):
    """What a factory may ask of the pool about the model it loads (all decided by the pool, per model)."""

    @property
    def hardware(self) -> HardwareSettings: ...

    def device(self) -> str:
        """cpu or cuda:N (spec.device, else round-robin over hardware.gpu_ids)."""
        ...

    def fingerprint(self) -> str:
        """Weights, dtype and device kind: what a cache key must change with."""
        ...

    def estimate_gb(self) -> float: ...

    def engine_adapters(self) -> list[str]:
        """Adapter folders of the run's models that share this model's engine server."""
        ...

    def gpu_position(self) -> tuple[int, int]:
        """Position among the distinct models on hardware.gpu_ids, and their number (engines group GPUs by it)."""
        ...

    def source(self) -> str:
        """The local folder (or Hub id) of the weights; an embedded model is converted first."""
        ...

    def weights_fingerprint(self) -> str:
        """The weights alone (no dtype/device): for backends that place them elsewhere (Ray actors)."""
        ...


Factory = Callable[[ModelSpec, PoolContext], Backend]


@dataclass(frozen=True)
class BackendKind:
    """What is known of a kind without importing it."""

    name: str
    capabilities: Capabilities | Callable[[ModelSpec], Capabilities]
    describe: str  # what a message calls it: "model 'm' (an OpenAI-compatible endpoint) cannot ..."
    extra: str | None = None  # pyproject extra holding its packages: the install hint
    remote: bool = False  # waits on other processes: RunContext.generate overlaps it with local decoding
    model_files: bool = False  # spec.model names Hugging Face weights: checked, fingerprinted, budgeted
    placed: bool = False  # those weights load in this process, on the pool's device
    selectable: bool = True  # a config may name it in `backend:` (not: kinds the pool routes an hf model to)
    key: Callable[[ModelSpec], str] | None = None  # specs with equal keys share one loaded backend

    def backend_key(self, spec: ModelSpec) -> str:
        """Default: the weights and how they load (model, adapter, revision, dtype, device)."""
        if self.key is not None:
            return self.key(spec)
        return f"{self.name}|{spec.model}|{spec.adapter}|{spec.revision}|{spec.dtype}|{spec.device}"


BACKENDS: Registry[Factory] = Registry("backend")


def register(name: str, factory: str | Factory, *, summary: str, capabilities: Capabilities | Callable[[ModelSpec], Capabilities],
             describe: str | None = None, extra: str | None = None, remote: bool = False, model_files: bool = False,
             placed: bool = False, selectable: bool = True, key: Callable[[ModelSpec], str] | None = None) -> None:
    """Add (or replace) a backend kind. `factory` is "package.module:function", imported on first load (or the
    module-level function itself)."""
    if not isinstance(factory, str):
        factory = f"{factory.__module__}:{factory.__qualname__}"
    info = BackendKind(name, capabilities, describe or f"{name} backend", extra, remote, model_files, placed,
                       selectable, key)
    BACKENDS.add(name, factory, summary=summary, info=info)


def unregister(name: str) -> None:
    BACKENDS.remove(name)


def kind_info(name: str) -> BackendKind:
    """A registered kind; a one-line ConfigError naming the registered kinds otherwise."""
    info: BackendKind = BACKENDS.entry(name).meta["info"]
    return info


def selectable_kinds() -> list[str]:
    """The kinds a config's `backend:` may name."""
    return [n for n in BACKENDS.names() if kind_info(n).selectable]


def capabilities_of(kind: str, spec: ModelSpec) -> Capabilities:
    caps = kind_info(kind).capabilities
    return caps(spec) if callable(caps) else caps


def install_hint(kind: str, missing: str) -> str:
    extra = kind_info(kind).extra
    where = f": pip install 'moco-collab[{extra}]'" if extra else ""
    return f"the {kind_info(kind).describe} needs the optional package '{missing}'{where}"


def load_backend(kind: str, spec: ModelSpec, ctx: PoolContext) -> Backend:
    """Import the kind's factory (a missing optional package is a one-line ModelError with the extra to
    install) and build the backend."""
    try:
        return BACKENDS.load(kind)(spec, ctx)
    except ModuleNotFoundError as e:
        package = (e.name or "").split(".")[0]
        if not package or package == "moco":
            raise
        raise ModelError(install_hint(kind, package)) from None


def _endpoint_caps(spec: ModelSpec) -> Capabilities:
    return Capabilities(chat=True, logprobs=True, seeded=bool(spec.endpoint and spec.endpoint.seeded), images=True)


def _endpoint_key(spec: ModelSpec) -> str:
    ep = spec.endpoint
    assert ep is not None
    return f"openai|{ep.base_url}|{ep.model or spec.model}"


def _script_key(spec: ModelSpec) -> str:
    return f"scripted|{spec.model}|{spec.script.model_dump_json() if spec.script else ''}"


def _ray_caps(spec: ModelSpec) -> Capabilities:
    from moco.models.ray_backend import CAPABILITIES  # a light module: Ray itself is imported on first load

    return CAPABILITIES


def _engine_caps(spec: ModelSpec) -> Capabilities:
    from moco.engines import capabilities  # a light module: the engine itself starts on first load

    return capabilities(spec.engine)


def engine_server_key(spec: ModelSpec) -> str:
    """One server per distinct base model: pseudo-experts (role prompts) and LoRA adapters of it share it."""
    return f"engine|{spec.engine}|{spec.model}|{spec.revision}|{spec.dtype}|{spec.device}"


def _engine_key(spec: ModelSpec) -> str:
    """One client per served model: the base, or one adapter on the base's server."""
    return engine_server_key(spec) + (f"|lora:{spec.adapter}" if spec.adapter else "")


_HF = Capabilities(chat=True, logprobs=True, logits=True, weights=True, lora=True, seeded=True)
register("scripted", "moco.models.scripted:load", summary="replies from rules in the config (tests, demos)",
         capabilities=Capabilities(chat=True, seeded=True), key=_script_key)
register("openai", "moco.models.openai:load", summary="an OpenAI-compatible endpoint over HTTP",
         capabilities=_endpoint_caps, describe="an OpenAI-compatible endpoint", remote=True,
         key=_endpoint_key)
register("hf", "moco.models.hf:load", summary="a local Hugging Face causal LM (torch, transformers)",
         capabilities=_HF, extra="hf", model_files=True, placed=True)
register("hf_vision", "moco.models.hf_vision:load", summary="a local Hugging Face vision-language model",
         capabilities=Capabilities(chat=True, seeded=True, images=True), describe="vision backend", extra="hf",
         model_files=True, placed=True, selectable=False)
register("ray", "moco.models.ray_backend:load", summary="Hugging Face models as Ray actors",
         capabilities=_ray_caps, describe="Ray actors (hardware.ray)",
         extra="ray", remote=True, model_files=True, selectable=False)

register("engine", "moco.engines.backend:load", summary="a vLLM / llama.cpp / SGLang server MoCo starts and stops",
         capabilities=_engine_caps, describe="a managed engine (engine:)", remote=True, selectable=False,
         key=_engine_key)

__all__ = ["BACKENDS", "BackendKind", "Factory", "PoolContext", "capabilities_of", "install_hint", "kind_info",
           "load_backend", "register", "selectable_kinds",
           "unregister"]
