"""`decoding:` and `hardware:` replaced the former `generation:` section: through the real `moco` executable, a
config in the former form gets the same verdict from `moco validate` and `moco run`, with one warning line saying
where each key now lives; a key given in both places with different values is one error line."""
from __future__ import annotations

import json

import yaml

from test_cli_conventions import SCRIPTED, moco

OLD = {**{k: v for k, v in SCRIPTED.items() if k != "decoding"},
       "generation": {"temperature": 0.0, "max_new_tokens": 24, "batch_size": 3}}


def _lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


def test_validate_and_run_read_the_former_section_alike_with_one_warning(tmp_path):
    cfg = tmp_path / "old.yaml"
    cfg.write_text(yaml.safe_dump(OLD))
    v = moco("validate", cfg)
    out = tmp_path / "run"
    r = moco("run", cfg, "--output", out, "--no-progress", env={"MOCO_RESPONSE_CACHE": str(tmp_path / "c.sqlite")})
    assert v.returncode == 0 and r.returncode == 0, (v.stderr, r.stderr)
    for stderr in (v.stderr, r.stderr):
        warnings = [x for x in _lines(stderr) if x.startswith("WARNING")]
        assert len(warnings) == 1, stderr
        assert "batch_size -> hardware.batch_size" in warnings[0] and "temperature -> decoding.temperature" in warnings[0]
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert "generation" not in written
    assert written["decoding"]["max_new_tokens"] == 24 and written["hardware"]["batch_size"] == 3


def test_a_conflict_is_the_same_one_line_error_for_validate_and_run(tmp_path):
    cfg = tmp_path / "both.json"
    cfg.write_text(json.dumps({**OLD, "hardware": {"batch_size": 8}}))
    want = "error: config: generation.batch_size is 3 but hardware.batch_size is 8: give it once, as hardware.batch_size"
    for args in (("validate", cfg), ("run", cfg, "--no-progress")):
        r = moco(*args)
        assert r.returncode == 2 and _lines(r.stderr) == [want], r.stderr


def test_a_new_config_with_a_former_override_key(tmp_path):
    cfg = tmp_path / "new.yaml"
    cfg.write_text(yaml.safe_dump({**SCRIPTED, "hardware": {"batch_size": 2}}))
    r = moco("validate", cfg, "--json", "--set", "generation.batch_size=5", "--set", "decoding.temperature=0")
    assert r.returncode == 0, r.stderr
    warnings = [x for x in _lines(r.stderr) if x.startswith("WARNING")]
    assert len(warnings) == 1 and "generation.batch_size -> hardware.batch_size" in warnings[0]
    assert moco("validate", cfg).stderr.strip() == ""  # the new form: no warning
