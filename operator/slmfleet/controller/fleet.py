"""The fleet-wide loop: every change to a specialist, policy or budget re-renders the
router configuration (debounced), writes its ConfigMap if it changed, and reports the
status of policies and budgets. One loop, not one task per object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.budget import BudgetSpec
from ..api.policy import RouterPolicySpec
from ..api.routerconfig import CONFIG_KEY
from ..api.specialist import SLMSpecialistSpec
from ..clients.kube import ApiError
from ..render.conditions import merge_conditions, status_changed
from ..render.fleet import FleetRender, Item, render_fleet, router_configmap
from .runtime import BUDGETS, POLICIES, Key, Runtime, key_of, remember, runtime

log = logging.getLogger("slmfleet.fleet")

KIND_TABLE = {"RouterPolicy": "policies", "Budget": "budgets", "SLMSpecialist": "specialists"}


_SPECS: dict[tuple[str, str, str, int | None], Any] = {}


def _spec(model: Any, namespace: str, name: str, body: dict[str, Any]) -> Any:
    """Validated spec, cached by generation: status changes do not re-validate."""
    key = (model.__name__, namespace, name, body["metadata"].get("generation"))
    if key not in _SPECS:
        if len(_SPECS) > 100_000:
            _SPECS.clear()
        _SPECS[key] = model.model_validate(body.get("spec") or {})
    return _SPECS[key]


def _items(table: dict[Key, dict[str, Any]], model: Any) -> list[Item]:
    items = []
    for (namespace, name), body in table.items():
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        try:
            spec = _spec(model, namespace, name, body)
        except ValidationError as err:
            log.warning("skipping %s/%s: %s", namespace, name, err)
            continue
        items.append(
            Item(
                namespace=namespace,
                name=name,
                spec=spec,
                generation=meta.get("generation"),
                labels=meta.get("labels") or {},
                status=body.get("status") or {},
                created=meta.get("creationTimestamp", ""),
            )
        )
    return items


async def _examples(rt: Runtime, specialists: list[Item]) -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for item in specialists:
        ref = item.spec.domain.examples_from
        if ref is None:
            continue
        cm = await rt.kube.get("ConfigMap", item.namespace, ref.name)
        out[(item.namespace, ref.name, ref.key)] = ((cm or {}).get("data") or {}).get(ref.key, "")
    return out


async def render(rt: Runtime) -> FleetRender:
    store = rt.store
    specialists = _items(store.specialists, SLMSpecialistSpec)
    return render_fleet(
        specialists,
        _items(store.policies, RouterPolicySpec),
        _items(store.budgets, BudgetSpec),
        await _examples(rt, specialists),
    )


async def write_router_config(rt: Runtime, rendered: FleetRender) -> bool:
    cfg = rt.config
    desired = router_configmap(rendered.config, cfg.router_namespace, cfg.router_configmap)
    live = await rt.kube.get("ConfigMap", cfg.router_namespace, cfg.router_configmap)
    if live and (live.get("data") or {}).get(CONFIG_KEY) == desired["data"][CONFIG_KEY]:
        return False
    await rt.kube.apply(desired)
    return True


async def write_statuses(rt: Runtime, kind: str, statuses: dict[str, dict[str, Any]]) -> None:
    table: dict[Key, dict[str, Any]] = getattr(rt.store, KIND_TABLE[kind])
    for ident, desired in statuses.items():
        namespace, _, name = ident.partition("/")
        body = table.get((namespace, name))
        if body is None:
            continue
        current = body.get("status") or {}
        if not status_changed(current, desired):
            continue
        desired = {
            **desired,
            "conditions": merge_conditions(current.get("conditions"), desired["conditions"]),
        }
        try:
            table[(namespace, name)] = await rt.kube.patch_status(kind, namespace, name, desired)
        except ApiError as err:
            if err.status != 404:
                raise


async def sync_once(rt: Runtime) -> None:
    rendered = await render(rt)
    if await write_router_config(rt, rendered):
        log.info(
            "router configuration updated: %d policies, %d specialists, %d budgets",
            len(rendered.config.policies),
            len(rendered.config.specialists),
            len(rendered.config.budgets),
        )
    await write_statuses(rt, "RouterPolicy", rendered.policy_status)
    await write_statuses(rt, "Budget", rendered.budget_status)


async def fleet_loop(rt: Runtime) -> None:
    """Debounced and rate-limited: a burst of events costs one render, and a fleet in
    rollout rewrites the router configuration at most once per min_interval."""
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


async def prime(rt: Runtime) -> None:
    """List everything once, so the first render after a restart is complete."""
    namespaces: tuple[str | None, ...] = rt.config.watch_namespaces or (None,)
    for kind, table in KIND_TABLE.items():
        target: dict[Key, dict[str, Any]] = getattr(rt.store, table)
        for namespace in namespaces:
            for body in await rt.kube.list(kind, namespace):
                target.setdefault(key_of(body), body)


def _tracker(table: str):  # type: ignore[no-untyped-def]
    async def track(event: kopf.RawEvent, **_: Any) -> None:
        rt = runtime()
        body = event["object"]
        store: dict[Key, dict[str, Any]] = getattr(rt.store, table)
        if event["type"] == "DELETED":
            store.pop(key_of(body), None)
        elif not remember(store, body):
            return
        rt.fleet_dirty.set()

    return track


track_policy = kopf.on.event(*POLICIES)(_tracker("policies"))
track_budget = kopf.on.event(*BUDGETS)(_tracker("budgets"))
