"""Experiment config: one file (YAML or JSON) says models, task, method, decoding and hardware.

`decoding:` is how answers are sampled (part of what a model is asked); `hardware:` is where and how fast
models run (GPUs, batch size, KV prefix cache, sharding: engine resources, not part of a request's cache key).
Our schema is strict (unknown keys are errors that suggest the nearest valid key). A config with the former
`generation:` section (both kinds mixed) is read with one warning line naming where each of its keys now
lives. The reference implementation's JSON configs (`method`, `task`, `task_type`, `gpu_ids`, `model_names`,
`hyperparameters`) are read unchanged: decoding keys go to `decoding`, engine keys to `hardware`, the rest to
the method's typed `params`.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moco.errors import ConfigError, did_you_mean

REFERENCE_KEYS = {"method", "task", "task_type", "gpu_ids", "model_names", "hyperparameters"}
REFERENCE_DECODING_KEYS = {"max_response_length", "temperature", "top_p"}
REFERENCE_ENGINE_KEYS = {"batch_size", "big_model_mode"}
REFERENCE_GENERATION_KEYS = REFERENCE_DECODING_KEYS | REFERENCE_ENGINE_KEYS
# keys of the former `generation:` section that are engine resources (now in `hardware:`); the rest is decoding
ENGINE_KEYS = ("batch_size", "big_model_mode", "prefix_cache_mb")

log = logging.getLogger(__name__)
_NOTES: ContextVar[list[str] | None] = ContextVar("moco_config_notes", default=None)


@contextlib.contextmanager
def config_notes() -> Iterator[None]:
    """Hold the warnings of reading one config and print each once, only when the config is accepted: a refused
    config prints its one error line alone. Nested uses share the outermost collection."""
    if _NOTES.get() is not None:
        yield
        return
    token = _NOTES.set([])
    try:
        yield
        notes = _NOTES.get() or []
    finally:
        _NOTES.reset(token)
    for note in dict.fromkeys(notes):
        log.warning("%s", note)


def config_warning(note: str) -> None:
    """A warning about the config being read (held until it is accepted; printed at once outside a reading)."""
    notes = _NOTES.get()
    if notes is None:
        log.warning("%s", note)
    else:
        notes.append(note)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are rejected with a did-you-mean suggestion."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)
    # keys of the reference implementation whose meaning differs from ours: key -> (our field, converter)
    reference_keys: ClassVar[dict[str, tuple[str, Callable[[Any], Any]]]] = {}
    # keys that moved to another section: key -> where it lives now (named in the unknown-key error)
    moved_keys: ClassVar[dict[str, str]] = {}

    @classmethod
    def _translate(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Rewrite former spellings of this section before it is checked (default: none)."""
        return data

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = cls._translate(data)
            for ref, (fname, convert) in cls.reference_keys.items():
                if ref in data:
                    if fname in data:
                        raise ValueError(f"give either '{ref}' (reference key) or '{fname}', not both")
                    value = data[ref]
                    data = {k: v for k, v in data.items() if k != ref}
                    data[fname] = convert(value)
            valid: set[str] = set(cls.reference_keys)
            for fname, f in cls.model_fields.items():
                valid.add(fname)
                if f.alias:
                    valid.add(f.alias)
                if f.validation_alias and isinstance(f.validation_alias, str):
                    valid.add(f.validation_alias)
            for key in data:
                if not isinstance(key, str):
                    raise ValueError(f"keys must be strings, got {key!r}")
                if key not in valid and key in cls.moved_keys:
                    raise ValueError(f"unknown key '{key}' (it lives in {cls.moved_keys[key]})")
                if key not in valid:
                    public = sorted(v for v in valid if not v.startswith("_"))
                    raise ValueError(f"unknown key '{key}'{did_you_mean(key, public)}")
        return data


class EndpointSpec(StrictModel):
    """An OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, OpenAI)."""

    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="served model name; default: the spec's `model`")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    concurrency: int = Field(8, ge=1, le=1024, description="requests in flight to this base_url, shared by "
                                                          "every model served there (multi-LoRA)")
    timeout_s: float = Field(120.0, gt=0, le=86400)
    max_retries: int = Field(4, ge=0, le=20)
    seeded: bool = Field(False, description="the server honours per-request seeds (vLLM does)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got '{v}'")
        return v


class ScriptRule(StrictModel):
    match: str
    reply: str | list[str]


class ScriptSpec(StrictModel):
    """Replies of a scripted model: the first rule whose regex matches the last user message wins."""

    rules: list[ScriptRule] = Field(default_factory=list)
    default: str | list[str] = ""
    seconds_per_token: float = Field(0.0, ge=0.0, le=10.0, description="pace replies like a slow model "
                                     "(tests of the server's time limit)")


