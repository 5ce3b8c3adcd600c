"""Find the solution in a code response the way a grader reading it would.

- Several fenced blocks: the last block that defines the entry point (a later "Example usage" block that only
  calls it is not the solution); helpers it uses that another block defines (imports, functions, classes,
  constants) are added. No block defines it: the last ```python block, else the last block (a body that
  continues the prompt's stub, or code the tests will reject).
- No fences: the whole response when it is Python; else every stretch of lines that starts at a line starting
  code (`def`, `class`, `import`, `from`, `@`) and parses, joined (prose before, between and after is dropped),
  when together they define the entry point.
- An `if __name__ == "__main__":` block is kept but does not run: the solution is loaded as a module.
"""
from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"^(?:from\s+[\w.]+\s+import\s|import\s+\w|def\s+\w|async\s+def\s|class\s+\w|@\w)")
_PY_TAGS = ("python", "py", "python3")


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _top_names(tree: ast.Module) -> dict[str, ast.stmt]:
    """Names a module binds at its top level, with the statement that binds each."""
    out: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                out[(a.asname or a.name).split(".")[0]] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = node
    return out


def _defines(code: str, entry: str | None) -> bool:
    if not entry:
        return False
    tree = _parse(code)
    if tree is not None:
        return entry in _top_names(tree)
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.M) is not None


def _with_helpers(chosen: str, others: list[str]) -> str:
    """`chosen` plus the top-level definitions from `others` that it uses but does not define itself."""
    tree = _parse(chosen)
    if tree is None:
        return chosen
    defined = set(_top_names(tree))
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    missing = used - defined
    extra: list[str] = []
    for code in others:
        other = _parse(code)
        if other is None:
            continue
        for name, node in _top_names(other).items():
            if name in missing:
                seg = ast.get_source_segment(code, node)
                if seg and seg not in extra:
                    extra.append(seg)
                missing.discard(name)
    return "\n\n".join(extra + [chosen]) if extra else chosen


def _unfenced(text: str, entry: str | None) -> str:
    """The code stretches of a response that mixes prose and code without fences, joined."""
    if _parse(text) is not None:
        return text
    lines = text.split("\n")
    if len(lines) > 400:  # keeps the search (parses per start line x end line) small
        return text
    chunks, i = [], 0
    while i < len(lines):
        if _CODE_START.match(lines[i]):
            # the stretch ends before a non-indented line (prose starts at the margin) or at the end
            ends = [e for e in range(len(lines), i, -1)
                    if e == len(lines) or (lines[e].strip() and not lines[e][0].isspace())]
            for e in ends:
                chunk = "\n".join(lines[i:e]).rstrip()
                if chunk and _parse(chunk) is not None:
                    chunks.append(chunk)
                    i = e
                    break
            else:
                i += 1
        else:
            i += 1
    joined = "\n\n".join(chunks)
    if chunks and _parse(joined) is not None and (not entry or _defines(joined, entry)):
        return joined
    return text


def extract_solution(response: str, entry: str | None = None) -> str:
    """The solution's code in `response` ('' when there is none), for the function named `entry`."""
    blocks = [(lang.lower(), code.strip("\n")) for lang, code in _FENCE.findall(response)]
    blocks = [(lang, code) for lang, code in blocks if code.strip()]
    if blocks:
        codes = [code for _, code in blocks]
        defining = [i for i, c in enumerate(codes) if _defines(c, entry)]
        if defining:
            parsed = [i for i in defining if _parse(codes[i]) is not None]
            pick = (parsed or defining)[-1]
            return _with_helpers(codes[pick], [c for i, c in enumerate(codes) if i != pick]).rstrip() + "\n"
        tagged = [c for lang, c in blocks if lang in _PY_TAGS]
        return (tagged or codes)[-1].rstrip() + "\n"
    if not response.strip():
        return ""
    return _unfenced(response.strip("\n"), entry).rstrip() + "\n"
