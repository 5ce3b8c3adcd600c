"""The needs a method declares (moco.requirements, methods/needs.py) are checked by the plan, before any model
is asked: `moco run` stops where `moco validate` does, with the same line, and params or roles that make a need
go away are honoured."""
from __future__ import annotations

import pytest

from helpers import ConfidentBackend, scripted_config
from moco.config import parse_config
from moco.errors import ConfigError
from moco.models.scripted import ScriptedBackend
from moco.runner import plan, run_experiment

NO_DEV = {"name": "moco_demo", "dev_limit": 0, "test_limit": 2}


def _cfg(method, task, models="abc", params=None, **extra):
    raw = {"method": method, "task": task, "models": [f"scripted:{m}" for m in models], "params": params or {}}
    raw.update(extra)
    return parse_config(raw)


def test_run_stops_before_any_model_call_on_what_validate_refuses(tmp_path, cache):
    backends = {f"scripted:{m}": ScriptedBackend(m, default="The answer is (A).") for m in "ab"}
    cfg = _cfg("api_trained_router", {"name": "moco_demo", "dev_limit": 4, "test_limit": 2}, "ab")
    with pytest.raises(ConfigError) as validated:
        plan(cfg, backends=backends)
    with pytest.raises(ConfigError) as ran:
        run_experiment(cfg, tmp_path / "run", cache=cache, backends=backends)
    assert str(ran.value) == str(validated.value)
    assert "LoRA-trains its router" in str(ran.value) and "model 'a' (in-memory backend) cannot be trained" in str(ran.value)
    assert not (tmp_path / "run").exists() and all(not b.calls for b in backends.values())


def test_cascade_asks_log_probabilities_of_every_level_but_the_last(tiny_task):
    plain, confident = ScriptedBackend("a", default="x"), ConfidentBackend("b", True, lambda q: 0.9)
    backends = {"scripted:a": plain, "scripted:b": confident}
    # costs put b first and a last: the last level answers whatever its confidence, so a needs none
    plan(scripted_config("api_cascade", tiny_task, "ab", {"costs": [2.0, 1.0]}), backends=backends)
    with pytest.raises(ConfigError, match="model 'a' .* has no per-token log-probabilities"):
        plan(scripted_config("api_cascade", tiny_task, "ab", {"costs": [1.0, 2.0]}), backends=backends)
    plan(scripted_config("api_cascade", tiny_task, "ab", {"mode": "just_ask"}), backends=backends)


@pytest.mark.parametrize(("method", "params", "roles", "needs_dev"), [
    ("text_multiagent_refine", {}, {}, True),
    ("text_multiagent_refine", {"summarizer": 1}, {}, False),
    ("text_multiagent_refine", {}, {"summarizer": "b"}, False),
    ("text_multiagent_refine", {"final": "vote"}, {}, False),
    ("single_model", {}, {}, True),
    ("single_model", {"model": "c"}, {}, False),
    ("api_cascade", {"mode": "just_ask"}, {}, False),
    ("api_switch_generation", {"selector_mode": "random"}, {}, False),
    ("api_switch_generation", {"selector": 0}, {}, False),
    ("api_prompt_routing", {"router": 0}, {}, True),  # an unreadable router reply falls back to the dev-best
    ("client_server_colm", {}, {"server": "a"}, False),
    ("text_slm_mux", {"tie": "model-order"}, {}, False),
    ("text_slm_mux", {"tie": "dev-based"}, {}, True),
])
def test_params_and_roles_decide_whether_dev_data_is_needed(method, params, roles, needs_dev):
    cfg = _cfg(method, NO_DEV, params=params, roles=roles)
    if needs_dev:
        with pytest.raises(ConfigError, match=f"method {method} .*: task moco_demo has no dev split"):
            plan(cfg)
    else:
        assert plan(cfg).notes == []  # a run never gets a serving default


def test_gold_answers_are_a_need_of_outcome_routing():
    from moco.tasks.base import Example, Task

    items = {split: [Example(f"{split}{i}", i, split, "q?", "q?") for i in range(2)] for split in ("dev", "test")}
    task = Task("open", "generation", items["dev"], items["test"], generation_only=True)
    for method in ("api_graph_routing", "api_trained_router", "api_router_eval"):
        with pytest.raises(ConfigError, match=f"method {method} routes by scored outcomes: task open is "
                                              "generation-only"):
            plan(_cfg(method, {"name": "moco_demo"}, "ab"), task=task)


def test_a_plugin_method_declares_its_needs_with_requires():
    from moco.methods.registry import MethodInfo, MethodParams
    from moco.requirements import Need, check_needs
    from moco.serve.served_task import served_task

    info = MethodInfo("plug", run=lambda ctx, params: [], params=MethodParams, level="text", summary="",
                      requires=lambda params, facts: [Need("dev", "learns on dev")])
    with pytest.raises(ConfigError, match=r"^method plug learns on dev: task served has no dev split \(give `task:` "
                                          "with a dev split\\)$"):
        check_needs(info, MethodParams(), served_task(), [], {}, lambda h: None)