EngineName = Literal["auto", "vllm", "llamacpp", "sglang", "none"]


class ModelSpec(StrictModel):
    """One collaborator. `model` is an embedded name, a Hub id, a local folder, or `scripted[:name]`."""

    model: str = Field(min_length=1)
    name: str | None = Field(None, description="display name, unique in the pool")
    role_prompt: str | None = Field(None, description="system prompt that makes a pseudo-expert")
    description: str | None = Field(None, description="what this model is good at (for routers)")
    adapter: str | None = Field(None, description="LoRA adapter folder applied on top of `model`")
    revision: str | None = None
    backend: str = Field("auto", description="auto, or a registered backend kind: hf, openai, scripted, or one "
                         "added with moco.models.backends.register")
    endpoint: EndpointSpec | None = None
    script: ScriptSpec | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str | None = Field(None, description="cpu, cuda:N; default from hardware.gpu_ids")
    trust_remote_code: bool = False
    engine: EngineName | None = Field(None, description="serve this model with a server MoCo starts and stops "
                                      "itself (vllm, llamacpp, sglang), none (in-process) or auto; default: "
                                      "hardware.engine (docs/engines.md)")

    @field_validator("backend")
    @classmethod
    def _registered(cls, v: str) -> str:
        from moco.models.backends import selectable_kinds  # the registry imports this module

        kinds = selectable_kinds()
        if v != "auto" and v not in kinds:
            raise ValueError(f"unknown backend '{v}'{did_you_mean(v, kinds)} (backends: auto, {', '.join(kinds)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        if self.backend == "openai" and self.endpoint is None:
            raise ValueError(f"model '{self.model}': backend openai needs an `endpoint` with base_url")
        if self.script is not None and self.kind != "scripted":
            raise ValueError(f"model '{self.model}': `script` is only for scripted models")
        if self.engine not in (None, "none", "auto") and self.kind != "hf":
            raise ValueError(f"model '{self.model}': `engine: {self.engine}` serves Hugging Face weights or a GGUF "
                             f"file; this model is {self.kind} (an endpoint is a server already)")
        return self

    @property
    def kind(self) -> str:
        if self.backend != "auto":
            return self.backend
        if self.endpoint is not None:
            return "openai"
        if self.model == "scripted" or self.model.startswith("scripted:"):
            return "scripted"
        return "hf"


class DecodingSettings(StrictModel):
    """How every model call of a run samples its answer (methods may override per call)."""

    moved_keys: ClassVar[dict[str, str]] = {k: f"hardware.{k}" for k in ENGINE_KEYS}

    max_new_tokens: int = Field(512, ge=1, le=131072, alias="max_response_length",
                                description="maximum new tokens per call")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 = greedy")
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    dev_decoding: Literal["sampled", "greedy"] = Field(
        "sampled", description="dev answers of every dev-based selection (dev-best model, rankings, soups, "
        "swarms, grids): the run's sampling (the papers') or greedy")
    dev_repeats: int = Field(1, ge=1, le=64, description="sampled dev decoding: each dev item's score is the "
                             "mean over this many independent samples (1: one pass, as the papers)")

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_new_tokens" in data and "max_response_length" in data:
            raise ValueError("give either 'max_new_tokens' or 'max_response_length' (the same setting), not both")
        return data


class RaySettings(StrictModel):
    """Run every Hugging Face model of the pool as `replicas` Ray actors (data parallel over GPUs and nodes)."""

    address: str | None = Field(None, description="an existing cluster ('auto', 'ray://host:10001'); "
                                                  "default: start a local Ray")
    replicas: int = Field(2, ge=1, le=4096, description="actors per model; each loads the model once")
    num_gpus: float = Field(0, ge=0, description="GPUs per actor (1 on a GPU cluster)")
    num_cpus: float = Field(1, gt=0, description="CPUs per actor")


class HardwareSettings(StrictModel):
    """Where and how fast models run (engine resources, not part of what a model is asked).
    Empty `gpu_ids` means CPU."""

    moved_keys: ClassVar[dict[str, str]] = {k: f"decoding.{k}" for k in
                                            ("max_new_tokens", "max_response_length", "temperature", "top_p",
                                             "dev_decoding", "dev_repeats")}

    gpu_ids: list[int] = Field(default_factory=list)
    batch_size: int = Field(16, ge=1, le=4096, description="rows per forward pass (HF backends)")
    big_model_mode: bool = Field(False, description="shard each model over hardware.gpu_ids (device_map=auto)")
    prefix_cache_mb: int = Field(1024, ge=0, le=1 << 20, description="KV of processed prompts kept per loaded "
                                 "model (on its device) so a prompt extending one is prefilled only from where it "
                                 "differs; 0 = off")
    memory_budget_gb: float | None = Field(None, gt=0, description="refuse to load models beyond this budget")
    ray: RaySettings | None = Field(None, description="Hugging Face models run as Ray actors")
    engine: EngineName = Field("auto", description="default `engine` of every Hugging Face model: a server MoCo "
                               "starts and stops (vllm, llamacpp, sglang), none (in-process decoding), or auto: the "
                               "fastest measured for the model and hardware among those installed (docs/engines.md)")
    engine_concurrency: int = Field(64, ge=1, le=4096, description="requests in flight to each managed engine")
    engine_max_len: int | None = Field(None, ge=64, description="context length a managed engine allocates "
                                       "(--max-model-len / --ctx-size); default: the engine's own")
    engine_args: list[str] = Field(default_factory=list, description="extra command-line arguments appended to "
                                   "every managed engine's command (e.g. [--enforce-eager] for vLLM)")
    engine_gpus_per_model: int | None = Field(None, ge=1, le=64, description="GPUs of hardware.gpu_ids each "
                                              "managed engine gets (tensor parallel over them); default: the "
                                              "fewest that hold the model (docs/engines.md)")
    engine_start_timeout_s: float = Field(900.0, gt=0, le=86400, description="give up on an engine that is not "
                                          "healthy after this long (vLLM on CPU takes minutes)")

    @field_validator("gpu_ids")
    @classmethod
    def _ids(cls, v: list[int]) -> list[int]:
        if any(i < 0 for i in v):
            raise ValueError("gpu_ids must be non-negative integers")
        if len(set(v)) != len(v):
            raise ValueError("gpu_ids has duplicates")
        return v


class TaskSettings(StrictModel):
    """The dataset: a registered name, or a file of your own with a field mapping."""

    name: str = Field(min_length=1, description="a registered task, a MoCo JSON file, or the name of your data")
    task_type: str | None = Field(None, description="override the dataset's task type (required for your own file)")
    data_dir: str | None = None
    dev_limit: int | None = Field(None, ge=0, description="use only the first N dev items")
    test_limit: int | None = Field(None, ge=1, description="use only the first N test items")
    path: str | None = Field(None, description="your own data: a JSONL, CSV or JSON file (the test split)")
    dev_path: str | None = Field(None, description="your own dev split (same format and fields as `path`)")
    fields: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="our field -> your column: id, question/input, choices (a column or a list of columns), "
                    "answer/output, tests, entry_point, category, reference; no answer column = generation only")
    scorer: str | None = Field(None, description="score with this scorer instead of the task's own (e.g. llm_judge)")

    @model_validator(mode="after")
    def _own_data(self) -> "TaskSettings":
        if (self.dev_path or self.fields) and not self.path:
            raise ValueError("`dev_path` and `fields` describe your own data file: give it as `path`")
        return self


