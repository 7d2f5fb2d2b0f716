"""The header of a safetensors file, read without torch or numpy: one reader for the loader's file
checks and the int8 variant's plain reads (the format: 8 bytes of header length, then JSON)."""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

__all__ = ["read_header"]

MAX_HEADER_BYTES = 100 * 2**20  # a longer "header" is not a safetensors file


def read_header(f: BinaryIO) -> tuple[dict, int]:
    """(the header's entries, ``__metadata__`` included; where the data starts) of the file open at
    its start. ``ValueError`` for anything that is not a safetensors header."""
    try:
        (length,) = struct.unpack("<Q", f.read(8))
    except struct.error:
        raise ValueError("shorter than a safetensors header") from None
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"a header of {length} bytes")
    header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, 8 + length
