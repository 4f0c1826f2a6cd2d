"""The fleet-wide loop: every change to a specialist, policy or budget re-renders the
router configuration (debounced), writes the fragments that changed, deletes those of
objects that are gone, grants the router the Secrets each namespace's policies
reference, and reports the status of policies and budgets. One loop, not one task per
object; it runs under the supervisor (``loops.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.budget import BudgetSpec
from ..api.fragments import FRAGMENT_KEY, FRAGMENT_LABEL, fragment_name
from ..api.names import BUDGETS, POLICIES
from ..api.policy import RouterPolicySpec
from ..api.specialist import SLMSpecialistSpec
from ..autoscale.signals import escalation_feeds
from ..clients.kube import ApiError
from ..render.conditions import merge_conditions, status_changed
from ..render.fleet import FleetRender, Invalid, Item, render_fleet
from ..render.router_objects import (
    anchor_configmap,
    fragment_configmap,
    fragment_selector,
    secret_reader,
)
from .events import warn_stalled
from .runtime import Key, Runtime, key_of, remember, runtime
from .specialist import schedule_refresh
from .supervisor import Beat

log = logging.getLogger("slmfleet.fleet")

KIND_TABLE = {"RouterPolicy": "policies", "Budget": "budgets"}


def _items(
    rt: Runtime, kind: str, table: dict[Key, dict[str, Any]], model: Any
) -> tuple[list[Item], list[Invalid]]:
    items, invalid = [], []
    for (namespace, name), body in table.items():
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        generation = meta.get("generation")
        try:
            spec = rt.specs.get(
                (kind, namespace, name, generation),
                lambda b=body: model.model_validate(b.get("spec") or {}),
            )
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(["spec", *(str(p) for p in first["loc"])])
            invalid.append(Invalid(kind, namespace, name, generation, f"{where}: {first['msg']}"))
            continue
        items.append(
            Item(
                namespace=namespace,
                name=name,
                spec=spec,
                generation=generation,
                labels=meta.get("labels") or {},
                status=body.get("status") or {},
                created=meta.get("creationTimestamp", ""),
            )
        )
    return items, invalid


async def _examples(rt: Runtime, specialists: list[Item]) -> dict[tuple[str, str, str], Any]:
    """The ``examplesFrom`` keys, read from the specialist's own namespace only."""
    refs = {
        (s.namespace, s.spec.domain.examples_from.name, s.spec.domain.examples_from.key)
        for s in specialists
        if s.spec.domain.examples_from is not None
    }

    async def read(ref: tuple[str, str, str]) -> str | None:
        try:
            cm = await rt.kube.get("ConfigMap", ref[0], ref[1])
        except ApiError as err:
            if err.status >= 500 or err.status == 429:
                raise  # the API server is away or busy: the loop retries the round
            log.warning("examplesFrom %s/%s unreadable: %s", ref[0], ref[1], err)
            return None  # this specialist's problem (examples not found), nobody else's
        return ((cm or {}).get("data") or {}).get(ref[2])

    texts = await asyncio.gather(*(read(ref) for ref in sorted(refs)))
    return dict(zip(sorted(refs), texts, strict=True))


async def _secrets(rt: Runtime, policies: list[Item]) -> dict[tuple[str, str], bool]:
    """Whether each referenced Secret exists: its metadata only, never its data."""
    refs = sorted(
        {
            (p.namespace, t.external.api_key.name)
            for p in policies
            for t in p.spec.cascade
            if t.external is not None and t.external.api_key is not None
        }
    )

    async def exists(ref: tuple[str, str]) -> bool:
        return await rt.kube.get_metadata("Secret", *ref) is not None

    found = await asyncio.gather(*(exists(ref) for ref in refs))
    return dict(zip(refs, found, strict=True))


async def render(rt: Runtime) -> FleetRender:
    store = rt.store
    specialists, _ = _items(rt, "SLMSpecialist", store.bodies(), SLMSpecialistSpec)
    policies, bad_policies = _items(rt, "RouterPolicy", store.policies, RouterPolicySpec)
    budgets, bad_budgets = _items(rt, "Budget", store.budgets, BudgetSpec)
    return render_fleet(
        specialists,
        policies,
        budgets,
        await _examples(rt, specialists),
        secrets=await _secrets(rt, policies),
        invalid=[*bad_policies, *bad_budgets],
    )


