"""No module of src/moco imports itself back through its module-level imports (those under `if TYPE_CHECKING:`
included: a type checker follows them). Imports inside functions are deliberate laziness and not counted; a
package's own __init__ is not an edge (importing `a.b` runs `a/__init__` first, by design)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "moco").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _module_level(body: list[ast.stmt], lazy: bool = False):
    """Statements run at import: the module body and the bodies of its if/try/with blocks, not defs (with
    `lazy`, the imports inside functions too)."""
    for node in body:
        if not lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        yield node
        for name in ("body", "orelse", "finalbody", "handlers"):
            sub = getattr(node, name, None)
            if isinstance(sub, list):
                yield from _module_level(sub, lazy)


def import_graph(mods: dict[str, Path], lazy: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _module_level(ast.parse(path.read_text()).body, lazy):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [base, *subs]  # `from pkg import submodule`
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path a -> ... -> a, or None (iterative DFS, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    graph = import_graph(_modules())
    assert "moco.scoring.base" in graph["moco.context"]  # the graph sees real imports
    assert "moco.calls" in graph["moco.scoring.base"]


def test_no_import_cycle_in_moco():
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycles_named_in_issue_22_stay_gone_even_through_lazy_imports():
    """context <-> scoring/base and scoring/registry <-> tasks/registry were cycles through imports inside
    functions and under TYPE_CHECKING: scoring types against a protocol, the dataset table is a leaf module."""
    lazy = import_graph(_modules(), lazy=True)
    assert not any(m.startswith("moco.context") for m in lazy["moco.scoring.base"])
    assert not any(m.startswith("moco.scoring") for m in lazy["moco.tasks.registry"])
    assert "moco.tasks.datasets" in lazy["moco.scoring.registry"]


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others; not through the top package `moco`, whose
    lazy re-exports (`moco.run`, `moco.score`...) name the whole public API (`from moco import __version__`
    is not an import of the runner)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                if nxt != "moco":
                    todo.append(nxt)
    return seen


def test_scoring_reaches_no_run_context_and_the_two_registries_do_not_reach_each_other():
    """Transitively, counting imports inside functions: no scoring module reaches moco.context (scorers are
    bound to a Generate, `moco score`'s run context lives in moco.score_context), and neither registry
    reaches the other (tasks.registry may not need scoring to load a task)."""
    lazy = import_graph(_modules(), lazy=True)
    scoring = [m for m in lazy if m.startswith("moco.scoring")]
    assert len(scoring) > 15
    assert {m for m in scoring if "moco.context" in _reach(lazy, m)} == set()
    assert "moco.scoring.registry" not in _reach(lazy, "moco.tasks.registry")
    assert "moco.tasks.registry" not in _reach(lazy, "moco.scoring.registry")
    assert "moco.context" in _reach(lazy, "moco.score_context")  # the check sees what it looks for
