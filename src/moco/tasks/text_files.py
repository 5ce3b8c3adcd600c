"""Reading a data file's text: UTF-8 with or without a byte-order mark, anything else a one-line error.

A UTF-8 BOM is dropped (spreadsheet exports start with one, and left in place it hides the first column's
name, so every row would miss that field). UTF-16/32 files and bytes that are not UTF-8 (a Latin-1 or
Windows-1252 export) are refused with the file, the offset and the line, never decoded by guesswork.
"""
from __future__ import annotations

import codecs
from pathlib import Path

from moco.errors import DataError

_OTHER_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
               (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def decode_utf8(raw: bytes, path: Path | str) -> str:
    """The text of `raw` (UTF-8, an optional BOM dropped), or DataError naming the encoding problem."""
    for bom, name in _OTHER_BOMS:
        if raw.startswith(bom):
            raise DataError(f"{path}: the file is {name} text (it starts with a {name} byte-order mark); "
                            "MoCo reads UTF-8: save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}, line {line}); "
                        "MoCo reads UTF-8 only: save the file as UTF-8 (it may be Latin-1 or Windows-1252)") from None


def read_text(path: Path) -> str:
    """A data file's text (see `decode_utf8`); unreadable files are a one-line DataError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the data file: {e.strerror}") from None
    return decode_utf8(raw, path)
