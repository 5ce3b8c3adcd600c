"""Real tiny models whose text a test can read: a test device for methods that train.

Tiny random Llamas write gibberish, so a debate or a judge built on them never yields an answer or a score.
`SteeredHF` is the real Hugging Face backend (real weights, the real trained adapter, real decoding); after
decoding, a test's `steer(backend, request, real_text)` rewrites the text the method receives, e.g. into
"[<real text>] The answer is (B)". Trained methods therefore run their real training on real weights, the
algorithm's steps are readable in traces, and the bracketed real text shows which weights produced an answer.
Every request and its real (unsteered) text is kept in `backend.seen` to regenerate it independently.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from moco.models.base import GenRequest, SamplingParams
from moco.models.hf import HFBackend

Steer = Callable[["SteeredHF", GenRequest, str], str]


class SteeredHF(HFBackend):
    steer: Steer | None = None
    instances: list["SteeredHF"] = []

    def __init__(self, source: str, *, adapter: str | None = None, **kw):
        super().__init__(source, adapter=adapter, **kw)
        self.adapter = adapter
        self.seen: list[tuple[GenRequest, str]] = []
        type(self).instances.append(self)

    @property
    def base_name(self) -> str:
        return Path(self.source).name

    def generate(self, requests: list[GenRequest]):
        results = super().generate(requests)
        for req, res in zip(requests, results):
            self.seen.append((req, res.text))
            if self.steer is not None:
                res.text = type(self).steer(self, req, res.text)
        return results


def install(monkeypatch, steer: Steer) -> type[SteeredHF]:
    """Make the pool build steered backends for models loaded from now on (their folders must be new to the
    process, or an earlier plain backend is reused)."""
    import moco.models.hf as hf

    cls = type("Steered", (SteeredHF,), {"steer": staticmethod(steer), "instances": []})
    monkeypatch.setattr(hf, "HFBackend", cls)
    return cls


def forget(cls: type[SteeredHF]) -> None:
    """Drop this test's steered backends from the process-wide residency (other tests get plain ones)."""
    from moco.models.pool import RESIDENT

    with RESIDENT.lock:
        for key in [k for k, b in RESIDENT.backends.items() if isinstance(b, cls)]:
            RESIDENT.backends.pop(key).close()
            RESIDENT.sizes.pop(key, None)


def user_text(req: GenRequest) -> str:
    return next(c for r, c in reversed(req.messages) if r == "user")


def real_part(text: str) -> str:
    m = re.match(r"\[(.*?)\]", text, re.S)
    return m.group(1) if m else ""


def regenerate(source: str, adapter: str | None, req: GenRequest) -> str:
    """What the plain backend (no steering) writes for `req` with these weights (greedy)."""
    b = HFBackend(source, fingerprint="check", adapter=adapter)
    try:
        greedy = GenRequest(req.messages, SamplingParams(req.sampling.max_new_tokens, 0.0), 0, req.assistant_prefix)
        return b.generate([greedy])[0].text
    finally:
        b.close()


def assert_phase_costs(metrics: dict) -> None:
    """Dev (training/search) and test costs are reported separately; the scorer here calls no model."""
    ph = metrics["phases"]
    for name in ("dev", "test"):
        assert ph[name]["calls"] > 0 and ph[name]["tokens_out"] > 0 and ph[name]["wall_s"] > 0, name
    assert set(ph) <= {"dev", "test", "score"} and ph.get("score", {}).get("calls", 0) == 0
