#!/usr/bin/env python3
"""Render a MoCo HTML report in headless Chromium: take a PNG screenshot and fail on any browser error.

    python scripts/screenshot_report.py runs/sweeps/NAME/report.html [--out shot.png] [--width 1280 --height 4000]

Chromium comes from Debian (`apt-get install -y chromium`). The report has no script and loads nothing, so
any console message or failed resource load is an error: the script prints it and exits 1. It also checks
that the rendered DOM (`--dump-dom`) still holds every section title and figure of the file.
"""
from __future__ import annotations

import argparse
import html as htmllib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def render(html: Path, out: Path, width: int = 1280, height: int = 4000, timeout: int = 120) -> list[str]:
    """Screenshot `html` into `out`; return the browser errors (empty when it rendered cleanly)."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found: apt-get install -y chromium")
    url = html.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        base = [exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
        shot = subprocess.run([*base, f"--window-size={width},{height}", f"--screenshot={out}", url],
                              capture_output=True, text=True, timeout=timeout)
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
    errors = [line for line in (shot.stderr + dom.stderr).splitlines()
              if "CONSOLE" in line or "Failed to load" in line or "net::ERR" in line]
    if shot.returncode != 0 or not out.exists() or out.stat().st_size < 1000:
        errors.append(f"no screenshot written (exit code {shot.returncode})")
    source = html.read_text()
    rendered = htmllib.unescape(dom.stdout)
    for title in re.findall(r"<h2>(.*?)</h2>", source):
        if f"<h2>{htmllib.unescape(title)}</h2>" not in rendered:
            errors.append(f"section missing from the rendered page: {htmllib.unescape(title)}")
    if dom.stdout.count("<svg") != source.count("<svg"):
        errors.append(f"{source.count('<svg')} figures in the file, {dom.stdout.count('<svg')} rendered")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="PNG file (default: the HTML path with .png)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=4000)
    a = ap.parse_args()
    out = a.out or a.html.with_suffix(".png")
    errors = render(a.html, out, a.width, a.height)
    for e in errors:
        print("error:", e, file=sys.stderr)
    print(f"{'FAILED' if errors else 'ok'}: {a.html} -> {out} ({out.stat().st_size if out.exists() else 0} bytes)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
