"""Which names a test file takes from elsewhere (the solution). Standard library only."""
from __future__ import annotations

import ast
import builtins

# annotations are strings (never evaluated); typing is not imported at run time, where start-up counts
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any



def free_names(test_code: str, known: Any) -> list[str]:
    """Names the tests read but never bind, and that are not builtins or already `known` (prompt helpers)."""
    tree = ast.parse(test_code)
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return sorted(used - bound - set(dir(builtins)) - set(known))
