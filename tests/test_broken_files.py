"""Broken files: model fingerprints that see every byte, and broken weights/config files as one line.

(The cache database and the run directory's faults are in test_storage_faults.py.)"""
from __future__ import annotations

import json
import os
import struct

import pytest

from moco.errors import ModelError
from moco.models import fingerprint as fpmod
from moco.models.fingerprint import folder_fingerprint
from moco.models.model_files import check_model_folder
from reliability import tally
from storage_faults import read_only


def _safetensors(path, n_floats: int) -> None:
    """A valid safetensors file with one float32 tensor of n_floats values (written by hand: no torch)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.write(struct.pack("<f", 0.5) * n_floats)


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCO_CACHE_DIR", str(tmp_path / "cache"))
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    _safetensors(d / "model.safetensors", 1_500_000)  # 6 MB: the old fingerprint read only its first/last MiB
    return d


def _flip_middle_byte(f) -> None:
    """Change one byte in the middle of the file, keeping its size and its modification time."""
    st = os.stat(f)
    with open(f, "r+b") as fh:
        fh.seek(st.st_size // 2)
        b = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([b[0] ^ 0x01]))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_byte_changed_in_the_middle_of_the_weights_changes_the_fingerprint(model_dir, monkeypatch):
    reads = []
    real = fpmod.file_digest
    monkeypatch.setattr(fpmod, "file_digest", lambda f: reads.append(f.name) or real(f))
    before = folder_fingerprint(model_dir)
    assert sorted(reads) == ["config.json", "model.safetensors"]
    reads.clear()
    assert folder_fingerprint(model_dir) == before and reads == ["config.json"]  # weights remembered, not re-read
    _flip_middle_byte(model_dir / "model.safetensors")
    after = folder_fingerprint(model_dir)
    assert after != before and "model.safetensors" in reads  # same size, same mtime: the ctime tells
    check_model_folder(model_dir)  # still a valid file: only the content changed
    tally("bad inputs tried")


def test_the_fingerprint_memo_is_only_a_speed_up(model_dir, monkeypatch):
    before = folder_fingerprint(model_dir)
    memo = fpmod.memo_path()
    for garbage in (b"\x00\xff garbage", b"[1, 2]", b""):
        memo.write_bytes(garbage)
        assert folder_fingerprint(model_dir) == before
    memo.unlink()
    with read_only(memo.parent):  # a read-only cache directory: the fingerprint is computed, the memo not written
        assert folder_fingerprint(model_dir) == before
        assert not memo.exists() and not list(memo.parent.glob(".*tmp*"))
    tally("faults injected", 4)


BROKEN = {  # file -> (bytes, words of the one-line error)
    "config.json": (b'{"model_type": "llama",', "config.json: broken model file: not valid JSON"),
    "tokenizer_config.json": (b"\xff\xfe\x00", "tokenizer_config.json: broken model file: not UTF-8"),
    "generation_config.json": (b"[]", "generation_config.json: broken model file: expected a JSON object"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_json_files_are_one_line_naming_the_file(model_dir, name):
    raw, words = BROKEN[name]
    (model_dir / name).write_bytes(raw)
    with pytest.raises(ModelError, match=words) as e:
        check_model_folder(model_dir)
    assert str(model_dir / name) in str(e.value) and "\n" not in str(e.value)
    tally("bad inputs tried")


def _truncate(f):
    with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) - 100)


def _random(f):
    f.write_bytes(os.urandom(4096))


def _empty(f):
    f.write_bytes(b"")


def _bad_header(f):
    raw = f.read_bytes()
    f.write_bytes(raw[:8] + b"#" * struct.unpack("<Q", raw[:8])[0] + raw[8 + struct.unpack("<Q", raw[:8])[0]:])


def _trailing(f):
    with open(f, "ab") as fh:
        fh.write(b"\x00" * 16)


@pytest.mark.parametrize("damage, words", [(_truncate, "truncated"), (_random, "not a safetensors file"),
                                           (_empty, "not a safetensors file"), (_bad_header, "header is not valid JSON"),
                                           (_trailing, "has trailing bytes")])
def test_broken_weights_are_one_line_naming_the_file(model_dir, damage, words):
    f = model_dir / "model.safetensors"
    damage(f)
    with pytest.raises(ModelError, match=words) as e:
        check_model_folder(model_dir)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    tally("bad inputs tried")


def test_a_changed_model_never_hits_the_old_cache_and_broken_weights_stop_the_run(tmp_path, monkeypatch, tiny_task):
    """End to end through `run_experiment`: a tiny Llama over 2 MiB, one byte changed mid-file -> every call is
    generated again; then its weights truncated -> one ModelError line naming the file, before any call."""
    from moco.cache import ResponseCache
    from moco.config import parse_config
    from moco.models.pool import unload_all
    from moco.runner import run_experiment
    from moco.testing import build_tiny_llama

    monkeypatch.setenv("MOCO_CACHE_DIR", str(tmp_path / "cache"))
    model = build_tiny_llama(tmp_path / "big", hidden=256)
    weights = model / "model.safetensors"
    assert weights.stat().st_size > 3 << 20
    cfg = parse_config({"method": "single_model", "models": [str(model)], "task": {"name": str(tiny_task), "test_limit": 2},
                        "decoding": {"temperature": 0.0, "max_new_tokens": 3}})
    cache = ResponseCache(tmp_path / "responses.sqlite")
    try:
        first = run_experiment(cfg, tmp_path / "r1", cache=cache)
        again = run_experiment(cfg, tmp_path / "r2", cache=cache)
        assert again.metrics["total"]["cache_hits"] == first.metrics["total"]["calls"] == 2
        # a byte of the tensor data in the middle of the file (not the header), size and mtime kept
        _flip_middle_byte(weights)
        changed = run_experiment(cfg, tmp_path / "r3", cache=cache)
        assert changed.metrics["total"]["cache_hits"] == 0 and changed.metrics["total"]["calls"] == 2
        _truncate(weights)
        with pytest.raises(ModelError, match="model.safetensors: broken weights file: truncated"):
            run_experiment(cfg, tmp_path / "r4", cache=cache)
    finally:
        cache.close()
        unload_all()
    tally("bad inputs tried", 2)


def test_validate_names_a_broken_model_file_before_loading_anything(model_dir):
    """`moco validate` / the run's plan check each local model folder's files (cheap: JSON and headers)."""
    from moco.config import parse_config
    from moco.runner import plan

    cfg = parse_config({"method": "single_model", "models": [str(model_dir)], "task": "moco_demo"})
    (model_dir / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ModelError, match=r"config.json: broken model file: not valid JSON"):
        plan(cfg)
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    _truncate(model_dir / "model.safetensors")
    with pytest.raises(ModelError, match=r"model.safetensors: broken weights file: truncated"):
        plan(cfg)
    tally("bad inputs tried", 2)
