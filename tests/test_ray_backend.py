"""Data-parallel HF workers on a local Ray with CPU actors: requests of one call split over the actors,
results in order and equal to the local backend's, each actor loads its model once, runs end to end."""
from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

from moco.config import HardwareSettings, ModelSpec, RaySettings, parse_config  # noqa: E402
from moco.models.base import GenRequest, SamplingParams  # noqa: E402
from moco.models.pool import ModelPool, unload_all  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    from moco.models.ray_backend import connect

    connect(None, num_cpus=2)
    yield
    unload_all()
    ray.shutdown()


def _requests(n: int = 10) -> list[GenRequest]:
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    sampled = SamplingParams(max_new_tokens=5, temperature=0.9, top_p=0.95)
    return [GenRequest((("user", "q" * (3 + 2 * i)),), greedy if i % 3 else sampled, seed=100 + i) for i in range(n)]


def _local_outputs(pool: ModelPool, reqs: list[GenRequest]) -> list[str]:
    backend = pool.backend(0)
    out = [None] * len(reqs)
    for batch in backend.plan_batches(reqs):
        for i, r in zip(batch, backend.generate([reqs[i] for i in batch])):
            out[i] = r.text
    return out


def test_one_call_is_split_over_the_actors_and_merged_in_order(local_ray, tiny_models):
    spec = [ModelSpec(model=str(tiny_models[0]))]
    remote = ModelPool(spec, HardwareSettings(ray=RaySettings(replicas=2, num_cpus=1)))
    backend = remote.backend(0)
    assert type(backend).__name__ == "RayHFBackend"
    reqs = _requests(10)
    batches = backend.plan_batches(reqs)
    assert [len(b) for b in batches] == [10]  # one super-batch: both actors busy at once
    outs = backend.generate([reqs[i] for i in batches[0]])
    texts = [None] * len(reqs)
    for i, r in zip(batches[0], outs):
        texts[i] = r.text
    assert texts == _local_outputs(ModelPool(spec), reqs)  # per-row seeds: the actor does not matter
    info = backend.info()
    assert [i["served"] for i in info] == [5, 5]
    assert len({i["pid"] for i in info} | {os.getpid()}) == 3  # two actor processes besides this one
    assert backend.fingerprint == ModelPool(spec).fingerprint(ModelPool(spec).handles[0])  # same cache entries


def test_actors_load_once_and_stay_resident(local_ray, tiny_models):
    spec = [ModelSpec(model=str(tiny_models[0]))]
    hw = HardwareSettings(ray=RaySettings(replicas=2, num_cpus=1))
    backend = ModelPool(spec, hw).backend(0)
    pids = [i["pid"] for i in backend.info()]
    backend.generate(_requests(4))
    assert ModelPool(spec, hw).backend(0) is backend  # another pool of the process: the same actors
    assert [i["pid"] for i in backend.info()] == pids


@pytest.mark.slow  # two sets of actors start (~30 s on 2 busy cores)
def test_a_run_on_ray_gives_the_same_predictions(local_ray, tiny_models, tiny_task, tmp_path):
    from moco.cache import NullCache
    from moco.runner import run_experiment

    models = [{"model": str(tiny_models[1]), "role_prompt": r} for r in ("a", "b", "c")]
    base = {"method": "text_majority_vote", "task": {"name": str(tiny_task)}, "models": models,
            "decoding": {"max_new_tokens": 4, "temperature": 0.8}, "hardware": {"batch_size": 4}}
    local = run_experiment(parse_config(base), tmp_path / "local", cache=NullCache())
    on_ray = run_experiment(parse_config({**base, "hardware": {"ray": {"replicas": 2}}}), tmp_path / "ray",
                            cache=NullCache())
    assert [p["output"] for p in on_ray.predictions] == [p["output"] for p in local.predictions]
    assert on_ray.metrics["total"]["generated_tokens"] == local.metrics["total"]["generated_tokens"]


def test_more_replicas_than_the_cluster_holds_is_one_clear_error(local_ray, tiny_models):
    from moco.errors import ModelError

    pool = ModelPool([ModelSpec(model=str(tiny_models[2]))], HardwareSettings(ray=RaySettings(replicas=3, num_cpus=1)))
    with pytest.raises(ModelError, match="3 replicas need 3 CPUs and 0 GPUs; the Ray cluster has 2 CPUs"):
        pool.backend(0)


@pytest.mark.slow  # four actors start (~60 s on 2 busy cores)
def test_a_new_model_evicts_the_least_recently_used_ray_model_when_the_cluster_is_full(local_ray, tiny_models):
    from moco.models.pool import RESIDENT

    hw = HardwareSettings(ray=RaySettings(replicas=2, num_cpus=1))  # one model fills the 2-CPU cluster
    first = ModelPool([ModelSpec(model=str(tiny_models[0]))], hw).backend(0)
    assert first.actors
    second = ModelPool([ModelSpec(model=str(tiny_models[2]))], hw).backend(0)
    assert first.actors == [] and first not in RESIDENT.backends.values()  # evicted, its actors killed
    assert second in RESIDENT.backends.values()
    assert len(second.generate(_requests(2))) == 2


def test_a_cluster_held_by_other_jobs_is_one_clear_error_not_a_wait(local_ray, tiny_models):
    from moco.errors import ModelError

    unload_all()

    @ray.remote(num_cpus=1)
    class Squatter:
        def ping(self) -> int:
            return 1

    other = Squatter.remote()
    ray.get(other.ping.remote())
    try:
        pool = ModelPool([ModelSpec(model=str(tiny_models[2]))], HardwareSettings(ray=RaySettings(replicas=2)))
        with pytest.raises(ModelError, match="only 1 CPUs and 0 GPUs of the Ray cluster are free"):
            pool.backend(0)
    finally:
        ray.kill(other)
