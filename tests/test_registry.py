"""The lazy registries: the method catalog says what the decorators say, lookups import only what they need,
and `moco validate` of a scripted config imports neither torch nor any other method's module."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from moco.errors import ConfigError
from moco.registry import Registry


def test_catalog_matches_the_decorators():
    from moco.methods.catalog import BUILTIN, rows_from_decorators

    real = rows_from_decorators()
    assert sorted(BUILTIN) == real, "the method catalog is stale: run python -W ignore -m moco.methods.catalog --write"


def test_registry_loads_lazily_with_aliases_and_suggestions():
    reg: Registry[object] = Registry("widget")
    reg.add("json_dumps", "json:dumps", aliases=("dumps",), summary="to text")
    reg.add("missing", "moco.no_such_module:x")
    assert reg.names() == ["json_dumps", "missing"] and "dumps" in reg and reg.loaded() == []
    assert reg.load("dumps") is json.dumps and reg.loaded() == ["json_dumps"]
    assert reg.entry("dumps").meta == {"summary": "to text"}
    with pytest.raises(ConfigError, match=r"unknown widget 'dump' \(did you mean 'dumps'\?\)"):
        reg.load("dump")
    with pytest.raises(ModuleNotFoundError):
        reg.load("missing")  # a broken built-in entry is a bug, not a config error


def _imports_after(code: str) -> dict:
    probe = (f"{code}\nimport sys, json\n"
             "print(json.dumps({'torch': 'torch' in sys.modules, 'methods': sorted(m for m in sys.modules "
             "if m.startswith('moco.methods.') and m.count('.') == 3)}))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_validate_of_a_scripted_config_imports_one_method_and_no_torch(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: vote\ntask: {name: moco_demo, test_limit: 2}\nmodels: [scripted:a, scripted:b]\n")
    seen = _imports_after(f"import sys\nfrom moco.cli import main\nsys.argv = ['moco', 'validate', {str(cfg)!r}]\n"
                          "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code")
    assert seen == {"torch": False, "methods": ["moco.methods.text.majority_vote"]}


def test_list_methods_imports_no_method():
    seen = _imports_after("from rich.console import Console\nfrom moco import listing\n"
                          "listing.methods(Console(file=open('/dev/null', 'w')))")
    assert seen == {"torch": False, "methods": []}


def test_scorers_load_on_first_use():
    from moco.scoring.registry import REGISTRY, SCORERS, build_scorer

    assert set(REGISTRY.names()) == set(SCORERS)
    assert build_scorer("numeric_match").name == "numeric_match" and "numeric_match" in REGISTRY.loaded()
    with pytest.raises(ConfigError, match="unknown scorer 'numeric_mach' \\(did you mean 'numeric_match'\\?\\)"):
        build_scorer("numeric_mach")


def test_backends_are_imported_by_kind_and_a_replaced_class_is_seen(monkeypatch):
    import moco.models.scripted as scripted
    from moco.models.backends import BACKENDS

    assert BACKENDS.names() == ["engine", "hf", "hf_vision", "openai", "ray", "scripted"]
    assert BACKENDS.load("scripted") is scripted.load
    monkeypatch.setattr(scripted, "load", "replaced")
    assert BACKENDS.load("scripted") == "replaced"  # resolved at each load: tests may patch a backend class
    seen = _imports_after("from moco.config import parse_config\nfrom moco.models.pool import ModelPool\n"
                          "cfg = parse_config({'method': 'x', 'task': 't', 'models': ['scripted:a']})\n"
                          "ModelPool(cfg.models, cfg.hardware).backend(0)\n"
                          "import sys; assert 'moco.models.scripted' in sys.modules\n"
                          "assert not {'moco.models.hf', 'moco.models.openai'} & set(sys.modules)")
    assert seen["torch"] is False
