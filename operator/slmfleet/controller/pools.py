"""SLMPools: render and apply each pool's children, keep its members resident, report.

One supervised loop (``pool-residency``, see loops.py) does it all every interval
(``SLMFLEET_POOL_INTERVAL_SECONDS``, 2 s): pools are few, and a loop that lists them
needs no watch of its own. Per pool it: places the members (``render.pool_status.pool_fit``),
applies the children (only what changed), finds the ready replicas (the pool Service's
EndpointSlices, port ``http``), reads the router's demand, ticks the ``PoolResidency``
(loads and unloads through Triton's repository API) and writes the pool's status and
each member's (a member SLMSpecialist has no Deployment: its status is written here).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import ValidationError

from ..api.pool import SLMPoolSpec
from ..api.specialist import SLMSpecialistSpec
from ..autoscale.scrape import Collector
from ..autoscale.targets import SERVICE_NAME_LABEL, discover, slice_urls
from ..clients.kube import ApiError
from ..pool.demand import demand
from ..pool.repository import Repository, RepositoryError
from ..pool.residency import PoolResidency
from ..render import labels as L
from ..render.conditions import merge_conditions, ready_set, status_changed
from ..render.drift import needs_apply, stamp
from ..render.pool import PoolMember, build_pool_children, member_digest, pool_child_name
from ..render.pool_status import (
    MemberView,
    capacity_of,
    claim_of,
    member_status,
    pool_fit,
    pool_status,
)
from ..render.specialist import Owner
from .events import warn_stalled
from .runtime import Key, Runtime
from .supervisor import Beat

log = logging.getLogger("slmfleet.pool")

#: A pool's replicas answer their repository index within this, or count as unreachable.
REACH_TIMEOUT_S = 3.0


@dataclass
class PoolState:
    residency: PoolResidency
    applied: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """Child ref -> the hash we last applied (no write when nothing changed)."""


def pooled(body: dict[str, Any] | None) -> str | None:
    """The pool a specialist body names (``spec.serving.pool``), if any."""
    return (((body or {}).get("spec") or {}).get("serving") or {}).get("pool")


def drain_seconds() -> float:
    """``SLMFLEET_POOL_DRAIN_SECONDS`` (5): how long a member chosen for unloading is
    not Ready before it goes; the router must have read that (status -> fleet render ->
    router ConfigMap) or a request could meet a model that is gone."""
    return float(os.environ.get("SLMFLEET_POOL_DRAIN_SECONDS", "5"))


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PoolController:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.pools: dict[Key, PoolState] = {}
        self.collector = Collector(timeout_s=2.0)
        self.session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        await self.collector.close()
        if self.session is not None:
            await self.session.close()

    def _members(self) -> dict[Key, list[tuple[str, str, dict[str, Any]]]]:
        """(namespace, pool) -> [(created, name, body)] of the specialists naming it."""
        out: dict[Key, list[tuple[str, str, dict[str, Any]]]] = {}
        for (ns, name), body in self.rt.store.bodies().items():
            pool = pooled(body)
            if pool and not body["metadata"].get("deletionTimestamp"):
                created = body["metadata"].get("creationTimestamp", "")
                out.setdefault((ns, pool), []).append((created, name, body))
        return {k: sorted(v, key=lambda t: (t[0], t[1])) for k, v in out.items()}

    async def tick(self) -> None:
        rt = self.rt
        pools: dict[Key, dict[str, Any]] = {}
        for namespace in rt.config.watch_namespaces or (None,):
            for body in await rt.kube.list("SLMPool", namespace):
                meta = body["metadata"]
                if not meta.get("deletionTimestamp"):
                    pools[(meta["namespace"], meta["name"])] = body
        members = self._members()
        if not pools and not members:
            return
        wanted: set[str] = set()
        used: set[str] = set()
        try:
            targets = await discover(rt.kube, rt.config.scrape)
            await self.collector.scrape(targets)
            sids = {
                f"{ns}/{n}": f"{ns}/{n}" for (ns, _p), ms in members.items() for _c, n, _b in ms
            }
            wanted, used = demand(self.collector, sids)
        except (ApiError, aiohttp.ClientError, OSError) as exc:
            log.warning("pool demand unavailable: %s", exc)
        for key, body in pools.items():
            try:
                await self._pool(key, body, members.get(key, []), wanted, used)
            except ApiError as err:
                log.warning("pool %s/%s: %s", *key, err)
            except Exception as err:  # one tenant's pool never fails the loop for all
                log.warning("pool %s/%s failed: %r", *key, err)
                await self._failed(key, body, "PoolError", f"{type(err).__name__}: {err}")
        for key in [k for k in self.pools if k not in pools]:
            del self.pools[key]
        for key, ms in members.items():
            if key not in pools:
                view = MemberView("", "PoolNotFound",
                                  f"spec.serving.pool: no SLMPool named {key[1]!r} in namespace "
                                  f"{key[0]}")  # fmt: skip
                for _c, name, mbody in ms:
                    try:
                        await self._write_member(key[0], name, key[1], mbody, view, 0)
                    except Exception as err:  # one member's write never stops the others
                        log.warning("pool member %s/%s: %r", key[0], name, err)

    async def _failed(self, key: Key, body: dict[str, Any], reason: str, message: str) -> None:
        """Say on the pool's own status why it is not reconciled (Ready False, Stalled)."""
        ns, name = key
        generation = body["metadata"].get("generation")
        owned = ready_set(False, reason, message[:1024], generation, stalled=True)
        current = body.get("status") or {}
        if not status_changed(current, {"conditions": owned}):
            return
        patch = {"conditions": merge_conditions(current.get("conditions"), owned)}
        try:
            await self.rt.kube.patch_status("SLMPool", ns, name, patch)
            await warn_stalled(self.rt.kube, "SLMPool", body, current.get("conditions"), owned)
        except Exception as err:
            log.warning("pool %s/%s: status not written: %s", ns, name, err)

    async def _pool(
        self,
        key: Key,
        body: dict[str, Any],
        joined: list[tuple[str, str, dict[str, Any]]],
        wanted: set[str],
        used: set[str],
    ) -> None:
        rt = self.rt
        ns, name = key
        meta = body["metadata"]
        generation = meta.get("generation")
        try:
            spec = SLMPoolSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            log.warning("pool %s/%s invalid: %s", ns, name, err)
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            await self._failed(key, body, "InvalidSpec", f"spec.{where}: {first['msg']}")
            return
        specs: list[tuple[str, SLMSpecialistSpec, dict[str, Any]]] = []
        invalid: dict[str, str] = {}
        for _c, member, mbody in joined:
            try:
                specs.append((member, SLMSpecialistSpec.model_validate(mbody["spec"]), mbody))
            except ValidationError as err:
                invalid[member] = str(err).splitlines()[0]
        fitted = pool_fit(name, spec, [(m, s) for m, s, _ in specs])
        placed = [PoolMember(m, s) for m, s, _ in specs if m in fitted.placed]
        owner = Owner(name, ns, meta["uid"], kind="SLMPool")
        state = self.pools.get(key)
        capacity, _ = capacity_of(spec)
        if state is None:
            state = self.pools[key] = PoolState(
                PoolResidency(name, capacity, clock=time.time, drain_s=drain_seconds())
            )
        state.residency.capacity = capacity
        deployment = await self._apply(state, owner, spec, placed)
        sizes = {m: claim_of(name, spec, m, s).bytes for m, s, _ in specs}
        state.residency.set_members(
            (m.name, sizes[m.name] or 0, member_digest(m, spec)) for m in placed
        )
        servers = await self._servers(ns, name)
        names = {f"{ns}/{m.name}": m.name for m in placed}
        try:
            await state.residency.tick(
                servers,
                {names[s] for s in wanted if s in names},
                {names[s] for s in used if s in names},
            )
        except RepositoryError as exc:
            for m in state.residency.members.values():
                m.state, m.message = "Pending", f"cannot reach the pool's replicas: {exc}"[:1000]
        views: dict[str, MemberView] = {}
        for m, _s, _b in specs:
            if m in fitted.refused:
                views[m] = MemberView(m, "Refused", fitted.refused[m], sizes.get(m))
            elif (r := state.residency.members.get(m)) is not None:
                views[m] = MemberView(m, r.state, r.message, r.bytes, r.last_load_seconds,
                                      _rfc3339(r.last_used))  # fmt: skip
        for m, message in invalid.items():
            views[m] = MemberView(m, "Refused", message)
        if not servers:
            for v in list(views.values()):
                if v.state in ("Pending", "Loading"):
                    views[v.name] = MemberView(v.name, "Pending", "no ready replica of the pool",
                                               v.bytes)  # fmt: skip
        desired = pool_status(name=name, namespace=ns, generation=generation, spec=spec,
                              deployment=deployment, fitted=fitted,
                              members=list(views.values()))  # fmt: skip
        current = body.get("status") or {}
        if status_changed(current, desired):
            owned = desired["conditions"]
            desired["conditions"] = merge_conditions(current.get("conditions"), owned)
            try:
                await rt.kube.patch_status("SLMPool", ns, name, desired)
                await warn_stalled(rt.kube, "SLMPool", body, current.get("conditions"), owned)
            except ApiError as err:
                if err.status != 404:
                    raise
        ready = (deployment or {}).get("status", {}).get("readyReplicas", 0)
        for m, _s, mbody in specs:
            await self._write_member(ns, m, name, mbody, views[m], ready)
        for m in invalid:
            mbody = next(b for _c, n, b in joined if n == m)
            await self._write_member(ns, m, name, mbody, views[m], ready)

    async def _apply(
        self, state: PoolState, owner: Owner, spec: SLMPoolSpec, placed: list[PoolMember]
    ) -> dict[str, Any] | None:
        rt = self.rt
        deployment = None
        for child in build_pool_children(owner, spec, placed, fetcher_image=rt.config.fetcher_image,
                                         peers=rt.config.triton_peers):  # fmt: skip
            stamped = stamp(child)
            meta = stamped["metadata"]
            ref = (stamped["kind"], meta["namespace"], meta["name"])
            want = meta["annotations"][L.APPLIED_HASH_ANNOTATION]
            live = None
            if state.applied.get(ref) != want or stamped["kind"] == "Deployment":
                live = await rt.kube.get(*ref)
                if needs_apply(stamped, live):
                    live = await rt.kube.apply(stamped)
                state.applied[ref] = want
            if stamped["kind"] == "Deployment":
                deployment = live
        return deployment

    async def _servers(self, ns: str, pool: str) -> list[Repository]:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=REACH_TIMEOUT_S)
            )
        slices = await self.rt.kube.list(
            "EndpointSlice", ns, f"{SERVICE_NAME_LABEL}={pool_child_name(pool)}"
        )
        urls = [u.removesuffix("/metrics") for u in slice_urls(slices, "http")]
        return [Repository(u, self.session) for u in urls]

    async def _write_member(
        self, ns: str, name: str, pool: str, body: dict[str, Any], view: MemberView, ready: int
    ) -> None:
        rt = self.rt
        desired = member_status(name=name, namespace=ns, pool=pool,
                                generation=body["metadata"].get("generation"), view=view,
                                ready_replicas=ready)  # fmt: skip
        current = body.get("status") or {}
        if not status_changed(current, desired):
            return
        owned = desired["conditions"]
        desired["conditions"] = merge_conditions(current.get("conditions"), owned)
        try:
            updated = await rt.kube.patch_status("SLMSpecialist", ns, name, desired)
        except ApiError as err:
            if err.status == 404:
                return
            raise
        await warn_stalled(rt.kube, "SLMSpecialist", body, current.get("conditions"), owned)
        state = rt.store.specialists.get((ns, name))
        if state is not None:
            state.body = updated
        rt.fleet_dirty.set()


async def pool_loop(rt: Runtime, beat: Beat) -> None:
    """Supervised (loops.py): one ``PoolController.tick`` per interval, then a beat."""
    interval = float(os.environ.get("SLMFLEET_POOL_INTERVAL_SECONDS", "2"))
    controller = PoolController(rt)
    loop = asyncio.get_running_loop()
    try:
        while True:
            started = loop.time()
            try:
                await controller.tick()
            except ApiError as err:  # the client's own retries ran out: next tick
                log.warning("pool loop: %s", err)
            beat()
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
    finally:
        await controller.close()
