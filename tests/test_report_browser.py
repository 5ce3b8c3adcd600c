"""The HTML report renders in headless Chromium without any browser error, with every section and figure
(scripts/screenshot_report.py; skipped where Chromium is not installed: `apt-get install -y chromium`)."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from moco.analysis import load
from moco.analysis.report import write
from test_analysis_handmade import _table_fixture

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "screenshot_report.py"


def _script():
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")),
                    reason="chromium not installed")
def test_report_renders_in_headless_chromium(tmp_path):
    root = _table_fixture(tmp_path)
    html = tmp_path / "report.html"
    write(load([root]), html, paths=[str(root)])
    shot = tmp_path / "report.png"
    errors = _script().render(html, shot, width=1200, height=2400)
    assert errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.skipif(not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")),
                    reason="chromium not installed")
def test_the_browser_check_catches_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><h2>A</h2><script>undefined_fn()</script></body></html>")
    errors = _script().render(bad, tmp_path / "bad.png", width=400, height=300)
    assert any("undefined_fn" in e for e in errors)