class ExperimentConfig(StrictModel):
    """A whole experiment."""

    method: str = Field(min_length=1)
    task: TaskSettings
    models: list[ModelSpec] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="the method's hyperparameters")
    decoding: DecodingSettings = Field(default_factory=DecodingSettings)
    hardware: HardwareSettings = Field(default_factory=HardwareSettings)
    roles: dict[str, str | int | ModelSpec] = Field(default_factory=dict,
                                                    description="role -> pool model name/index or a new model")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    name: str | None = None
    max_failed: float = Field(0, ge=0, description="failed items tolerated per split before the run fails: a count "
                              "(0, 1, 2, ...) or a fraction below 1 (0.1 = a tenth); failed items are never scored")

    @classmethod
    def _translate(cls, data: dict[str, Any]) -> dict[str, Any]:
        return split_generation(data, "config")

    @field_validator("max_failed")
    @classmethod
    def _max_failed(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("max_failed must be a count (0, 1, 2, ...) or a fraction below 1, e.g. 0.1")
        return int(v) if v >= 1 else v

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"model": m} if isinstance(m, str) else m for m in v]
        return v

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ({"model": s["model"], **s} if isinstance(s, dict) and "model" in s else s) for k, s in v.items()}
        return v


# ------------------------------------------------------------------------------------------- loading
def new_home(key: str) -> str:
    """Where a key of the former `generation:` section lives now: 'hardware.batch_size', 'decoding.top_p'."""
    return f"{'hardware' if key in ENGINE_KEYS else 'decoding'}.{key}"


def former_generation_keys() -> set[str]:
    """The keys the former `generation:` section accepted."""
    return set(DecodingSettings.model_fields) | {"max_response_length"} | set(ENGINE_KEYS)


