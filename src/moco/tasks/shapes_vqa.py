"""Generator of the built-in image task `shapes_vqa`: rendered shapes and colours, asked as multiple choice.

    python -m moco.tasks.shapes_vqa [OUT_DIR]     # default: src/moco/tasks/data (what is committed)

It writes `shapes_vqa.json` (MoCo JSON, rows with an `image` path relative to the file) and 64x64 PNGs in
`shapes_vqa/`. Three kinds of question — the colour of the shape, its kind, and how many shapes there
are — with the gold letter cycling through A-D, so no letter is favoured. Same seed, same files. It exists so
the vision-language pipeline runs here without downloads; it is far too easy to rank real VLMs.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZE = 64
N_DEV, N_TEST = 12, 36
LETTERS = "ABCD"


def _draw(draw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)


def _render(items: list[tuple[str, str]], rng: random.Random):
    """items: (shape, colour) to place in free cells of a 2x2 grid."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    cells = rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], len(items))
    half = SIZE // 2
    big = len(items) == 1
    for (shape, colour), (cx, cy) in zip(items, cells):
        if big:
            box = (12, 12, SIZE - 12, SIZE - 12)
        else:
            box = (cx * half + 5, cy * half + 5, cx * half + half - 5, cy * half + half - 5)
        _draw(d, shape, box, COLOURS[colour])
    return img


def _mc(question: str, correct: str, options: list[str], rng: random.Random, slot: int) -> dict:
    """The correct option goes to letter `slot`, the others in seeded order."""
    opts = [o for o in options if o != correct]
    rng.shuffle(opts)
    opts.insert(slot, correct)
    return {"question": question, "choices": dict(zip(LETTERS, opts)), "answer": LETTERS[slot]}


def _item(kind: str, slot: int, rng: random.Random):
    if kind == "count":
        n = rng.randint(1, 4)
        items = [(rng.choice(SHAPES), rng.choice(list(COLOURS))) for _ in range(n)]
        row = _mc("How many shapes are in the image?", str(n), ["1", "2", "3", "4"], rng, slot)
    else:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        items = [(shape, colour)]
        if kind == "colour":
            row = _mc("What colour is the shape in the image?", colour, list(COLOURS), rng, slot)
        else:
            row = _mc("Which shape is drawn in the image?", shape, list(SHAPES), rng, slot)
    return row, _render(items, rng)


def make_rows(rng: random.Random) -> list[tuple[dict, object]]:
    """Distinct items: the same question, options and picture never appear twice (no dev/test leak)."""
    rows, seen = [], set()
    for i in range(N_DEV + N_TEST):
        kind = ("colour", "shape", "count")[i % 3]
        slot = (i // 3) % 4  # gold letters cycle through A-D within each kind
        while True:
            row, img = _item(kind, slot, rng)
            key = (row["question"], tuple(row["choices"].items()), img.tobytes())
            if key not in seen:
                seen.add(key)
                break
        rows.append(({"id": f"shapes-{i:03d}", **row, "kind": kind}, img))
    return rows


def write(out_dir: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    img_dir = out_dir / "shapes_vqa"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for row, img in make_rows(rng):
        name = f"{row['id']}.png"
        img.save(img_dir / name, optimize=True)
        rows.append({**row, "image": f"shapes_vqa/{name}"})
    data = {
        "name": "shapes_vqa", "task_type": "multiple_choice", "domain": "vision",
        "description": f"{N_DEV + N_TEST} rendered images (shapes, colours, counts) asked as 4-option questions; "
                       f"self-made to test vision-language pipelines offline; {N_DEV} dev / {N_TEST} test",
        "dev": rows[:N_DEV], "test": rows[N_DEV:],
    }
    path = out_dir / "shapes_vqa.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    print(write(target))
