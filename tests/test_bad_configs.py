"""Bad configs: a corpus of malformed configs, each rejected by `moco validate` and by `moco run` with one
line naming the problem and exit code 2, before any model is loaded or any run directory written; and
property-based tests: a valid config mutated at random is either accepted or refused with a ConfigError —
never another exception."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import signal
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moco.cli import main
from moco.config import parse_config
from moco.errors import MocoError
from moco.models.pool import ModelPool
from moco.runner import plan
from reliability import tally

MV = {"method": "text_majority_vote", "task": "moco_demo", "models": ["scripted:a", "scripted:b"]}
RF = {"method": "text_multiagent_refine", "task": "moco_demo", "models": ["scripted:a", "scripted:b"]}
EP = {"base_url": "http://127.0.0.1:9/v1"}

# name -> (config: a dict written as JSON, or file text; the file suffix; what the one line must contain)
CORPUS: dict[str, tuple[dict | str, str, str]] = {
    # wrong types
    "models a string": ({**MV, "models": "scripted:a"}, ".json", "models: Input should be a valid list"),
    "models a number": ({**MV, "models": 5}, ".json", "models: Input should be a valid list"),
    "models null": ({**MV, "models": None}, ".json", "models: Input should be a valid list"),
    "method a number": ({**MV, "method": 3}, ".json", "method: Input should be a valid string"),
    "seed a string": ({**MV, "seed": "abc"}, ".json", "seed: Input should be a valid integer"),
    "seed a fraction": ({**MV, "seed": 1.5}, ".json", "seed: Input should be a valid integer"),
    "decoding a list": ({**MV, "decoding": [1, 2]}, ".json", "decoding: Input should be a valid dictionary"),
    "former generation a list": ({**MV, "generation": [1, 2]}, ".json", "generation: the former section must be a mapping"),
    "params a list": ({**RF, "params": [1]}, ".json", "params: Input should be a valid dictionary"),
    "param of the wrong type": ({**RF, "params": {"rounds": "two"}}, ".json", "rounds: Input should be a valid integer"),
    # unknown keys
    "unknown top-level key": ({**MV, "modles": []}, ".json", "unknown key 'modles' (did you mean 'models'?)"),
    "unknown task key": ({**MV, "task": {"nme": "moco_demo"}}, ".json", "task: unknown key 'nme' (did you mean 'name'?)"),
    "unknown model key": ({**MV, "models": [{"modl": "x"}, "scripted:b"]}, ".json", "unknown key 'modl'"),
    "unknown hardware key": ({**MV, "hardware": {"gpus": 2}}, ".json", "unknown key 'gpus' (did you mean 'gpu_ids'?)"),
    "unknown param": ({**RF, "params": {"roundz": 2}}, ".json", "params (text_multiagent_refine): unknown key 'roundz'"),
    "unknown role": ({**RF, "roles": {"judgee": "scripted:a"}}, ".json", "has no role 'judgee'"),
    # unknown methods, tasks, models
    "unknown method": ({**MV, "method": "nonexistent_method"}, ".json", "unknown method 'nonexistent_method'"),
    "misspelt method": ({**MV, "method": "majority_vot"}, ".json", "did you mean 'majority_vote'?"),
    "unknown task": ({**MV, "task": "nonexistent_task"}, ".json", "unknown task 'nonexistent_task'"),
    "unknown model": ({**MV, "models": ["no/such/model", "scripted:b"]}, ".json", "unknown model 'no/such/model'"),
    "missing local model": ({**MV, "models": ["./no/such/dir", "scripted:b"]}, ".json", "model path not found"),
    "role names no model": ({**RF, "roles": {"summarizer": "scripted:zzz"}}, ".json", "no model named 'scripted:zzz'"),
    # impossible method-model-task combinations
    "too few models": ({**RF, "models": ["scripted:a"]}, ".json", "needs at least 2 models, the config has 1"),
    "vlm method on text models": ({**MV, "method": "client_server_colm_vlm"}, ".json", "cannot provide it"),
    "vote on an open-ended task": ({**MV, "task": "alpacaeval"}, ".json", "needs a task with definite answers"),
    "gpu that is not there": ({**MV, "hardware": {"gpu_ids": [0]}}, ".json", "no CUDA GPU is visible"),
    # empty, negative and absurd numbers
    "models empty": ({**MV, "models": []}, ".json", "models: List should have at least 1 item"),
    "model name empty": ({**MV, "models": ["", "scripted:b"]}, ".json", "models.0.model: String should have at least"),
    "task name empty": ({**MV, "task": ""}, ".json", "task.name: String should have at least 1 character"),
    "negative temperature": ({**MV, "decoding": {"temperature": -1}}, ".json", "decoding.temperature"),
    "top_p above 1": ({**MV, "decoding": {"top_p": 2}}, ".json", "decoding.top_p"),
    "absurd max_new_tokens": ({**MV, "decoding": {"max_new_tokens": 10 ** 9}}, ".json", "decoding.max_new_tokens"),
    "negative batch size": ({**MV, "hardware": {"batch_size": -4}}, ".json", "hardware.batch_size"),
    "negative test_limit": ({**MV, "task": {"name": "moco_demo", "test_limit": -1}}, ".json", "task.test_limit"),
    "absurd seed": ({**MV, "seed": 10 ** 30}, ".json", "seed: Input should be less than or equal to"),
    "negative rounds": ({**RF, "params": {"rounds": -1}}, ".json", "rounds: Input should be greater than or equal"),
    "negative gpu id": ({**MV, "hardware": {"gpu_ids": [-1]}}, ".json", "gpu_ids must be non-negative"),
    "endpoint without scheme": ({**MV, "models": [{"model": "m", "endpoint": {"base_url": "not a url"}}, "scripted:b"]},
                                ".json", "base_url must start with http:// or https://"),
    "endpoint negative timeout": ({**MV, "models": [{"model": "m", "endpoint": {**EP, "timeout_s": -1}}, "scripted:b"]},
                                  ".json", "endpoint.timeout_s"),
    # files that are not configs
    "yaml unclosed bracket": ("method: x\nmodels: [a, b\n", ".yaml", "invalid YAML at line 3"),
    "yaml tab indentation": ("method: x\nmodels:\n\t- scripted:a\n", ".yaml", "invalid YAML at line 3"),
    "yaml duplicate key": ("method: text_majority_vote\nmethod: single_model\ntask: moco_demo\n"
                           "models: [scripted:a, scripted:b]\n", ".yaml", "key 'method' appears twice"),
    "yaml nested duplicate": ("method: single_model\ntask: moco_demo\nmodels:\n  - {model: scripted:a, model: x}\n",
                              ".yaml", "key 'model' appears twice"),
    "yaml list": ("- a\n- b\n", ".yaml", "the config must be a mapping of keys, got list"),
    "yaml scalar": ("hello\n", ".yaml", "the config must be a mapping of keys, got str"),
    "empty file": ("  \n", ".yaml", "config file is empty"),
    "json trailing comma": ('{"method": "x",}', ".json", "invalid JSON at line 1"),
    "json duplicate key": ('{"method": "single_model", "method": "x", "task": "moco_demo"}', ".json",
                           "key 'method' appears twice"),
    "not UTF-8": (b"method: x\n\xff\xfe\x00\n", ".yaml", "not UTF-8 text"),
    "NUL characters": ("method: x\n\x00\x01\n", ".yaml", "invalid YAML"),
    "a sweep file": ("name: s\nmethods: [text_majority_vote]\npools:\n  p: [scripted:a, scripted:b]\n"
                     "tasks: [moco_demo]\n", ".yaml", "this is a sweep (it has `methods:` and `pools:`)"),
}


def _cli(*argv: str) -> tuple[int, str]:
    """`moco <argv>` in this process (the corpus is large: no interpreter start per config)."""
    err, old, term = io.StringIO(), sys.argv, signal.getsignal(signal.SIGTERM)
    sys.argv = ["moco", *argv]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
        signal.signal(signal.SIGTERM, term)  # main() installs its SIGTERM handler: not for pytest
    return code, err.getvalue()


@pytest.fixture
def no_model_loads(monkeypatch):
    loads: list = []
    monkeypatch.setattr(ModelPool, "_load", lambda self, handle: loads.append(handle) or pytest.fail("model loaded"))
    return loads


@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_config_is_one_line_exit_2_nothing_loaded(name, tmp_path, no_model_loads):
    raw, suffix, expected = CORPUS[name]
    cfg = tmp_path / f"config{suffix}"
    if isinstance(raw, bytes):
        cfg.write_bytes(raw)
    else:
        cfg.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    for cmd in ("validate", "run"):
        out = tmp_path / "run"
        code, err = _cli(cmd, str(cfg), *(["--out", str(out), "--no-progress"] if cmd == "run" else []))
        lines = [x for x in err.splitlines() if x.strip()]
        assert code == 2, (cmd, err)
        assert len(lines) == 1 and expected in lines[0], (cmd, err)
        assert "Traceback" not in err
        assert not out.exists(), "a run directory was written for a config that cannot run"
    assert not no_model_loads
    tally("bad inputs tried")


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 30


def test_a_config_directory_or_a_missing_file(tmp_path):
    assert _cli("validate", str(tmp_path)) == (2, f"error: config is not a file: {tmp_path}\n")
    code, err = _cli("run", str(tmp_path / "none.yaml"))
    assert code == 2 and "config file not found" in err


# ------------------------------------------------------------------------------- property-based tests
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10 ** 12, 10 ** 12) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)
PATHS = [("method",), ("task",), ("models",), ("models", 0), ("params",), ("seed",), ("generation",),
         ("generation", "temperature"), ("decoding",), ("decoding", "temperature"), ("decoding", "max_new_tokens"),
         ("decoding", "top_p"), ("hardware", "batch_size"), ("hardware",), ("roles",), ("task_extra",), ("params", "rounds")]


def _set(cfg: dict, path: tuple, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    for k in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(k, {}) if not isinstance(node.get(k), (dict, list)) else node[k]
        elif isinstance(node, list) and isinstance(k, int) and k < len(node):
            node = node[k]
        else:
            return cfg
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        node[path[-1]] = value
    return cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=JSON, drop=st.booleans())
def test_a_mutated_config_is_accepted_or_refused_in_one_line(path, value, drop):
    raw = copy.deepcopy(RF)
    if drop and len(path) == 1:
        raw.pop(path[0], None)
    else:
        raw = _set(raw, path, value)
    try:
        plan(parse_config(raw))  # everything that can be checked without loading a model
    except MocoError as e:
        assert str(e).strip() and "\n" not in str(e), str(e)
        assert e.exit_code == 2


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_file_is_read_or_refused_in_one_line(text, tmp_path_factory):
    f = tmp_path_factory.mktemp("cfg") / "c.yaml"
    f.write_text(text)
    from moco.config import load_config

    try:
        load_config(f)
    except MocoError as e:
        assert "\n" not in str(e), str(e)
