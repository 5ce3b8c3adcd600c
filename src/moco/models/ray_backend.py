"""Data-parallel Hugging Face workers on Ray: one model, `replicas` actors, each holding its own copy.

Ray places the actors (on the GPUs and nodes of a cluster, or CPU workers of a local Ray); each actor loads
the model once and keeps it. `plan_batches` returns super-batches of `replicas` x `batch_size` rows (the
actors' own length-sorted plan, grouped), `generate` deals a super-batch's rows to the actors in turn (so
each gets rows of similar length), runs them concurrently, and puts the results back in request order.
Every row samples with its own seeded generator inside the actor, as in the local backend, so outputs do
not depend on which actor decoded them.

Token-level and weight-level methods need the model object in this process: a Ray pool offers chat,
log-probabilities of generated tokens and seeded sampling only, and `moco validate` says so.
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from moco.errors import ModelError
from moco.models.base import Capabilities, GenRequest, GenResult

if TYPE_CHECKING:
    from moco.config import ModelSpec
    from moco.models.backends import PoolContext

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(chat=True, logprobs=True, seeded=True)
# environment the actors need to find the same code, data and offline settings as this process
FORWARDED_ENV = ("PYTHONPATH", "MOCO_CACHE_DIR", "MOCO_DATA_DIR", "HF_HOME", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM")


class HFWorker:
    """The body of one Ray actor: a local HFBackend, loaded once in the actor's process."""

    def __init__(self, source: str, kwargs: dict[str, Any], threads: int):
        import torch

        from moco.models.hf import HFBackend

        torch.set_num_threads(max(1, threads))
        self.backend = HFBackend(source, **kwargs)
        self.served = 0

    def info(self) -> dict[str, Any]:
        b = self.backend
        return {"pid": os.getpid(), "served": self.served, "load_seconds": b.load_seconds,
                "dtype": str(b.torch_dtype).replace("torch.", ""), "device": str(b.model.device)}

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        return self.backend.plan_batches(requests)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Decode in this actor's own length-sorted batches; results in request order."""
        out: list[GenResult | None] = [None] * len(requests)
        for batch in self.backend.plan_batches(requests):
            for i, r in zip(batch, self.backend.generate([requests[i] for i in batch])):
                out[i] = r
        self.served += len(requests)
        return [r for r in out if r is not None]


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address`, or start a local Ray (with `num_cpus`, default all); once per process."""
    try:
        import ray
    except ImportError:
        raise ModelError("hardware.ray needs Ray: pip install ray==2.60.0") from None
    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    try:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True, runtime_env={"env_vars": env})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ModelError(f"cannot reach the Ray cluster at {address or 'local'}: {str(e).splitlines()[0]}") from None


def _shortfall(need_cpu: float, need_gpu: float, pool: dict) -> bool:
    return need_cpu > pool.get("CPU", 0) + 1e-9 or need_gpu > pool.get("GPU", 0) + 1e-9


def make_room(settings: Any, resident: "OrderedDict[str, Any]", sizes: dict[str, float],
              settle_s: float = 15.0) -> None:
    """Evict this process's least recently used Ray models until `settings.replicas` new actors fit the
    cluster's free CPUs/GPUs, so a pool with more models than the cluster holds at once never waits forever
    for resources; an error when even an empty cluster (for us) cannot hold them."""
    import ray

    connect(settings.address)
    need_cpu, need_gpu = settings.replicas * settings.num_cpus, settings.replicas * settings.num_gpus
    total = ray.cluster_resources()
    if _shortfall(need_cpu, need_gpu, total):
        raise ModelError(f"hardware.ray: {settings.replicas} replicas need {need_cpu:g} CPUs and {need_gpu:g} GPUs; "
                         f"the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs")
    ours = [k for k, b in resident.items() if isinstance(b, RayHFBackend)]
    free = ray.available_resources()
    while _shortfall(need_cpu, need_gpu, free):
        if not ours:
            raise ModelError(f"hardware.ray: {settings.replicas} replicas need {need_cpu:g} CPUs and {need_gpu:g} "
                             f"GPUs; only {free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} GPUs of the Ray "
                             f"cluster are free (other jobs hold the rest)")
        key = ours.pop(0)
        old = resident.pop(key)
        sizes.pop(key, None)
        log.info("evicting Ray model %s to free its actors", key)
        expect_cpu = free.get("CPU", 0) + old.replicas * old.num_cpus
        expect_gpu = free.get("GPU", 0) + old.replicas * old.num_gpus
        old.close()
        deadline = time.monotonic() + settle_s  # killed actors return their resources after a moment
        free = ray.available_resources()
        while _shortfall(expect_cpu, expect_gpu, free) and time.monotonic() < deadline:
            time.sleep(0.1)
            free = ray.available_resources()


class RayHFBackend:
    """A Hugging Face model served by `replicas` Ray actors."""

    def __init__(self, source: str, *, weights_fingerprint: str, hf_kwargs: dict[str, Any], replicas: int = 2,
                 num_cpus: float = 1, num_gpus: float = 0, address: str | None = None, ready_timeout_s: float = 600):
        import ray

        connect(address)
        actor_cls = ray.remote(HFWorker)
        kwargs = {**hf_kwargs, "fingerprint": weights_fingerprint, "device": "cuda:0" if num_gpus else "cpu"}
        self.actors = [actor_cls.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(source, kwargs, int(num_cpus))
                       for _ in range(replicas)]
        try:
            infos = ray.get([a.info.remote() for a in self.actors], timeout=ready_timeout_s)
        except Exception as e:  # the actor's own error (bad model folder...) as one line
            self.close()
            raise ModelError(f"Ray workers could not load '{source}': {_first_line(e)}") from None
        self.replicas, self.num_cpus, self.num_gpus = replicas, num_cpus, num_gpus
        self.batch_size = int(hf_kwargs.get("batch_size", 16))
        self.load_seconds = max(i["load_seconds"] for i in infos)
        dev = infos[0]["device"].split(":")[0]
        self.fingerprint = f"{weights_fingerprint}|{infos[0]['dtype']}|{dev}"
        self.capabilities = CAPABILITIES
        self.remote = True  # waits on the actors: RunContext.generate overlaps it with other backends

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        """The actors' length-sorted batches, `replicas` at a time (one super-batch keeps every actor busy)."""
        import ray

        inner = ray.get(self.actors[0].plan_batches.remote(requests))
        r = self.replicas
        return [[i for b in inner[k:k + r] for i in b] for k in range(0, len(inner), r)]

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        import ray

        if not requests:
            return []
        parts = [list(range(k, len(requests), self.replicas)) for k in range(self.replicas)]
        parts = [p for p in parts if p]
        futures = [a.generate.remote([requests[i] for i in p]) for a, p in zip(self.actors, parts)]
        out: list[GenResult | None] = [None] * len(requests)
        for p, results in zip(parts, ray.get(futures)):
            for i, r in zip(p, results):
                out[i] = r
        return [r for r in out if r is not None]

    def info(self) -> list[dict[str, Any]]:
        import ray

        return ray.get([a.info.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for a in getattr(self, "actors", []):
            ray.kill(a)
        self.actors = []


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    lines = [x for x in str(cause).splitlines() if x.strip()]
    return lines[-1] if lines else type(e).__name__


def load(spec: "ModelSpec", ctx: "PoolContext") -> RayHFBackend:
    """The backend registry's factory (models/backends.py): replicas of the model as Ray actors."""
    from moco.models.placement import load_kwargs

    ray = ctx.hardware.ray
    assert ray is not None  # the pool routes a model here only under hardware.ray
    return RayHFBackend(ctx.source(), weights_fingerprint=ctx.weights_fingerprint(),
                        hf_kwargs=load_kwargs(spec, ctx.hardware), replicas=ray.replicas, num_cpus=ray.num_cpus,
                        num_gpus=ray.num_gpus, address=ray.address)
