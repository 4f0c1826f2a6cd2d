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
    draining_since: float | None = None
    """When the plan first chose to unload it (it is unloaded ``drain_s`` later)."""


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
    drain_s: float = 0.0
    """How long a member chosen for unloading is published as not Ready before it is
    unloaded: the time the router needs to read that (local: its config poll; in a
    cluster: status -> fleet render -> router ConfigMap)."""
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
            # Demand loads a member; a loaded one is protected by recency alone (its
            # requests in flight finish: Triton unloads only after them).
            residents.append(
                Resident(m.name, m.bytes, ready, m.last_used, m.name in wanted and not ready)
            )
            if not ready and m.state == "Loaded":
                m.state, m.message = "Unloaded", "not loaded on every replica"
        decided = plan(residents, self.capacity)
        self.last_plan = decided
        now = self.clock()
        # Drain first: the router stops sending to a member (it is published as not
        # Ready) for drain_s before it is unloaded, so no request meets a missing model.
        unload_now = []
        for name in decided.unload:
            m = self.members[name]
            if m.draining_since is None and self.drain_s > 0:
                m.draining_since = now
            if m.draining_since is None or now - m.draining_since >= self.drain_s:
                unload_now.append(name)
        for m in self.members.values():
            if m.draining_since is not None and m.name not in decided.unload:
                m.draining_since = None  # wanted again, or the room is no longer needed
        for name in unload_now:
            changes.append(await self._act(servers, name, "unload"))
            self.members[name].draining_since = None
        # Loads that fit now: members still draining hold their memory.
        used = sum(r.bytes for r in residents if r.loaded and r.name not in unload_now)
        load_now = []
        for name in decided.load:
            if used + self.members[name].bytes <= self.capacity:
                load_now.append(name)
                used += self.members[name].bytes
        reload = [
            r.name for r in residents
            if r.loaded and r.name not in decided.unload
            and self.members[r.name].loaded_digest != self.members[r.name].digest
        ]  # fmt: skip
        for name in [*load_now, *reload]:
            changes.append(await self._act(servers, name, "reload" if name in reload else "load"))
        for r in residents:
            m = self.members[r.name]
            if r.name in load_now or r.name in reload or r.name in unload_now:
                continue  # _act said how it went
            if m.state == "Failed" and r.name not in decided.load:
                continue  # retried when the plan loads it again
            if r.loaded:
                if m.draining_since is not None:
                    m.state = "Draining"
                    m.message = "unloading to make room (least recently used); requests wait"
                else:
                    m.state, m.message = "Loaded", ""
            elif r.name in decided.waiting:
                m.state, m.message = "Unloaded", "waiting for room: " + decided.waiting[r.name]
            elif r.name in decided.load:
                m.state, m.message = "Loading", "loads once the members leaving have drained"
            else:
                m.state = "Unloaded"
                m.message = (
                    "unloaded to make room (least recently used); its next request loads it"
                    if m.message.startswith("unload")
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
