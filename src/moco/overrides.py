"""Command-line and keyword overrides of a config: `--set decoding.temperature=0`, `--limit 20`, `--seed 3`.

Overrides are written into the raw config (ours or the reference's JSON, translated first) before it is
validated, so an overridden key is checked exactly as strictly as one written in the file: a misspelt key is
refused with a suggestion, a bad value with the key's own message. A key of the former `generation:` section
(`generation.temperature`, `generation.batch_size`) is written at its new place, with one warning line.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from moco.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from moco.config import ExperimentConfig

# one setting, two spellings: writing one replaces the other (an override wins over the file)
SPELLINGS = {"max_new_tokens": "max_response_length", "max_response_length": "max_new_tokens"}


def parse_assignment(text: str) -> tuple[str, Any]:
    """'decoding.temperature=0' -> ('decoding.temperature', 0); the value is read as a YAML scalar/list."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set decoding.temperature=0")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Write `value` at the dotted `key` ('models.0.name' indexes lists), creating mappings on the way."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if part == "task" and i == 0 and isinstance(node.get("task"), str):
            node["task"] = {"name": node["task"]}
        if isinstance(node, list):
            node = node[_index(node, part, where)]
            if isinstance(node, str) and where.startswith("models."):  # "scripted:a" -> {"model": "scripted:a"}
                lst, idx = _parent_list(raw, parts[: i + 1])
                lst[idx] = node = {"model": node}
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[:i])}' is not a mapping")
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    elif isinstance(node, dict):
        if parts[0] == "decoding" and len(parts) == 2 and last in SPELLINGS:
            node.pop(SPELLINGS[last], None)
        node[last] = value
    else:
        raise ConfigError(f"--set {key}: '{'.'.join(parts[:-1])}' is not a mapping")


def _new_path(key: str) -> str:
    """A dotted key of the former `generation:` section at its new place; others unchanged."""
    from moco.config import former_generation_keys, new_home

    head, _, rest = key.partition(".")
    if head != "generation" or not rest:
        return key
    first, _, tail = rest.partition(".")
    if first not in former_generation_keys():
        raise ConfigError(f"--set {key}: unknown key '{first}'{did_you_mean(first, sorted(former_generation_keys()))}")
    return new_home(first) + (f".{tail}" if tail else "")


def _index(lst: list[Any], part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(lst) <= int(part) < len(lst):
        raise ConfigError(f"--set {where}: a list of {len(lst)} needs an index 0-{len(lst) - 1}, got '{part}'")
    return int(part)


def _parent_list(raw: dict[str, Any], parts: list[str]) -> tuple[list[Any], int]:
    node: Any = raw
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, int(parts[-1])


def apply_overrides(raw: Mapping[str, Any], sets: Iterable[str] | Mapping[str, Any] = (), *,
                    limit: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """A copy of `raw` (our schema; a reference config is translated first) with the overrides written in."""
    from moco.config import config_warning, from_reference, is_reference_format, split_generation

    out = copy.deepcopy(dict(raw))
    if is_reference_format(out):
        out = from_reference(out)
    try:
        out = split_generation(out, "config")  # a former `generation:` section, moved before overrides land
    except ValueError as e:
        raise ConfigError(f"config: {e}") from None
    pairs = sets.items() if isinstance(sets, Mapping) else (parse_assignment(s) for s in sets)
    moved: list[str] = []
    for key, value in pairs:
        new = _new_path(key)
        if new != key:
            moved.append(f"{key} -> {new}")
        set_dotted(out, new, value)
    if moved:
        config_warning(f"--set: the `generation:` section is split into `decoding:` and `hardware:`; written at: "
                       f"{', '.join(moved)}")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}")
        set_dotted(out, "task.test_limit", limit)
    if seed is not None:
        set_dotted(out, "seed", seed)
    return out


def config_with_overrides(source: Any, sets: Iterable[str] | Mapping[str, Any] = (), *, limit: int | None = None,
                          seed: int | None = None) -> ExperimentConfig:
    """An ExperimentConfig from a path, a dict or a config, with the overrides applied and validated."""
    from moco.config import ExperimentConfig, config_notes, parse_config, read_config_file

    if isinstance(source, ExperimentConfig):
        raw: Mapping[str, Any] = source.model_dump(mode="json", exclude_unset=True, by_alias=False)
    elif isinstance(source, (str, Path)):
        raw = read_config_file(source)
    elif isinstance(source, Mapping):
        raw = source
    else:
        raise ConfigError(f"a config is a path, a dict or an ExperimentConfig, not {type(source).__name__}")
    with config_notes():
        return parse_config(apply_overrides(raw, sets, limit=limit, seed=seed))