def split_generation(data: dict[str, Any], where: str) -> dict[str, Any]:
    """`data` with a former `generation:` section moved into `decoding:` and `hardware:`, and one warning line
    saying where each key went. A key also given at its new place with another value is an error (ValueError)."""
    if "generation" not in data:
        return data
    old = data["generation"]
    if old is None:
        old = {}
    if not isinstance(old, dict):
        raise ValueError("generation: the former section must be a mapping (its keys now live in `decoding:` "
                         "and `hardware:`)")
    known = former_generation_keys()
    out = {k: v for k, v in data.items() if k != "generation"}
    moved: list[str] = []
    for key, value in old.items():
        if key not in known:
            raise ValueError(f"generation: unknown key '{key}'{did_you_mean(str(key), sorted(known))}")
        home = new_home(key)
        section, name = home.split(".")
        target = out.get(section) or {}
        if not isinstance(target, dict):
            raise ValueError(f"{section}: Input should be a valid dictionary")
        spellings = {"max_new_tokens", "max_response_length"} if name in {"max_new_tokens", "max_response_length"} \
            else {name}
        given = next((k for k in spellings if k in target), None)
        if given is not None and target[given] != value:
            raise ValueError(f"generation.{key} is {value!r} but {section}.{given} is {target[given]!r}: give it "
                             f"once, as {section}.{given}")
        if given is None:
            out[section] = {**target, key: value}
        moved.append(f"{key} -> {home}")
    config_warning(f"{where}: the `generation:` section is split into `decoding:` and `hardware:`; its keys now live "
                   f"at: {', '.join(moved) or '(none given)'}")
    return out


def from_reference(raw: dict[str, Any]) -> dict[str, Any]:
    """Translate a reference-implementation JSON config into our schema (keys accepted as they are)."""
    unknown = set(raw) - REFERENCE_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"config: unknown key '{key}'{did_you_mean(key, sorted(REFERENCE_KEYS))}")
    for key in ("method", "task", "model_names"):
        if key not in raw:
            raise ConfigError(f"config: missing required key '{key}'")
    hp = raw.get("hyperparameters") or {}
    if not isinstance(hp, dict):
        raise ConfigError("config: 'hyperparameters' must be an object")
    names = raw["model_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("config: 'model_names' must be a list of strings")
    task: dict[str, Any] = {"name": raw["task"]}
    if raw.get("task_type"):
        task["task_type"] = raw["task_type"]
    return {
        "method": raw["method"],
        "task": task,
        "models": names,
        "decoding": {k: v for k, v in hp.items() if k in REFERENCE_DECODING_KEYS},
        "params": {k: v for k, v in hp.items() if k not in REFERENCE_GENERATION_KEYS},
        "hardware": {"gpu_ids": raw.get("gpu_ids") or [], **{k: v for k, v in hp.items() if k in REFERENCE_ENGINE_KEYS}},
    }


def is_reference_format(raw: dict[str, Any]) -> bool:
    return "model_names" in raw or "hyperparameters" in raw or "gpu_ids" in raw


class _StrictYamlLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (plain YAML silently keeps the last one)."""


def _strict_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key '{key}' appears twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key '{k}' appears twice")
        out[k] = v
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse YAML or JSON into a dict, with one-line errors."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    if not p.is_file():
        raise ConfigError(f"config is not a file: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}): is this a config file?") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    if not text.strip():
        raise ConfigError(f"config file is empty: {p}")
    try:
        if p.suffix == ".json":
            raw = json.loads(text, object_pairs_hook=_json_object)
        else:
            raw = yaml.load(text, Loader=_StrictYamlLoader)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except ValueError as e:  # a duplicate JSON key, a YAML value that cannot be built
        raise ConfigError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the config must be a mapping of keys, got {type(raw).__name__}")
    return raw


def parse_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a config dict (ours or the reference's) into an ExperimentConfig."""
    with config_notes():
        return _parse_config(raw)


def _parse_config(raw: dict[str, Any]) -> ExperimentConfig:
    if is_reference_format(raw):
        raw = from_reference(raw)
    if "method" not in raw and {"methods", "pools"} <= raw.keys():  # a `moco compare` file given to run/validate
        raise ConfigError("config: this is a sweep (it has `methods:` and `pools:`), not a run config: "
                          "check it with `moco compare FILE --plan`, run it with `moco compare FILE`")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "config")) from None


def load_config(path: str | Path) -> ExperimentConfig:
    return parse_config(read_config_file(path))


def format_validation_error(e: ValidationError, prefix: str) -> str:
    """The first pydantic error as one line naming the key."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] == "missing":
        msg = "missing required key"
    where = f"{prefix}: {loc}: " if loc else f"{prefix}: "
    more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
    return f"{where}{msg}{more}"


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what the run directory stores)."""
    data = cfg.model_dump(mode="json", by_alias=False, exclude_none=True)
    if not data.get("max_failed"):  # the default (no failure tolerated) is not written: older run dirs still match
        data.pop("max_failed", None)
    return yaml.safe_dump(data, sort_keys=False)
