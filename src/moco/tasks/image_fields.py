"""Image questions in MoCo JSON: a row's `image` (one reference) or `images` (a list) become `Example.images`.

A reference is a path (relative to the dataset file), an http(s) URL or a data URI. A row whose local image
is missing is skipped and reported, like any other row that cannot be used.
"""
from __future__ import annotations

from pathlib import Path

from moco.errors import DataError
from moco.models.images import resolve_ref
from moco.tasks.base import DataProblem, Example

IMAGE_FIELDS = ("image", "images")


def attach_images(examples: list[Example], base_dir: Path | None, problems: list[DataProblem]) -> list[Example]:
    """Move image fields from `meta` to `images` (resolved); drop rows whose images cannot be found."""
    kept = []
    for ex in examples:
        refs = ex.meta.pop("image", None)
        many = ex.meta.pop("images", None)
        raw = ([refs] if refs is not None else []) + (list(many) if isinstance(many, (list, tuple)) else
                                                       [many] if many is not None else [])
        try:
            ex.images = tuple(resolve_ref(r, base_dir) for r in raw)
        except DataError as e:
            problems.append(DataProblem(ex.split, ex.index, "image", str(e), "skipped"))
            continue
        kept.append(ex)
    return kept
