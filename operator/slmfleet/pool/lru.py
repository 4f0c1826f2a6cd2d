"""Which pool members are loaded: least recently used out, on demand in. Pure.

Called every residency tick with what the servers report (loaded or not) and what the
router's metrics say (a member is *wanted* while requests wait for it or run on it).
Rules, in order:

1. A pool whose loaded members outgrow it (its capacity shrank) unloads idle members,
   least recently used first.
2. A wanted member that is not loaded is loaded; to make room, idle loaded members are
   unloaded, least recently used first (never one that is wanted: a request runs on it).
   When only wanted members are loaded it waits (its requests wait or cascade, as their
   policy's ``capacity`` says) and the reason says which members hold the room.
3. Free room is never wasted: unloaded members that fit without unloading anyone are
   loaded, most recently used first (then in joining order). So a pool whose members
   fit together simply has them all loaded, and only an overcommitted pool ever
   unloads anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resident:
    """One placed member as residency sees it."""

    name: str
    bytes: int
    loaded: bool
    last_used: float | None = None
    """When a request last wanted it (any clock, compared only with the others); None:
    never since the operator started."""
    wanted: bool = False
    """Requests wait for it or run on it now."""


@dataclass(frozen=True)
class Plan:
    unload: tuple[str, ...] = ()
    """Unload these first (in order) ..."""
    load: tuple[str, ...] = ()
    """... then load these (in order)."""
    waiting: dict[str, str] = field(default_factory=dict)
    """Wanted members that cannot be loaded now, and why."""


def _lru_key(r: Resident) -> tuple[float, str]:
    return (r.last_used if r.last_used is not None else float("-inf"), r.name)


def plan(members: Sequence[Resident], capacity: int) -> Plan:
    """The loads and unloads that bring ``members`` (in joining order) to the rules above."""
    loaded = {r.name for r in members if r.loaded}
    size = {r.name: r.bytes for r in members}
    used = sum(size[n] for n in loaded)
    unload: list[str] = []
    load: list[str] = []
    waiting: dict[str, str] = {}

    def victims() -> list[Resident]:
        return sorted(
            (r for r in members if r.name in loaded and not r.wanted and r.name not in load),
            key=_lru_key,
        )

    def evict(r: Resident) -> None:
        nonlocal used
        loaded.discard(r.name)
        unload.append(r.name)
        used -= r.bytes

    # 1. Over capacity: idle members go, least recently used first.
    for r in victims():
        if used <= capacity:
            break
        evict(r)
    # 2. Wanted members come in, pushing idle ones out.
    for r in members:
        if not r.wanted or r.name in loaded:
            continue
        candidates = victims()
        room = capacity - used + sum(v.bytes for v in candidates)
        if r.bytes > room:
            busy = sorted(n for n in loaded if n not in {v.name for v in candidates})
            waiting[r.name] = (
                f"needs {r.bytes} bytes; busy members hold the pool: {', '.join(busy) or '-'}"
            )
            continue
        for v in candidates:
            if used + r.bytes <= capacity:
                break
            evict(v)
        loaded.add(r.name)
        load.append(r.name)
        used += r.bytes
    # 3. Free room: most recently used first, never-used in joining order.
    order = {r.name: i for i, r in enumerate(members)}
    idle = [r for r in members if r.name not in loaded and r.name not in unload]
    idle.sort(key=lambda r: (-_lru_key(r)[0], order[r.name]))
    for r in idle:
        if r.name in waiting:
            continue
        if used + r.bytes <= capacity:
            loaded.add(r.name)
            load.append(r.name)
            used += r.bytes
    return Plan(tuple(unload), tuple(load), waiting)
