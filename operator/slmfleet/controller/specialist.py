"""SLMSpecialist handlers: render the children, apply what changed, report status.

kopf delivers the events; the per-specialist record lives in ``runtime.Store``; status
refreshes and retries are queued and drained by supervised loops (``loops.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.names import API_VERSION, MANAGED_BY, SPECIALISTS
from ..api.specialist import SLMSpecialistSpec
from ..clients.kube import ApiError
from ..render.conditions import merge_conditions, status_changed
from ..render.drift import needs_apply, stamp
from ..render.specialist import Owner, build_children
from ..render.specialist_status import specialist_status
from .adapters import adapter_keys, adapter_status_of, adapters_for, base_of
from .autoscaling import autoscaler_children, delete_unused, missing_kind
from .events import warn_stalled
from .pools import pooled
from .runtime import Key, Runtime, SpecialistState, key_of, newer, runtime
from .supervisor import Beat
from .workqueue import drain

log = logging.getLogger("slmfleet.specialist")

MANAGED = {
    "app.kubernetes.io/managed-by": MANAGED_BY,
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
    if spec.serving.pool:  # served by its pool (controller/pools.py), not on its own
        return None
    if spec.model.adapter is not None:  # served by its base's server (adapters.py)
        return None
    adapters = adapters_for(rt, owner.namespace, owner.name) if spec.model.backend == "vllm" else []

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

    configmap, *rest = build_children(
        owner,
        spec,
        fetcher_image=rt.config.fetcher_image,
        peers=rt.config.triton_peers,
        adapters=adapters,
    )
    # Modes hpa and keda: their object, and the other mode's deleted once the mode changes.
    autoscaler, unused = autoscaler_children(owner, spec, rt.config.prometheus_url)
    await converge(configmap)
    applied = await asyncio.gather(*(converge(child) for child in rest))
    state = rt.store.specialist((owner.namespace, owner.name))
    kind = autoscaler["kind"] if autoscaler else None
    if autoscaler is not None:
        try:
            await converge(autoscaler)
        except ApiError as err:
            raise missing_kind(err, autoscaler) from err
    if state.autoscaler_kind != kind and not new:
        await delete_unused(rt, unused)
    state.autoscaler_kind = kind
    # By what we asked for: bodies from a watch listing may carry no kind.
    return next(
        live for want, live in zip(rest, applied, strict=True) if want["kind"] == "Deployment"
    )


async def refresh_status(key: Key) -> None:
    """Recompute the status from the freshest Deployment we know; write only a change.

    Serialised per specialist so the last write always reflects the newest event.
    """
    rt = runtime()
    state = rt.store.specialists.get(key)
    if state is None:
        return
    async with state.status_lock:
        body = state.body
        if body is None or pooled(body):  # a pool member's status is the pool loop's
            return
        current = body.get("status") or {}
        generation = (
            state.reconciled if state.reconciled is not None else current.get("observedGeneration")
        )
        problem = (state.problem.reason, state.problem.message) if state.problem else None
        previous = next(
            (c.get("reason") for c in current.get("conditions") or [] if c.get("type") == "Ready"),
            None,
        )
        if base_of(body) and not state.error:
            desired = adapter_status_of(rt, key, body, previous)
        else:
            desired = specialist_status(
                name=key[1],
                namespace=key[0],
                generation=generation,
                deployment=state.deployment,
                error=state.error,
                problem=problem,
                previous_reason=previous,
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
        owned = desired["conditions"]
        desired["conditions"] = merge_conditions(current.get("conditions"), owned)
        try:
            updated = await rt.kube.patch_status("SLMSpecialist", key[0], key[1], desired)
        except ApiError as err:
            if err.status == 404:  # deleted meanwhile
                return
            raise
        # reconcile() posts ReconcileFailed itself, at every failed attempt.
        await warn_stalled(rt.kube, "SLMSpecialist", body, current.get("conditions"), owned,
                           already_reported=("ReconcileFailed",))  # fmt: skip
        if key in rt.store.specialists:
            rt.store.specialists[key].body = updated
        rt.fleet_dirty.set()


async def recreate_children(key: Key) -> None:
    """A child deleted by hand comes back; one deleted by garbage collection does not."""
    rt = runtime()
    state = rt.store.specialists.get(key)
    owner = state.body if state else None
    if state is None or owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    try:
        spec = SLMSpecialistSpec.model_validate(owner["spec"])
        meta = owner["metadata"]
        deployment = await apply_children(Owner(meta["name"], meta["namespace"], meta["uid"]), spec)
    except (ValidationError, ValueError, ApiError):
        return  # the next reconcile reports it
    if deployment is not None and state.deployment is None:
        state.deployment = deployment


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
    state = rt.store.specialists.get(key)
    if state is None:
        return
    async with state.reconcile_lock:
        body = state.body
        if body is None or not needs_reconcile(body, state.reconciled):
            return
        meta = body["metadata"]
        generation = meta.get("generation")
        dues = state.dues
        # Never reconciled and at its first generation: the children cannot exist yet.
        new = generation == 1 and not (body.get("status") or {}).get("observedGeneration")
        try:
            spec = SLMSpecialistSpec.model_validate(body["spec"])
            owner = Owner(meta["name"], meta["namespace"], meta["uid"])
            deployment = await apply_children(owner, spec, new=new)
        except (ValidationError, ValueError, ApiError) as err:
            # ValueError: a spec the operator's settings cannot serve (keda without the
            # Prometheus address); pydantic's ValidationError is one too.
            message = str(err).splitlines()[0] if isinstance(err, ValueError) else str(err)
            state.error = message
            if state.dues == dues:  # else made due again meanwhile: the next one renders
                state.reconciled = generation
            await refresh_status(key)
            kopf.warn(event_target(key, meta.get("uid")), reason="ReconcileFailed", message=message)
            if isinstance(err, ApiError):
                # Even a refusal (admission, quota) can lift without a spec change.
                schedule_retry(rt, key)
            return
        state.error = None
        state.attempts = 0
        if state.dues == dues:  # else made due again meanwhile: the next one renders
            state.reconciled = generation
        if deployment is not None and state.deployment is None:
            state.deployment = deployment
    # The Deployment's own events follow within moments: one coalesced write for all.
    schedule_refresh(rt, key)


def needs_reconcile(body: dict[str, Any], reconciled: int | None) -> bool:
    meta = body["metadata"]
    return not meta.get("deletionTimestamp") and meta.get("generation") != reconciled


def retry_delay(attempt: int) -> float:
    """Failed applies retry with exponential backoff capped at a minute (throttling and
    outages heal in seconds, refusals by admission when someone lifts them)."""
    return min(60.0, 2.0 ** (attempt - 1))


def schedule_retry(rt: Runtime, key: Key) -> None:
    state = rt.store.specialist(key)
    state.attempts += 1
    rt.retries.add(key, retry_delay(state.attempts))


async def retry(key: Key) -> None:
    """A queued retry: reconcile the same generation again if it is still failing (a
    new generation has been reconciled at once by its own event)."""
    rt = runtime()
    state = rt.store.specialists.get(key)
    if state is None or state.error is None or state.body is None:
        return
    if state.reconciled == state.body["metadata"].get("generation"):
        state.make_due()
        await reconcile(key)


def schedule_refresh(rt: Runtime, key: Key, delay: float | None = None) -> None:
    """Coalesce a burst of Deployment events (a rollout sends several within a second)
    into one status computation, so intermediate states cost no writes."""
    rt.refreshes.add(key, rt.config.status_delay_seconds if delay is None else delay)


async def _refresh_queued(key: Key) -> None:
    try:
        await refresh_status(key)
    except ApiError as err:  # the retries inside the client ran out: try again later
        log.warning("%s/%s: status not written, retrying: %s", *key, err)
        schedule_refresh(runtime(), key, 5.0)


async def status_loop(rt: Runtime, beat: Beat) -> None:
    """Drains the status refresh queue (supervised; see loops.py)."""
    await drain(rt.refreshes, _refresh_queued, beat)


async def retry_loop(rt: Runtime, beat: Beat) -> None:
    """Drains the retry queue (supervised; see loops.py)."""
    await drain(rt.retries, retry, beat, concurrency=8)


@kopf.on.event(*SPECIALISTS)
async def on_specialist(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    body = event["object"]
    key = key_of(body)
    if event["type"] == "DELETED":
        old = rt.store.specialists.get(key)
        rt.store.forget(key)
        rt.refreshes.discard(key)
        rt.retries.discard(key)
        rt.fleet_dirty.set()
        if base := base_of(old.body if old else body):
            await touch_base(rt, (key[0], base))
        return
    state = rt.store.specialist(key)
    if not newer(state.body, body):
        return
    old_base, state.body = base_of(state.body), body
    rt.fleet_dirty.set()
    due = needs_reconcile(body, state.reconciled)
    if due:
        await reconcile(key)
    for base in {old_base, base_of(body)} - {None}:
        if due or base != old_base:
            await touch_base(rt, (key[0], base))
    for adapter in adapter_keys(rt, key[0], key[1]):
        schedule_refresh(rt, adapter)  # the base appeared, changed or its status did


async def touch_base(rt: Runtime, base: Key) -> None:
    """An adapter came, changed or went: the base's children are rendered again (its
    multi_lora.json and fetchers), and the adapter's status follows."""
    state = rt.store.specialists.get(base)
    if state is not None and state.body is not None:
        state.make_due()
        await reconcile(base)
    for adapter in adapter_keys(rt, *base):
        schedule_refresh(rt, adapter)


