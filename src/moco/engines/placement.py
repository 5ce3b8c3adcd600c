"""Which GPUs an engine gets: hardware.gpu_ids split into groups of equal size, one engine per group (models
round-robin over the groups), tensor parallel over a group when the model is larger than one GPU, and the
GPU-memory share of each engine when several share a group. No GPU here: the functions take the GPU's memory
as an argument, so tests give it."""
from __future__ import annotations

from moco.errors import ConfigError

HEADROOM = 1.3  # weights x this must fit: activations, CUDA graphs and some KV cache need the rest
MEMORY_SHARE = 0.9  # of each GPU, split between the engines placed on it (vLLM's default utilization)


def group_size(weights_gb: float, gpu_gb: float, n_gpus: int, asked: int | None, name: str) -> int:
    """GPUs per engine: `asked` (hardware.engine_gpus_per_model), else the smallest power of two whose memory
    holds the weights (tensor-parallel sizes must divide the attention heads: powers of two do, in practice)."""
    if asked is not None:
        if asked > n_gpus or n_gpus % asked:
            raise ConfigError(f"hardware.engine_gpus_per_model={asked} does not split the {n_gpus} GPUs of "
                              "hardware.gpu_ids into equal groups")
        return asked
    k = 1
    while weights_gb * HEADROOM > k * gpu_gb and k < n_gpus:
        k *= 2
    if weights_gb * HEADROOM > k * gpu_gb or n_gpus % k:
        raise ConfigError(f"model '{name}' needs about {weights_gb * HEADROOM:.0f} GB of GPU memory; "
                          f"{n_gpus} GPU(s) of {gpu_gb:.0f} GB in hardware.gpu_ids cannot hold it in equal groups")
    return k


def groups(gpu_ids: list[int], size: int) -> list[tuple[int, ...]]:
    """Consecutive groups of `size` ids: [0, 1, 2, 3] by 2 -> (0, 1), (2, 3)."""
    return [tuple(gpu_ids[i:i + size]) for i in range(0, len(gpu_ids), size)]


def place(gpu_ids: list[int], size: int, position: int, models: int,
          device: str | None = None) -> tuple[tuple[int, ...], float]:
    """The group of the model at `position` among `models` distinct models on the GPUs, and its memory share.
    An explicit `device: cuda:N` picks the group holding N."""
    all_groups = groups(gpu_ids, size)
    if device and device.startswith("cuda:"):
        gpu = int(device.split(":")[1])
        group = next((g for g in all_groups if gpu in g), (gpu,))
    else:
        group = all_groups[position % len(all_groups)]
    index = all_groups.index(group) if group in all_groups else 0
    sharing = max(1, sum(1 for p in range(models) if p % len(all_groups) == index))
    return group, round(MEMORY_SHARE / sharing, 2)


def gpu_memory_gb(gpu: int) -> float:
    """Total memory of one visible CUDA GPU."""
    import torch

    return float(torch.cuda.get_device_properties(gpu).total_memory) / 2**30
