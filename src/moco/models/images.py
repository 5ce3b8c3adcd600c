"""Images attached to a request: a reference is a local path, an http(s) URL or a `data:` URI.

Requests carry references (short, hashable strings), not pixels. The cache key of a request with images
holds each image's content hash, so a changed file is a new request while a moved one is not. Remote URLs
are keyed by the URL itself: hashing their content would mean downloading them to build a key.
"""
from __future__ import annotations

import base64
import hashlib
import io
import mimetypes
import os
import threading
from pathlib import Path
from typing import Any

from moco.errors import DataError

MAX_IMAGE_BYTES = 20 * 2**20
_HASHES: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def is_data_uri(ref: str) -> bool:
    return ref.startswith("data:")


def _decode_data_uri(ref: str) -> bytes:
    head, _, payload = ref.partition(",")
    if not payload or ";base64" not in head:
        raise DataError("image data URI must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise DataError("image data URI holds invalid base64") from None


def image_key(ref: str) -> str:
    """Content hash of a local image or data URI (remote URLs: hash of the URL)."""
    if is_remote(ref):
        return "url:" + hashlib.sha256(ref.encode()).hexdigest()[:32]
    if is_data_uri(ref):
        return hashlib.sha256(_decode_data_uri(ref)).hexdigest()[:32]
    p = Path(ref).expanduser()
    try:
        st = p.stat()
    except OSError:
        raise DataError(f"image not found: {ref}") from None
    ident = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    with _LOCK:
        if ident in _HASHES:
            return _HASHES[ident]
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:32]
    with _LOCK:
        _HASHES[ident] = digest
    return digest


def image_bytes(ref: str, timeout_s: float = 30.0) -> bytes:
    """Raw bytes of an image (downloads remote URLs)."""
    if is_data_uri(ref):
        return _decode_data_uri(ref)
    if is_remote(ref):
        import httpx

        try:
            r = httpx.get(ref, timeout=timeout_s, follow_redirects=True)
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise DataError(f"cannot fetch image {ref}: {type(e).__name__}: {e}") from None
        if len(r.content) > MAX_IMAGE_BYTES:
            raise DataError(f"image {ref} is larger than {MAX_IMAGE_BYTES >> 20} MB")
        return r.content
    p = Path(ref).expanduser()
    if not p.is_file():
        raise DataError(f"image not found: {ref}")
    return p.read_bytes()


def load_image(ref: str) -> Any:
    """A PIL image in RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(image_bytes(ref)))
        img.load()
    except UnidentifiedImageError:
        raise DataError(f"not an image: {_short(ref)}") from None
    return img.convert("RGB")


def data_url(ref: str) -> str:
    """What an OpenAI-compatible endpoint receives: URLs as they are, local files inlined as base64."""
    if is_remote(ref) or is_data_uri(ref):
        return ref
    mime = mimetypes.guess_type(ref)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(image_bytes(ref)).decode()}"


def resolve_ref(ref: Any, base_dir: Path | None) -> str:
    """A dataset's image field as a reference: relative paths are relative to the dataset file."""
    if not isinstance(ref, str) or not ref.strip():
        raise DataError(f"image reference must be a non-empty string, got {ref!r}")
    ref = ref.strip()
    if is_remote(ref) or is_data_uri(ref):
        return ref
    p = Path(ref).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if not p.is_file():
        raise DataError(f"image file not found: {p}")
    return os.path.normpath(str(p))


def _short(ref: str) -> str:
    return ref[:40] + "..." if len(ref) > 43 else ref