def owner_key(
    body: dict[str, Any], specialists: Mapping[Key, SpecialistState] | None = None
) -> Key | None:
    """The specialist owning this child, matched by uid: anyone who can create a
    ConfigMap or Deployment may copy our labels and name a specialist as its owner, and
    a name alone would let it stand in for that specialist's children (faking its
    status) or grow the operator's cache without bound."""
    meta = body["metadata"]
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("kind") == "SLMSpecialist"), None)
    if owner is None:
        return None
    key = (meta["namespace"], owner.get("name"))
    table = runtime().store.specialists if specialists is None else specialists
    state = table.get(key)
    known = ((state.body or {}).get("metadata") or {}).get("uid") if state else None
    return key if known and owner.get("uid") == known else None


@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED)
async def track_child(event: kopf.RawEvent, resource: kopf.Resource, **_: Any) -> None:
    body = event["object"]
    key = owner_key(body)
    cache_child(event, resource, key)
    if key is not None and event["type"] == "DELETED":
        await recreate_children(key)
    if key is not None:  # a base's model ConfigMap lists its adapters
        for adapter in adapter_keys(runtime(), *key):
            schedule_refresh(runtime(), adapter)


CHILD_KINDS = {
    "configmaps": "ConfigMap",
    "services": "Service",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "networkpolicies": "NetworkPolicy",
    "deployments": "Deployment",
}


