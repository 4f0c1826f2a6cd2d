"""Does a pool hold its members? Pure arithmetic over memory quantities.

First fit in order of joining (creation time, then name): a member that joined later
never pushes out one that was already placed, so adding a specialist to a full pool
changes nothing but that specialist's own status. The ``Fits`` condition carries the
sum, so ``kubectl describe`` shows why without reading code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

_SUFFIX = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([EPTGMK]i?|[eE][0-9]+)?$")


#: Largest quantity the fit accepts (Kubernetes' own int64 bound on a quantity's value).
MAX_BYTES = 2**63 - 1


def parse_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in bytes (``6Gi``, ``500M``, ``1e9``); ValueError on
    anything else (the CRD's pattern admits only these forms) and above :data:`MAX_BYTES`
    (an object stored before the CRD bounded the exponent may say ``1e400``: that must
    fail this one object, not overflow in the pool loop)."""
    text = quantity.strip()
    m = _QUANTITY.match(text) if len(text) <= 64 else None
    if not m:
        raise ValueError(f"not a memory quantity: {quantity[:64]!r}")
    number, suffix = Decimal(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E") and suffix[1:].isdigit():
        exponent = int(suffix[1:])
        # The leading digit's power of ten decides: from 10^19 on (> 2^63) the value is
        # not computed at all (``1e999999999``); below it exactly (``0.01e20`` is 1e18).
        if number and number.adjusted() + exponent >= 19:
            value = MAX_BYTES + 1
        else:
            value = int(number.scaleb(exponent))
    else:
        value = int(number * _SUFFIX[suffix])
    if value > MAX_BYTES:
        raise ValueError(f"memory quantity {quantity[:64]!r} is more than 2^63 bytes")
    return value


def format_bytes(n: int) -> str:
    """Bytes as the largest binary unit that keeps one decimal (``6Gi``, ``1.5Gi``), in
    integer arithmetic (a sum of members never overflows a float)."""
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if abs(n) >= size:
            tenths = (abs(n) * 10 + size // 2) // size
            whole, tenth = divmod(tenths, 10)
            text = f"{'-' if n < 0 else ''}{whole}" + (f".{tenth}" if tenth else "")
            return f"{text}{unit}"
    return str(n)


@dataclass(frozen=True)
class Claim:
    """One member as the fit sees it."""

    name: str
    bytes: int | None
    """What it declares; None when it declares nothing usable (see ``problem``)."""
    problem: str = ""
    """Why it cannot be placed whatever the room (a missing declaration)."""


@dataclass(frozen=True)
class Fit:
    """Which members the pool holds, and the ``Fits`` condition that says so."""

    placed: tuple[str, ...]
    refused: dict[str, str] = field(default_factory=dict)
    """Member -> why it is refused (naming the field)."""
    requested: int = 0
    """Bytes every placeable member declares together."""
    status: str = "True"
    reason: str = "Fits"
    message: str = ""


def _sum(claims: Sequence[Claim]) -> str:
    parts = [f"{format_bytes(c.bytes or 0)} ({c.name})" for c in claims]
    total = sum(c.bytes or 0 for c in claims)
    if not parts:
        return "no members: 0"
    return " + ".join(parts) + (f" = {format_bytes(total)}" if len(parts) > 1 else "")


def fit(
    pool: str,
    capacity: int,
    claims: Sequence[Claim],
    *,
    overcommit: bool,
    field_path: str = "spec.serving.resources.memory",
) -> Fit:
    """Place ``claims`` (in joining order) into ``capacity`` bytes.

    Without overcommit the members must fit together; with it each must fit alone (the
    residency loop keeps the recently used ones loaded). A member larger than the whole
    pool is refused either way."""
    refused: dict[str, str] = {}
    placed: list[Claim] = []
    used = 0
    cap = format_bytes(capacity)
    for c in claims:
        if c.bytes is None:
            refused[c.name] = c.problem or f"{field_path}: not declared"
            continue
        if c.bytes > capacity:
            refused[c.name] = (
                f"{field_path}: {format_bytes(c.bytes)} is more than pool {pool}'s "
                f"whole capacity of {cap}"
            )
            continue
        if not overcommit and used + c.bytes > capacity:
            refused[c.name] = (
                f"{field_path}: {format_bytes(c.bytes)} does not fit in pool {pool}: "
                f"{format_bytes(used)} of {cap} already placed, {format_bytes(capacity - used)} "
                "left (set spec.residency.overcommit on the pool to load members on demand)"
            )
            continue
        placed.append(c)
        used += c.bytes
    arithmetic = f"{_sum(placed)} of {cap}"
    requested = sum(c.bytes or 0 for c in claims if c.bytes is not None and c.bytes <= capacity)
    if refused:
        names = ", ".join(sorted(refused))
        return Fit(
            tuple(c.name for c in placed),
            refused,
            requested,
            "False",
            "MembersRefused",
            f"placed {arithmetic}; refused: {names} (see each member's status)",
        )
    if used > capacity:
        return Fit(
            tuple(c.name for c in placed),
            {},
            requested,
            "True",
            "Overcommitted",
            f"{arithmetic}: the most recently used members stay loaded, the others load "
            "on their first request",
        )
    return Fit(tuple(c.name for c in placed), {}, requested, "True", "Fits", arithmetic)
