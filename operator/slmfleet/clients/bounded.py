"""Bounded reads of HTTP answers from servers a tenant controls (a pool's Triton, the
metrics endpoints the autoscaler scrapes): a server that answers too much costs the
operator at most the bound, never its memory.

``aiohttp``'s ``content.read(n)`` returns whatever is buffered (up to ``n``), not ``n``
bytes or the end, so a capped read loops until the end of the body or the cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp


class TooLarge(ValueError):
    """The answer passed its bound (the message says which bound)."""


@dataclass
class ByteBudget:
    """Bytes left for a round of reads shared by several answers."""

    remaining: int


async def read_capped(
    response: aiohttp.ClientResponse, limit: int, budget: ByteBudget | None = None
) -> bytes:
    """The whole body, or TooLarge once it passes ``limit`` bytes or once ``budget``
    (spent by every read sharing it) runs out."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await response.content.read(min(1 << 16, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"answer larger than {limit} bytes")
        if budget is not None:
            budget.remaining -= len(chunk)
            if budget.remaining < 0:
                raise TooLarge(f"the round's byte budget is spent ({size} bytes read here)")
