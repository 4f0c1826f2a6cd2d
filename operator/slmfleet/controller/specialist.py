"""SLMSpecialist handlers: render the children, apply what changed, report status."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.base import API_VERSION
from ..api.specialist import SLMSpecialistSpec
from ..clients.kube import ApiError
from ..render import labels as L
from ..render.conditions import merge_conditions, status_changed
from ..render.drift import needs_apply, stamp
from ..render.specialist import Owner, build_children
from ..render.specialist_status import specialist_status
from .runtime import SPECIALISTS, Key, key_of, remember, runtime

log = logging.getLogger("slmfleet.specialist")

MANAGED = {
    "app.kubernetes.io/managed-by": L.MANAGED_BY,
    "app.kubernetes.io/component": "specialist",
}


async def apply_children(
    owner: Owner, spec: SLMSpecialistSpec, *, new: bool = False
) -> dict[str, Any] | None:
    """Apply every child that differs from what we want; return the live Deployment.

    What is live comes from the watch cache, else a GET; a new owner has no children
    yet, so nothing is read at all. The ConfigMap goes first (the Pods mount it), the
    rest together.
    """
    rt = runtime()

    async def converge(desired: dict[str, Any]) -> dict[str, Any]:
        stamped = stamp(desired)
        meta = stamped["metadata"]
        ref = (stamped["kind"], meta["namespace"], meta["name"])
        live = None if new else rt.store.children.get(ref)
        if live is None and not new:
            live = await rt.kube.get(*ref)
        if needs_apply(stamped, live):
            live = await rt.kube.apply(stamped)
        return live or stamped

    configmap, *rest = build_children(owner, spec, fetcher_image=rt.config.fetcher_image)
    await converge(configmap)
    applied = await asyncio.gather(*(converge(child) for child in rest))
    # By what we asked for: bodies from a watch listing may carry no kind.
    return next(
        live for want, live in zip(rest, applied, strict=True) if want["kind"] == "Deployment"
    )


async def refresh_status(key: Key) -> None:
    """Recompute the status from the freshest Deployment we know; write only a change.

    Serialised per specialist so the last write always reflects the newest event.
    """
    rt = runtime()
    async with rt.store.lock(key):
        body = rt.store.specialists.get(key)
        if body is None:
            return
        current = body.get("status") or {}
        generation = rt.store.reconciled.get(key, current.get("observedGeneration"))
        desired = specialist_status(
            name=key[1],
            namespace=key[0],
            generation=generation,
            deployment=rt.store.deployments.get(key),
            error=rt.store.errors.get(key),
        )
        if not status_changed(current, desired):
            return
        ready = desired["conditions"][0]
        log.info(
            "%s/%s status: Ready=%s (%s); changed: %s",
            *key,
            ready["status"],
            ready["reason"],
            sorted(k for k in desired if current.get(k) != desired[k] and k != "conditions"),
        )
        desired["conditions"] = merge_conditions(current.get("conditions"), desired["conditions"])
        try:
            updated = await rt.kube.patch_status("SLMSpecialist", key[0], key[1], desired)
        except ApiError as err:
            if err.status == 404:  # deleted meanwhile
                return
            raise
        rt.store.specialists[key] = updated
        rt.fleet_dirty.set()


async def recreate_children(key: Key) -> None:
    """A child deleted by hand comes back; one deleted by garbage collection does not."""
    rt = runtime()
    owner = rt.store.specialists.get(key)
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    try:
        spec = SLMSpecialistSpec.model_validate(owner["spec"])
        meta = owner["metadata"]
        deployment = await apply_children(Owner(meta["name"], meta["namespace"], meta["uid"]), spec)
    except (ValidationError, ApiError):
        return  # the next reconcile reports it
    if deployment is not None:
        rt.store.deployments.setdefault(key, deployment)


def event_target(key: Key, uid: str | None) -> dict[str, Any]:
    """What a Kubernetes Event is about (list items may lack apiVersion and kind)."""
    meta = {"namespace": key[0], "name": key[1], "uid": uid}
    return {"apiVersion": API_VERSION, "kind": "SLMSpecialist", "metadata": meta}


async def reconcile(key: Key) -> None:
    """Bring the children to the stored spec's generation, once per generation.

    Level-triggered: kopf's change detection (a diff-base annotation written on every
    object, a deep copy of every body) is not used, so user objects carry no operator
    bookkeeping and a generation is applied exactly once, whatever events arrive.
    """
    rt = runtime()
    async with rt.store.reconcile_lock(key):
        body = rt.store.specialists.get(key)
        if body is None or not needs_reconcile(body, rt.store.reconciled.get(key)):
            return
        meta = body["metadata"]
        generation = meta.get("generation")
        # Never reconciled and at its first generation: the children cannot exist yet.
        new = generation == 1 and not (body.get("status") or {}).get("observedGeneration")
        try:
            spec = SLMSpecialistSpec.model_validate(body["spec"])
            owner = Owner(meta["name"], meta["namespace"], meta["uid"])
            deployment = await apply_children(owner, spec, new=new)
        except (ValidationError, ApiError) as err:
            message = str(err).splitlines()[0] if isinstance(err, ValidationError) else str(err)
            rt.store.errors[key] = message
            rt.store.reconciled[key] = generation
            await refresh_status(key)
            kopf.warn(event_target(key, meta.get("uid")), reason="ReconcileFailed", message=message)
            if isinstance(err, ApiError):
                # Even a refusal (admission, quota) can lift without a spec change.
                schedule_retry(key, generation)
            return
        rt.store.errors.pop(key, None)
        rt.store.attempts.pop(key, None)
        rt.store.reconciled[key] = generation
        if deployment is not None and key not in rt.store.deployments:
            rt.store.deployments[key] = deployment
    # The Deployment's own events follow within moments: one coalesced write for all.
    schedule_refresh(key)


def needs_reconcile(body: dict[str, Any], reconciled: int | None) -> bool:
    meta = body["metadata"]
    return not meta.get("deletionTimestamp") and meta.get("generation") != reconciled


def schedule_retry(key: Key, generation: int | None) -> None:
    """Failed applies retry with exponential backoff capped at a minute (throttling and
    outages heal in seconds, refusals by admission when someone lifts them); a new
    generation retries at once."""
    rt = runtime()
    attempt = rt.store.attempts.get(key, 0) + 1
    rt.store.attempts[key] = attempt

    async def later() -> None:
        await asyncio.sleep(min(60.0, 2.0 ** (attempt - 1)))
        if rt.store.reconciled.get(key) == generation and key in rt.store.errors:
            rt.store.reconciled.pop(key, None)  # make the same generation due again
            await reconcile(key)

    spawn(later())


@kopf.on.event(*SPECIALISTS)
async def on_specialist(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    body = event["object"]
    key = key_of(body)
    if event["type"] == "DELETED":
        rt.store.forget(key)
        rt.fleet_dirty.set()
        return
    if not remember(rt.store.specialists, body):
        return
    rt.fleet_dirty.set()
    if needs_reconcile(body, rt.store.reconciled.get(key)):
        await reconcile(key)


def spawn(coro: Any) -> None:
    """A background task the operator cancels on clean-up."""
    rt = runtime()
    task = asyncio.create_task(coro)
    rt.background.add(task)
    task.add_done_callback(rt.background.discard)


def schedule_refresh(key: Key) -> None:
    """Coalesce a burst of Deployment events (a rollout sends several within a second)
    into one status computation, so intermediate states cost no writes."""
    rt = runtime()
    if key in rt.store.pending:
        return
    rt.store.pending.add(key)

    async def later() -> None:
        await asyncio.sleep(rt.config.status_delay_seconds)
        rt.store.pending.discard(key)
        try:
            await refresh_status(key)
        except ApiError as err:  # the retries inside the client ran out: try again later
            log.warning("%s/%s: status not written, retrying: %s", *key, err)
            schedule_refresh(key)

    spawn(later())


def owner_key(body: dict[str, Any]) -> Key | None:
    owners = body["metadata"].get("ownerReferences", [])
    owner = next((o for o in owners if o.get("kind") == "SLMSpecialist"), None)
    return (body["metadata"]["namespace"], owner["name"]) if owner else None


@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
async def track_child(event: kopf.RawEvent, resource: kopf.Resource, **_: Any) -> None:
    body = event["object"]
    cache_child(event, resource)
    key = owner_key(body)
    if key is not None and event["type"] == "DELETED":
        await recreate_children(key)


CHILD_KINDS = {
    "configmaps": "ConfigMap",
    "services": "Service",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "deployments": "Deployment",
}


def cache_child(event: kopf.RawEvent, resource: kopf.Resource) -> None:
    body = event["object"]
    meta = body["metadata"]
    ref = (CHILD_KINDS[resource.plural], meta["namespace"], meta["name"])
    children = runtime().store.children
    if event["type"] == "DELETED":
        children.pop(ref, None)
        return
    held = children.get(ref)
    if held is None or int(held["metadata"]["resourceVersion"]) <= int(meta["resourceVersion"]):
        children[ref] = body


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def track_deployment(event: kopf.RawEvent, resource: kopf.Resource, **_: Any) -> None:
    body = event["object"]
    cache_child(event, resource)
    key = owner_key(body)
    if key is None:
        return
    rt = runtime()
    if event["type"] == "DELETED":
        rt.store.deployments.pop(key, None)
        await recreate_children(key)
    elif not remember(rt.store.deployments, body, key):
        return
    schedule_refresh(key)
