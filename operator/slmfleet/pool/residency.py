"""The residency shell: bring a pool's Triton servers to what ``lru.plan`` decides.

Each tick reads every server's repository index (what is loaded), marks the members the
router wants now as used, plans, and then unloads and loads through the repository API
on every replica of the pool (each replica holds the same members). A member whose
files changed (its digest) is loaded again: Triton reloads it in place. Load times are
measured per member (the cold-load time in the status and the benchmark).

No decision is made here: ``lru.plan`` decides, this only observes and acts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .lru import Plan, Resident, plan
from .repository import Entry, Repository, RepositoryError

log = logging.getLogger("slmfleet.pool")


@dataclass
class Member:
    """What the shell remembers about one placed member between ticks."""

    name: str
    bytes: int
    digest: str = ""
    """Hash of its rendered files: a change reloads it."""
    loaded_digest: str | None = None
    """The digest it was last loaded with (None: not loaded by us)."""
    last_used: float | None = None
    state: str = "Pending"
    message: str = ""
    last_load_seconds: float | None = None


@dataclass(frozen=True)
class Change:
    """One load or unload, for status, events, tests and the benchmark."""

    member: str
    action: str
    """load, reload or unload."""
    seconds: float
    error: str = ""


@dataclass
class PoolResidency:
    pool: str
    capacity: int
    clock: Callable[[], float] = time.monotonic
    members: dict[str, Member] = field(default_factory=dict)
    last_plan: Plan = field(default_factory=Plan)

    def set_members(self, placed: Iterable[tuple[str, int, str]]) -> None:
        """The placed members (name, bytes, digest) in joining order; others are dropped
        (and unloaded by the next tick if a server still has them)."""
        keep: dict[str, Member] = {}
        for name, size, digest in placed:
            m = self.members.get(name) or Member(name, size)
            m.bytes, m.digest = size, digest
            keep[name] = m
        self.members = keep

    def touch(self, used: Iterable[str]) -> None:
        now = self.clock()
        for name in used:
            if name in self.members:
                self.members[name].last_used = now

    async def tick(
        self, servers: Sequence[Repository], wanted: Iterable[str] = (), used: Iterable[str] = ()
    ) -> list[Change]:
        """One round: observe, plan, act. ``wanted``: members requests wait for now;
        ``used``: members that served requests lately (both refresh their LRU place;
        Triton finishes a request in flight before it unloads its model)."""
        wanted = set(wanted)
        self.touch(wanted | set(used))
        if not servers:
            for m in self.members.values():
                m.state, m.message = "Pending", "no ready replica of the pool"
            return []
        indexes = await asyncio.gather(*(s.index() for s in servers), return_exceptions=True)
        failed = [f"{s.base}: {i}" for s, i in zip(servers, indexes, strict=True)
                  if isinstance(i, BaseException)]  # fmt: skip
        if failed:
            raise RepositoryError("; ".join(failed))
        seen: list[dict[str, Entry]] = [i for i in indexes if isinstance(i, dict)]
        changes: list[Change] = []
        # Models no longer members (removed from the pool) leave memory first.
        strays = sorted({n for idx in seen for n, e in idx.items() if e.state == "READY"}
                        - set(self.members))  # fmt: skip
        for name in strays:
            changes.append(await self._act(servers, name, "unload"))
        residents = []
        for m in self.members.values():
            present = all(m.name in idx for idx in seen)
            ready = present and all(idx[m.name].state == "READY" for idx in seen)
            if not present:
                m.state, m.message = "Pending", "its files are not in the repository yet"
                continue
            if ready and m.loaded_digest is None:
                m.loaded_digest = m.digest  # loaded before we started (operator restart)
            residents.append(Resident(m.name, m.bytes, ready, m.last_used, m.name in wanted))
            if not ready and m.state == "Loaded":
                m.state, m.message = "Unloaded", "not loaded on every replica"
        decided = plan(residents, self.capacity)
        self.last_plan = decided
        for name in decided.unload:
            changes.append(await self._act(servers, name, "unload"))
        reload = [
            r.name for r in residents
            if r.loaded and r.name not in decided.unload
            and self.members[r.name].loaded_digest != self.members[r.name].digest
        ]  # fmt: skip
        for name in [*decided.load, *reload]:
            changes.append(await self._act(servers, name, "reload" if name in reload else "load"))
        loaded_now = {r.name for r in residents if r.loaded} - set(decided.unload)
        for r in residents:
            m = self.members[r.name]
            if m.state == "Failed" and r.name not in decided.load:
                continue
            if r.name in loaded_now and m.state != "Failed":
                m.state, m.message = "Loaded", ""
            elif r.name in decided.waiting:
                m.state, m.message = "Unloaded", "waiting for room: " + decided.waiting[r.name]
            elif r.name not in loaded_now and r.name not in decided.load:
                m.state = "Unloaded"
                m.message = (
                    "unloaded to make room (least recently used); its next request loads it"
                    if r.name in decided.unload or m.message.startswith("unloaded")
                    else "not loaded: the pool is full; its first request loads it"
                )
        return changes

    async def _act(self, servers: Sequence[Repository], name: str, action: str) -> Change:
        began = time.monotonic()
        call = "unload" if action == "unload" else "load"
        results = await asyncio.gather(
            *(getattr(s, call)(name) for s in servers), return_exceptions=True
        )
        seconds = time.monotonic() - began
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        m = self.members.get(name)
        if m is not None:
            if errors:
                m.state, m.message = "Failed", f"{call} failed: {errors[0]}"[:1000]
                if call == "load":
                    m.loaded_digest = None
            elif call == "load":
                m.state, m.message, m.loaded_digest = "Loaded", "", m.digest
                m.last_load_seconds = round(seconds, 3)
            else:
                m.state, m.loaded_digest = "Unloaded", None
                m.message = "unloaded to make room (least recently used); its next request loads it"
        log.info("pool %s: %s %s in %.2fs%s", self.pool, action, name, seconds,
                 f" ({errors[0]})" if errors else "")  # fmt: skip
        return Change(name, action, seconds, errors[0] if errors else "")
