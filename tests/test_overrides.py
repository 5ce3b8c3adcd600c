"""Overrides (`--set`, `--limit`, `--seed`, `moco.run(**overrides)`) are written into the raw config and then
validated like the file."""
from __future__ import annotations

import pytest

from moco.config import parse_config
from moco.errors import ConfigError
from moco.overrides import apply_overrides, parse_assignment

BASE = {"method": "text_majority_vote", "task": "moco_demo", "models": ["scripted:a", "scripted:b"]}


def test_values_are_read_as_yaml_scalars():
    assert parse_assignment("decoding.temperature=0") == ("decoding.temperature", 0)
    assert parse_assignment("params.final=vote") == ("params.final", "vote")
    assert parse_assignment("hardware.gpu_ids=[0, 1]") == ("hardware.gpu_ids", [0, 1])
    assert parse_assignment("name=") == ("name", "")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment("=3")


def test_dotted_keys_reach_strings_lists_and_new_sections():
    raw = apply_overrides(BASE, ["task.dev_limit=2", "models.1.name=judge", "params.tie=random"], limit=5, seed=9)
    assert raw["task"] == {"name": "moco_demo", "dev_limit": 2, "test_limit": 5} and raw["seed"] == 9
    assert raw["models"] == ["scripted:a", {"model": "scripted:b", "name": "judge"}]
    assert BASE["task"] == "moco_demo" and BASE["models"][1] == "scripted:b"  # the input is not changed
    cfg = parse_config(raw)
    assert cfg.task.test_limit == 5 and cfg.models[1].name == "judge" and cfg.params == {"tie": "random"}


def test_a_reference_config_is_translated_first():
    ref = {"method": "majority_vote", "task": "moco_demo", "model_names": ["scripted:a", "scripted:b"],
           "hyperparameters": {"temperature": 0.5, "max_response_length": 64}}
    cfg = parse_config(apply_overrides(ref, {"generation.temperature": 0.0}, limit=3))
    assert cfg.decoding.temperature == 0.0 and cfg.decoding.max_new_tokens == 64 and cfg.task.test_limit == 3


def test_bad_overrides_are_config_errors():
    with pytest.raises(ConfigError, match="a list of 2 needs an index 0-1, got 'x'"):
        apply_overrides(BASE, ["models.x.name=a"])
    with pytest.raises(ConfigError, match="--limit must be at least 1"):
        apply_overrides(BASE, [], limit=0)
    with pytest.raises(ConfigError, match="unknown key 'temprature' \\(did you mean 'temperature'\\?\\)"):
        parse_config(apply_overrides(BASE, ["generation.temprature=0"]))


def test_former_generation_keys_are_written_at_their_new_place(caplog):
    new = {**BASE, "decoding": {"temperature": 0.7, "max_response_length": 128}, "hardware": {"batch_size": 2}}
    with caplog.at_level("WARNING"):
        cfg = parse_config(apply_overrides(new, ["generation.temperature=0", "generation.batch_size=8",
                                                 "generation.max_new_tokens=64"]))
    assert (cfg.decoding.temperature, cfg.hardware.batch_size, cfg.decoding.max_new_tokens) == (0.0, 8, 64)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "generation.batch_size -> hardware.batch_size" in lines[0]
    cfg = parse_config(apply_overrides(new, ["decoding.temperature=0.1", "hardware.prefix_cache_mb=0"]))
    assert cfg.decoding.temperature == 0.1 and cfg.hardware.prefix_cache_mb == 0 and cfg.decoding.max_new_tokens == 128
    old = {**BASE, "generation": {"temperature": 0.7, "batch_size": 2}}  # the file's old section, an override's new key
    cfg = parse_config(apply_overrides(old, ["decoding.temperature=0"]))
    assert cfg.decoding.temperature == 0.0 and cfg.hardware.batch_size == 2