async def ensure_anchor(rt: Runtime) -> str:
    """The uid of the ConfigMap that owns every fragment (created by the chart; by us
    when absent, e.g. without the chart)."""
    target = rt.config.router
    live = await rt.kube.get("ConfigMap", target.namespace, target.config_name)
    if live is None:
        live = await rt.kube.apply(anchor_configmap(target))
    return str(live["metadata"]["uid"])


async def write_fragments(rt: Runtime, rendered: FleetRender) -> tuple[int, int]:
    """Apply the fragments whose data changed, delete the ones no object needs."""
    target = rt.config.router
    live = rt.store.fragments
    owner = await ensure_anchor(rt)
    wanted: dict[str, Any] = {}
    for (kind, ident), frag in rendered.fragments.items():
        wanted[fragment_name(target.config_name, kind, ident)] = frag  # type: ignore[arg-type]
    changed = [name for name, frag in wanted.items() if live.get(name) != frag.encode()]

    async def put(name: str) -> None:
        body = await rt.kube.apply(fragment_configmap(wanted[name], target, owner))
        live[name] = (body.get("data") or {}).get(FRAGMENT_KEY, "")

    async def drop(name: str) -> None:
        await rt.kube.delete("ConfigMap", target.namespace, name)
        live.pop(name, None)

    stale = [name for name in live if name not in wanted]
    await asyncio.gather(*(put(n) for n in changed), *(drop(n) for n in stale))
    return len(changed), len(stale)


async def write_secret_grants(rt: Runtime, rendered: FleetRender) -> None:
    """Per namespace, a Role granting the router ``get`` on exactly the Secrets that
    namespace's policies reference (an empty Role where none are left)."""
    target = rt.config.router
    if not target.service_account:
        return  # no router ServiceAccount configured (a router outside the cluster)
    applied = rt.store.secret_grants or {}
    wanted = rendered.secret_grants
    for namespace in sorted(set(wanted) | set(applied)):
        names = wanted.get(namespace, [])
        if applied.get(namespace) == names:
            continue
        for obj in secret_reader(namespace, names, target):
            await rt.kube.apply(obj)
        applied[namespace] = names
    rt.store.secret_grants = applied


async def write_statuses(rt: Runtime, kind: str, statuses: dict[str, dict[str, Any]]) -> None:
    """Write the fields and conditions this loop owns. Each write applies only to the
    version it was merged into; when another writer (the Budget status loop, ...) got
    there first, the object is read again and merged again, never overwritten. A write
    that turns an object Stalled posts a Warning Event about it."""
    table: dict[Key, dict[str, Any]] = getattr(rt.store, KIND_TABLE[kind])
    for ident, owned in statuses.items():
        namespace, _, name = ident.partition("/")
        body = table.get((namespace, name))
        for attempt in (1, 2):
            if body is None:
                break
            current = body.get("status") or {}
            if not status_changed(current, owned):
                break
            desired = {
                **owned,
                "conditions": merge_conditions(current.get("conditions"), owned["conditions"]),
            }
            rv = (body.get("metadata") or {}).get("resourceVersion")
            try:
                table[(namespace, name)] = await rt.kube.patch_status(
                    kind, namespace, name, desired, resource_version=rv
                )
                await warn_stalled(rt.kube, kind, body, current.get("conditions"),
                                   owned["conditions"])  # fmt: skip
                break
            except ApiError as err:
                if err.status == 404:
                    break
                if err.status == 409 and attempt == 1:
                    body = await rt.kube.get(kind, namespace, name)
                    if body is not None:
                        remember(table, body)
                    continue
                if err.status >= 500 or err.status == 429:
                    raise  # the API server is away or busy: the loop retries the round
                # Refused for this object alone (a 422, a second conflict): say so and
                # go on, so no tenant's object keeps every later status from being written
                log.warning("%s %s: status not written: %s", kind, ident, err)
                break


def note_problems(rt: Runtime, rendered: FleetRender) -> None:
    """Hand each specialist's routing problem to its status writer (the one writer of
    its conditions), and refresh the ones whose problem changed."""
    for key, state in rt.store.specialists.items():
        problem = rendered.specialist_problems.get(f"{key[0]}/{key[1]}")
        if problem != state.problem:
            state.problem = problem
            schedule_refresh(rt, key, 0.0)


async def sync_once(rt: Runtime) -> None:
    rendered = await render(rt)
    rt.escalation_feeds = escalation_feeds(
        f.policy for f in rendered.fragments.values() if f.policy is not None
    )
    applied, deleted = await write_fragments(rt, rendered)
    if applied or deleted:
        log.info("router configuration: %d fragments written, %d deleted", applied, deleted)
    await write_secret_grants(rt, rendered)
    note_problems(rt, rendered)
    await write_statuses(rt, "RouterPolicy", rendered.policy_status)
    await write_statuses(rt, "Budget", rendered.budget_status)


