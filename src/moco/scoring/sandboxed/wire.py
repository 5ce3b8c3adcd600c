"""Values on the wire between the checker and the sandboxed candidate: tagged JSON, never pickle.

Plain data (None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset, range, Fraction,
Decimal, and builtin types such as `int`) crosses as itself; whatever else the candidate returns stays in the sandbox and crosses as a handle
(`Ref`), which on the checker side equals nothing but itself, has no truth value and can only be called or
passed back. So the checker only ever compares plain values it built itself: an object whose `__eq__` is always
true, or a patched builtin, cannot reach it. Standard library only (json): this file runs inside the sandbox too, where start-up time counts.
"""
from __future__ import annotations

import builtins
import json

# annotations are strings (never evaluated); typing is not imported at run time, where start-up counts
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


MAX_DEPTH = 200  # nesting deeper than this is refused (a cycle, or a value built to exhaust the checker)
MAX_ITEMS = 2_000_000  # items materialised from one iterator the candidate returns
MAX_LINE = 64 * 1024 * 1024  # one message on the wire


class Unencodable(TypeError):
    """A value that cannot cross the wire (on the checker side: a trusted object that is not plain data)."""


class Ref:
    """A value that stays in the sandbox: callable through the client, otherwise opaque."""

    __slots__ = ("ref_id", "_client", "label")

    def __init__(self, ref_id: int, client: Any, label: str):
        self.ref_id, self._client, self.label = ref_id, client, label

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.call(self, args, kwargs)

    def __bool__(self) -> bool:
        raise TypeError(f"a {self.label} object returned by the solution has no truth value outside the sandbox")

    def __repr__(self) -> str:
        return f"<{self.label} in the sandbox>"


def encode(x: Any, keep: Callable[[Any], dict] | None = None, depth: int = 0) -> Any:
    """`x` as JSON-able tagged data. `keep(obj)` turns a non-data object into a handle; without it (the checker
    side) only exact plain types and Refs are accepted and anything else raises Unencodable."""
    if depth > MAX_DEPTH:
        raise Unencodable("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if -(2 ** 53) < x < 2 ** 53 else {"I": hex(x)}
    if t is float:
        return x if x == x and x not in (float("inf"), float("-inf")) else {"F": repr(x)}
    if t is Ref:
        return {"ref": x.ref_id}
    d = depth + 1
    if t is list:
        return [encode(v, keep, d) for v in x]
    if t is tuple:
        return {"t": [encode(v, keep, d) for v in x]}
    if t is dict:
        return {"d": [[encode(k, keep, d), encode(v, keep, d)] for k, v in x.items()]}
    if t is set or t is frozenset:
        return {"s" if t is set else "fs": [encode(v, keep, d) for v in x]}
    if t is complex:
        return {"c": [encode(x.real), encode(x.imag)]}
    if t is bytes or t is bytearray:
        return {"b" if t is bytes else "ba": x.hex()}
    if t is range:
        return {"r": [x.start, x.stop, x.step]}
    if t is type and getattr(builtins, x.__name__, None) is x:  # int, str, float... (MBPP passes types)
        return {"ty": x.__name__}
    kind = (t.__module__, t.__qualname__)  # not imported here: fractions and decimal are slow to import
    if kind == ("fractions", "Fraction"):
        return {"fr": [encode(x.numerator), encode(x.denominator)]}
    if kind == ("decimal", "Decimal"):
        return {"dec": str(x)}
    if keep is None:
        raise Unencodable(f"a {t.__name__} value cannot be sent to the sandbox")
    return _encode_candidate_value(x, keep, depth)


def _encode_candidate_value(x: Any, keep: Callable[[Any], dict], depth: int) -> Any:
    """Sandbox side: subclasses of plain types as their base type (a namedtuple is a tuple, a Counter a dict),
    iterators materialised (marked, so they never equal a list), everything else kept as a handle."""
    for base in (bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, frozenset, set):
        if isinstance(x, base):
            if base in (dict,):
                return encode(dict(dict.items(x)), keep, depth)
            if base in (list, tuple, set, frozenset):
                return encode(base(base.__iter__(x)), keep, depth)
            return encode(base(x), keep, depth)
    if hasattr(type(x), "__next__") and hasattr(type(x), "__iter__") and not callable(x):
        items = []
        for v in x:
            items.append(v)
            if len(items) > MAX_ITEMS:
                raise Unencodable("iterator too long")
        return {"it": [encode(v, keep, depth + 1) for v in items]}
    return keep(x)


def decode(x: Any, resolve: Callable[[int], Any]) -> Any:
    """Plain values from tagged data; `resolve(ref_id)` gives the object a handle stands for."""
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is list:
        return [decode(v, resolve) for v in x]
    if type(x) is not dict or len(x) != 1:
        raise ValueError("malformed value on the wire")
    (tag, v), = x.items()
    if tag == "I":
        return int(v, 16)
    if tag == "F":
        return float(v)
    if tag == "t":
        return tuple(decode(i, resolve) for i in v)
    if tag == "d":
        return {decode(k, resolve): decode(i, resolve) for k, i in v}
    if tag == "s":
        return {decode(i, resolve) for i in v}
    if tag == "fs":
        return frozenset(decode(i, resolve) for i in v)
    if tag == "c":
        return complex(decode(v[0], resolve), decode(v[1], resolve))
    if tag in ("b", "ba"):
        raw = bytes.fromhex(str(v))
        return raw if tag == "b" else bytearray(raw)
    if tag == "r":
        return range(*(int(i) for i in v))
    if tag == "fr":
        from fractions import Fraction

        return Fraction(decode(v[0], resolve), decode(v[1], resolve))
    if tag == "dec":
        from decimal import Decimal

        return Decimal(str(v))
    if tag == "ty":
        cls = getattr(builtins, str(v), None)
        if not isinstance(cls, type):
            raise ValueError(f"{v!r} is not a builtin type")
        return cls
    if tag == "it":
        return iter([decode(i, resolve) for i in v])
    if tag == "ref":
        return resolve(v)
    raise ValueError(f"unknown tag {tag!r} on the wire")


def dumps(msg: Any) -> bytes:
    return (json.dumps(msg, ensure_ascii=True) + "\n").encode()


def read_message(stream: Any) -> Any:
    """One JSON message (a line) from a binary stream; EOFError when the other side is gone."""
    line = stream.readline(MAX_LINE + 1)
    if not line:
        raise EOFError("the other side closed the channel")
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise ValueError("message on the wire too long or cut")
    return json.loads(line)
