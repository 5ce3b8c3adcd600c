"""Rebuild tests/data/moco/: the first rows of every MoCo dataset, so the default test run needs no data folder.

    python tests/data/make_sample.py /path/to/datasets/moco

Each file keeps its top-level keys (name/dataset, task_type) and the first DEV dev and TEST test rows, real
rows as published: tests that read a dataset by name see its true shape (option keys, alias lists, unit
tests, group ids) without the 28 MB of the full folder. Tests that need whole datasets are marked `datasets`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

DEV, TEST = 6, 6
OUT = Path(__file__).resolve().parent / "moco"


def main(src: str) -> None:
    OUT.mkdir(exist_ok=True)
    for p in sorted(Path(src).glob("*.json")):
        raw = json.loads(p.read_text())
        raw["dev"], raw["test"] = (raw.get("dev") or [])[:DEV], (raw.get("test") or [])[:TEST]
        (OUT / p.name).write_text(json.dumps(raw, ensure_ascii=False, indent=1) + "\n")
    print(f"{len(list(OUT.glob('*.json')))} files, {sum(f.stat().st_size for f in OUT.glob('*.json')) // 1024} KB")


if __name__ == "__main__":
    main(sys.argv[1])