async def fleet_loop(rt: Runtime, beat: Beat) -> None:
    """Debounced and rate-limited: a burst of events costs one render, and a fleet in
    rollout rewrites the router configuration at most once per min_interval. The API
    server being away is expected (retried here); anything else is a bug the supervisor
    restarts the loop for."""
    last = 0.0
    loop = asyncio.get_running_loop()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.fleet_dirty.wait(), timeout=rt.config.resync_seconds)
        wait = max(rt.config.debounce_seconds, last + rt.config.min_interval_seconds - loop.time())
        await asyncio.sleep(wait)
        rt.fleet_dirty.clear()
        last = loop.time()
        try:
            await sync_once(rt)
        except (ApiError, OSError) as err:  # the API server may be briefly away
            log.warning("fleet sync failed, retrying: %s", err)
            await asyncio.sleep(1.0)
            rt.fleet_dirty.set()
        beat()


async def prime(rt: Runtime) -> None:
    """List everything once, so the first render after a restart is complete and knows
    which fragments and grants already exist."""
    namespaces: tuple[str | None, ...] = rt.config.watch_namespaces or (None,)
    for namespace in namespaces:
        for body in await rt.kube.list("SLMSpecialist", namespace):
            state = rt.store.specialist(key_of(body))
            state.body = state.body or body
        for kind, table in KIND_TABLE.items():
            target: dict[Key, dict[str, Any]] = getattr(rt.store, table)
            for body in await rt.kube.list(kind, namespace):
                target.setdefault(key_of(body), body)
    router = rt.config.router
    for cm in await rt.kube.list("ConfigMap", router.namespace, fragment_selector(router)):
        rt.store.fragments[cm["metadata"]["name"]] = (cm.get("data") or {}).get(FRAGMENT_KEY, "")
    if router.service_account:
        try:
            roles = await rt.kube.list(
                "Role", None, field_selector=f"metadata.name={router.secrets_role}"
            )
        except ApiError as err:
            log.warning("cannot list the router's Secret Roles (%s); rewriting them", err)
            roles = []
        rt.store.secret_grants = {
            r["metadata"]["namespace"]: sorted(
                n for rule in r.get("rules") or [] for n in rule.get("resourceNames") or []
            )
            for r in roles
        }


def _render_inputs(body: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What the fleet render reads of an object besides its status."""
    if body is None:
        return None
    meta = body.get("metadata") or {}
    return (
        meta.get("generation"),
        meta.get("labels"),
        meta.get("deletionTimestamp"),
        meta.get("creationTimestamp"),
    )


def _tracker(table: str, *, status_changes_render: bool = True):  # type: ignore[no-untyped-def]
    async def track(event: kopf.RawEvent, **_: Any) -> None:
        rt = runtime()
        body = event["object"]
        store: dict[Key, dict[str, Any]] = getattr(rt.store, table)
        before = _render_inputs(store.get(key_of(body)))
        if event["type"] == "DELETED":
            store.pop(key_of(body), None)
        elif not remember(store, body):
            return
        elif not status_changes_render and before == _render_inputs(body):
            return  # a status write (the budget status loop's, every few seconds): no render
        rt.fleet_dirty.set()

    return track


track_policy = kopf.on.event(*POLICIES)(_tracker("policies"))
track_budget = kopf.on.event(*BUDGETS)(_tracker("budgets", status_changes_render=False))


@kopf.on.event("", "v1", "configmaps", labels={FRAGMENT_LABEL: kopf.PRESENT})
async def track_fragment(event: kopf.RawEvent, **_: Any) -> None:
    """A fragment edited or deleted by someone else is put back by the next render."""
    rt = runtime()
    body = event["object"]
    meta = body["metadata"]
    router = rt.config.router
    if meta.get("namespace") != router.namespace:
        return
    if (meta.get("labels") or {}).get(FRAGMENT_LABEL) != router.config_name:
        return
    name = meta["name"]
    data = None if event["type"] == "DELETED" else (body.get("data") or {}).get(FRAGMENT_KEY)
    if rt.store.fragments.get(name) != data:
        if data is None:
            rt.store.fragments.pop(name, None)
        else:
            rt.store.fragments[name] = data
        rt.fleet_dirty.set()
