"""Backend kinds -> the class (or factory) that loads them, imported only when a model of that kind loads:
a run on endpoints never imports the Hugging Face backend (nor torch)."""
from __future__ import annotations

from typing import Any

from moco.registry import Registry

BACKENDS: Registry[Any] = Registry("backend")
BACKENDS.add("scripted", "moco.models.scripted:from_spec", summary="replies from rules in the config (tests, demos)")
BACKENDS.add("openai", "moco.models.openai:OpenAIBackend", summary="an OpenAI-compatible endpoint over HTTP")
BACKENDS.add("hf", "moco.models.hf:HFBackend", summary="a local Hugging Face causal LM (torch, transformers)")
BACKENDS.add("hf_vision", "moco.models.hf_vision:HFVisionBackend", summary="a local Hugging Face vision-language model")
BACKENDS.add("ray", "moco.models.ray_backend:RayHFBackend", summary="Hugging Face models as Ray actors")
