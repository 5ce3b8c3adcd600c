"""Checks of a local model folder before transformers reads it, so a broken file is one line naming it.

transformers reports a garbage `config.json`, a truncated or random-bytes `.safetensors` file or a broken
tokenizer file as a deep traceback (or a Rust panic message) that names no file. These checks read only
what is cheap: the JSON files the libraries read must parse as objects, and each safetensors file's header must
parse and account for exactly the bytes the file has (the format is an 8-byte little-endian header length,
a JSON header with each tensor's byte range, then the data).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from moco.errors import ModelError

MAX_HEADER_BYTES = 100 << 20  # the format's own limit on the JSON header


# the JSON files transformers, tokenizers and peft read (other JSON files in a folder are not ours to judge)
MODEL_JSON = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json",
              "special_tokens_map.json", "adapter_config.json", "preprocessor_config.json",
              "processor_config.json", "model.safetensors.index.json", "added_tokens.json", "vocab.json")


def check_model_folder(path: Path) -> None:
    """Raise ModelError naming the first broken file of a local model (or adapter) folder."""
    for name in MODEL_JSON:
        if (path / name).is_file():
            _check_json(path / name)
    for f in sorted(path.glob("*.safetensors")):
        check_safetensors(f)


def _check_json(f: Path) -> None:
    try:
        data = json.loads(f.read_bytes().decode("utf-8-sig"))
    except OSError as e:
        raise ModelError(f"{f}: cannot read the model file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ModelError(f"{f}: broken model file: not UTF-8 text (byte {e.start})") from None
    except ValueError as e:
        raise ModelError(f"{f}: broken model file: not valid JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise ModelError(f"{f}: broken model file: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ModelError(f"{f}: broken model file: expected a JSON object, got {type(data).__name__}")


def check_safetensors(f: Path) -> None:
    """The header parses and its tensors' byte ranges fill the file exactly (no truncation, no garbage)."""
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise ModelError(f"{f}: broken weights file: not a safetensors file (header length {n} in a "
                                 f"file of {size} bytes; truncated or not safetensors)")
            raw = fh.read(n)
    except OSError as e:
        raise ModelError(f"{f}: cannot read the weights file: {e.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelError(f"{f}: broken weights file: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelError(f"{f}: broken weights file: the safetensors header is not an object")
    end = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        offs = t.get("data_offsets") if isinstance(t, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise ModelError(f"{f}: broken weights file: tensor {name!r} has no valid data_offsets")
        end = max(end, offs[1])
    data = size - 8 - n
    if end != data:
        what = "truncated" if end > data else "has trailing bytes"
        raise ModelError(f"{f}: broken weights file: {what} (the header describes {end} bytes of tensor data, "
                         f"the file has {data})")
