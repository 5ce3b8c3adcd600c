"""Served batches are participants of one scheduler on the batcher's one event loop: two batches running at the
same time have their model calls decoded in shared backend batches (as sweep cells do), each batch runs in a
context of its own, and the dev work done at start is reused by every batch, never redone."""
from __future__ import annotations

import json
import threading
import time

import yaml

from moco.models.scripted import ScriptedBackend
from moco.serve import build_service
from moco.serve.protocol import parse_chat_request

TASK = {"name": "moco_demo", "dev_limit": 4, "test_limit": 2}
REPLY = "The answer is (A)."


class GatedRemote(ScriptedBackend):
    """A scripted model marked remote (the scheduler decodes it in a worker thread, leaving the loop free) that
    logs the prompts of every batch it receives and, while `gate` is closed, holds each batch there."""

    remote = True

    def __init__(self, name: str, gate: threading.Event, entered: threading.Event):
        super().__init__(name, default=REPLY)
        self.gate, self.entered = gate, entered
        self.batches: list[list[str]] = []

    def generate(self, requests):
        self.batches.append(["\n".join(c for _r, c in req.messages) for req in requests])
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return super().generate(requests)


def _service(tmp_path, gate, entered):
    models = {n: GatedRemote(n, gate, entered) for n in "abc"}
    path = tmp_path / "refine.yaml"
    path.write_text(yaml.safe_dump({"method": "text_multiagent_refine", "params": {"rounds": 1}, "task": TASK,
                                    "models": [f"scripted:{n}" for n in models],
                                    "generation": {"max_new_tokens": 16, "temperature": 0.0}}))
    return build_service(path, window_ms=1, backends={f"scripted:{n}": b for n, b in models.items()}), models


def _submit(svc, question: str):
    return svc.batcher.submit(svc.pending(parse_chat_request(json.dumps(
        {"model": svc.name, "messages": [{"role": "user", "content": question}]}).encode())))


def _fresh_dev_calls(svc) -> int:
    return sum(s.calls - s.cache_hits for name, s in svc.recorder.phases.items() if name != "test")


def _batches_with(models, *questions: str) -> int:
    return sum(1 for b in models.values() for batch in b.batches if all(any(q in p for p in batch) for q in questions))


def test_two_concurrent_served_batches_share_backend_batches_and_reuse_the_dev_work(tmp_path):
    gate, entered = threading.Event(), threading.Event()
    gate.set()
    svc, models = _service(tmp_path, gate, entered)
    try:
        svc.warm_up()
        dev_calls = _fresh_dev_calls(svc)
        assert dev_calls == 3 * TASK["dev_limit"]  # every model answered the dev split once, at start
        start = {n: len(b.batches) for n, b in models.items()}

        # one after the other: each request's stages are backend batches of their own
        for q in ("Question one: alpha?", "Question two: beta?"):
            assert not _submit(svc, q).result(30).error
        alone = sum(len(b.batches) - start[n] for n, b in models.items())
        assert _batches_with(models, "alpha", "beta") == 0
        assert svc.batcher.stats.batches == 2

        # at the same time: the first request's batch holds in a backend (the loop stays free), the second
        # request forms a batch of its own meanwhile, and from then on their calls are decoded together
        mid = {n: len(b.batches) for n, b in models.items()}
        gate.clear()
        entered.clear()
        first = _submit(svc, "Question three: gamma?")
        assert entered.wait(10)
        second = _submit(svc, "Question four: delta?")
        time.sleep(0.5)  # the second batch starts and asks for its first stage while the first one is held
        gate.set()
        a, b = first.result(30), second.result(30)
        assert not a.error and not b.error and a.batch_size == b.batch_size == 1
        assert svc.batcher.stats.batches == 4  # two separate served batches...
        together = sum(len(bk.batches) - mid[n] for n, bk in models.items())
        merged = _batches_with(models, "gamma", "delta")
        assert merged >= 1 and together == alone - merged, (alone, together, merged)  # ...sharing backend batches
        assert _fresh_dev_calls(svc) == dev_calls  # no batch redid the dev work
        # each batch ran in a context of its own: the service's context was never given a batch's items
        assert svc.ctx.task is svc.base_task and svc.ctx.metrics == {}
        assert not any("gamma" in ex.prompt for ex in svc.ctx.task.test)
    finally:
        svc.close()
