"""Triton's raw tensor encoding, pure: typed values to ``raw_input_contents`` bytes and
back, as the gRPC protocol carries them (little-endian, BYTES elements length-prefixed).

Every codec builds its ``ModelInferRequest`` from these, so the encoding is written and
table-tested once.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

#: Triton datatype -> (struct format of one element, its size in bytes).
_FIXED = {
    "BOOL": ("?", 1),
    "INT32": ("i", 4),
    "INT64": ("q", 8),
    "UINT32": ("I", 4),
    "UINT64": ("Q", 8),
    "FP32": ("f", 4),
    "FP64": ("d", 8),
}


def encode(datatype: str, values: Sequence[Any]) -> bytes:
    """``values`` (flat, row-major) as one raw input buffer of ``datatype``."""
    if datatype == "BYTES":
        out = bytearray()
        for v in values:
            b = v.encode() if isinstance(v, str) else bytes(v)
            out += struct.pack("<I", len(b)) + b
        return bytes(out)
    fmt, _ = _FIXED[datatype]
    return struct.pack(f"<{len(values)}{fmt}", *values)


def decode(datatype: str, raw: bytes) -> list[Any]:
    """One raw output buffer of ``datatype`` as a flat list (BYTES: ``bytes`` elements)."""
    if datatype == "BYTES":
        items, off = [], 0
        while off + 4 <= len(raw):
            (n,) = struct.unpack_from("<I", raw, off)
            items.append(raw[off + 4 : off + 4 + n])
            off += 4 + n
        return items
    fmt, size = _FIXED[datatype]
    return list(struct.unpack(f"<{len(raw) // size}{fmt}", raw[: len(raw) // size * size]))


def add_input(req: Any, name: str, datatype: str, shape: Sequence[int], values: Sequence[Any]):
    """Append one input tensor (its description and its raw contents) to ``req``."""
    t = req.inputs.add()
    t.name, t.datatype = name, datatype
    t.shape.extend(shape)
    req.raw_input_contents.append(encode(datatype, values))
    return t
