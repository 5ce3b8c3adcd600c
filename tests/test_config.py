"""Config: strict keys with suggestions, the reference format read unchanged, one-line errors."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moco.config import ExperimentConfig, load_config, parse_config
from moco.errors import ConfigError
from moco.methods import get_method

BASE = {"method": "text_multiagent_refine", "task": "moco_demo", "models": ["scripted:a", "scripted:b"]}


def test_minimal_config_fills_defaults():
    cfg = parse_config(BASE)
    assert cfg.task.name == "moco_demo"
    assert [m.model for m in cfg.models] == ["scripted:a", "scripted:b"]
    assert cfg.decoding.max_new_tokens == 512 and cfg.decoding.temperature == 0.7
    assert cfg.hardware.gpu_ids == [] and cfg.hardware.batch_size == 16 and cfg.seed == 0


@pytest.mark.parametrize("raw, expected", [
    ({**BASE, "modles": []}, "unknown key 'modles' (did you mean 'models'?)"),
    ({**BASE, "decoding": {"temprature": 0.5}}, "decoding: unknown key 'temprature' (did you mean 'temperature'?)"),
    ({**BASE, "generation": {"temprature": 0.5}}, "generation: unknown key 'temprature' (did you mean 'temperature'?)"),
    ({**BASE, "decoding": {"batch_size": 4}}, "decoding: unknown key 'batch_size' (it lives in hardware.batch_size)"),
    ({**BASE, "hardware": {"temperature": 0}}, "hardware: unknown key 'temperature' (it lives in decoding.temperature)"),
    ({**BASE, "decoding": {"max_new_tokens": 4, "max_response_length": 8}}, "give either 'max_new_tokens' or"),
    ({**BASE, "models": [{"model": "x", "role_promt": "y"}]}, "models.0: unknown key 'role_promt' (did you mean 'role_prompt'?)"),
    ({**BASE, "decoding": {"temperature": "hot"}}, "decoding.temperature"),
    ({**BASE, "decoding": {"max_new_tokens": -3}}, "decoding.max_new_tokens"),
    ({**BASE, "hardware": {"batch_size": 0}}, "hardware.batch_size"),
    ({**BASE, "models": []}, "models"),
    ({**BASE, "hardware": {"gpu_ids": [0, 0]}}, "gpu_ids has duplicates"),
    ({**BASE, "seed": -1}, "seed"),
    ({"task": "x", "models": ["a"]}, "method: missing required key"),
])
def test_bad_configs_give_one_line_naming_the_key(raw, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    msg = str(e.value)
    assert expected in msg
    assert "\n" not in msg


def test_reference_config_is_read_unchanged():
    ref = {
        "method": "text_multiagent_refine", "task": "agieval_tiny", "task_type": "multiple_choice", "gpu_ids": [],
        "model_names": ["smollm2-135m-instruct", "smollm2-135m-instruct"],
        "hyperparameters": {"max_response_length": 64, "temperature": 0.5, "top_p": 0.8, "batch_size": 4, "round": 3},
    }
    cfg = parse_config(ref)
    assert cfg.method == "text_multiagent_refine"
    assert cfg.task.name == "agieval_tiny" and cfg.task.task_type == "multiple_choice"
    assert cfg.decoding.max_new_tokens == 64 and cfg.decoding.temperature == 0.5
    assert cfg.decoding.top_p == 0.8 and cfg.hardware.batch_size == 4  # batch_size: an engine resource
    assert cfg.params == {"round": 3}
    params = get_method(cfg.method).parse_params(cfg.params)
    assert params.rounds == 2  # reference `round` counts the first answer too


def test_reference_config_unknown_keys_and_missing_keys():
    with pytest.raises(ConfigError, match="unknown key 'model_name' \\(did you mean 'model_names'\\?\\)"):
        parse_config({"method": "m", "task": "t", "model_name": ["a"], "hyperparameters": {}})
    with pytest.raises(ConfigError, match="missing required key 'model_names'"):
        parse_config({"method": "m", "task": "t", "hyperparameters": {}})


def test_method_params_are_typed_and_strict():
    info = get_method("text_multiagent_refine")
    with pytest.raises(ConfigError, match="unknown key 'rouns' \\(did you mean 'rounds'\\?\\)"):
        info.parse_params({"rouns": 2})
    with pytest.raises(ConfigError, match="round must be >= 1"):
        info.parse_params({"round": 0})
    with pytest.raises(ConfigError, match="either 'round'"):
        info.parse_params({"round": 2, "rounds": 2})
    with pytest.raises(ConfigError, match="rounds"):
        info.parse_params({"rounds": "many"})
    assert info.parse_params({}).rounds == 2
    with pytest.raises(ConfigError, match="unknown method 'text_multiagent_refin' \\(did you mean 'text_multiagent_refine'\\?\\)"):
        get_method("text_multiagent_refin")


def test_files_yaml_json_and_syntax_errors(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("method: single_model\ntask: moco_demo\nmodels: [scripted:a]\n")
    assert load_config(y).method == "single_model"
    j = tmp_path / "c.json"
    j.write_text(json.dumps(BASE))
    assert load_config(j).method == "text_multiagent_refine"
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: single_model\ntask: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(bad)
    badj = tmp_path / "bad.json"
    badj.write_text('{"method": "x",}')
    with pytest.raises(ConfigError, match="invalid JSON at line 1"):
        load_config(badj)
    empty = tmp_path / "empty.yaml"
    empty.write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(lst)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


VALID_TOP = set(ExperimentConfig.model_fields)


@settings(max_examples=60, deadline=None)
@given(key=st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12))
def test_any_unknown_top_level_key_is_rejected(key):
    raw = {**BASE, key: 1}
    if key in VALID_TOP:
        return
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        parse_config(raw)


@settings(max_examples=60, deadline=None)
@given(temp=st.floats(allow_nan=True, allow_infinity=True), tokens=st.integers(-10**9, 10**9))
def test_decoding_numbers_are_bounded(temp, tokens):
    raw = {**BASE, "decoding": {"temperature": temp, "max_new_tokens": tokens}}
    ok = (0.0 <= temp <= 5.0) and (1 <= tokens <= 131072)
    if ok:
        assert parse_config(raw).decoding.temperature == temp
    else:
        with pytest.raises(ConfigError):
            parse_config(raw)


OLD = {**BASE, "generation": {"max_response_length": 64, "temperature": 0.2, "top_p": 0.8, "dev_repeats": 2,
                              "batch_size": 4, "big_model_mode": False, "prefix_cache_mb": 0}}


def test_the_former_generation_section_maps_to_decoding_and_hardware_with_one_warning(caplog):
    with caplog.at_level("WARNING", logger="moco.config"):
        cfg = parse_config({**OLD, "hardware": {"gpu_ids": []}})
    assert (cfg.decoding.max_new_tokens, cfg.decoding.temperature, cfg.decoding.top_p, cfg.decoding.dev_repeats) == \
        (64, 0.2, 0.8, 2)
    assert (cfg.hardware.batch_size, cfg.hardware.big_model_mode, cfg.hardware.prefix_cache_mb) == (4, False, 0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    for moved in ("temperature -> decoding.temperature", "batch_size -> hardware.batch_size",
                  "prefix_cache_mb -> hardware.prefix_cache_mb", "dev_repeats -> decoding.dev_repeats"):
        assert moved in lines[0]
    new = {**BASE, "decoding": {"max_new_tokens": 64, "temperature": 0.2, "top_p": 0.8, "dev_repeats": 2},
           "hardware": {"batch_size": 4, "prefix_cache_mb": 0}}
    assert cfg == parse_config(new)  # the same config as written in the new form


def test_a_key_in_the_former_and_the_new_place_must_agree(caplog):
    same = parse_config({**OLD, "decoding": {"temperature": 0.2}, "hardware": {"batch_size": 4}})
    assert same.decoding.temperature == 0.2 and same.hardware.batch_size == 4
    for raw, msg in [({**OLD, "decoding": {"temperature": 0.9}},
                      "config: generation.temperature is 0.2 but decoding.temperature is 0.9: give it once"),
                     ({**OLD, "hardware": {"batch_size": 8}}, "generation.batch_size is 4 but hardware.batch_size is 8"),
                     ({**OLD, "decoding": {"max_new_tokens": 32}},
                      "generation.max_response_length is 64 but decoding.max_new_tokens is 32")]:
        with pytest.raises(ConfigError) as e:
            parse_config(raw)
        assert msg in str(e.value) and "\n" not in str(e.value)


def test_the_split_is_written_to_the_resolved_config():
    from moco.config import dump_config
    import yaml

    data = yaml.safe_load(dump_config(parse_config(OLD)))
    assert "generation" not in data and data["decoding"]["temperature"] == 0.2 and data["hardware"]["batch_size"] == 4