def cache_child(event: kopf.RawEvent, resource: kopf.Resource, owner: Key | None) -> None:
    """Cache the body of a child of a known specialist (``owner``, matched by uid); a
    look-alike is never cached (and evicts nothing but its own name's stale entry: what
    is not cached is read from the API server when needed)."""
    body = event["object"]
    meta = body["metadata"]
    ref = (CHILD_KINDS[resource.plural], meta["namespace"], meta["name"])
    children = runtime().store.children
    if event["type"] == "DELETED" or owner is None:
        children.pop(ref, None)
        return
    if newer(children.get(ref), body):
        children[ref] = body


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def track_deployment(event: kopf.RawEvent, resource: kopf.Resource, **_: Any) -> None:
    body = event["object"]
    key = owner_key(body)
    cache_child(event, resource, key)
    if key is None:
        return
    rt = runtime()
    if event["type"] == "DELETED":
        state = rt.store.specialists.get(key)
        if state is None:  # the owner is gone too: garbage collection at work
            return
        state.deployment = None
        await recreate_children(key)
    else:
        state = rt.store.specialist(key)
        if not newer(state.deployment, body):
            return
        state.deployment = body
    schedule_refresh(rt, key)
    for adapter in adapter_keys(rt, *key):
        schedule_refresh(rt, adapter)
