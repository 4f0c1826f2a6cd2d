"""A small protobuf text-format writer for Triton's config.pbtxt.

Triton reads ``ModelConfig`` in protobuf text format. The structure we emit is a
nested dict; lists of dicts become repeated messages, enums are marked with ``Enum``.
"""

from __future__ import annotations

import json
from typing import Any


class Enum(str):
    """A protobuf enum value: written bare, without quotes."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # protobuf text strings accept JSON escapes


def dumps(message: dict[str, Any], indent: int = 0) -> str:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            lines.append(f"{pad}{key}: [ ]")  # e.g. a reshape to a scalar
            continue
        if isinstance(value, list) and not isinstance(value[0], dict):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
            continue
        for item in items:
            if isinstance(item, dict):
                lines.append(f"{pad}{key} {{")
                lines.append(dumps(item, indent + 1))
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    return "\n".join(line for line in lines if line)
