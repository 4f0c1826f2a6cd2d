"""Process-wide state of the operator: its settings, API client and caches.

Handlers are thin glue; what they share lives here, created at start-up and torn down
at clean-up, so tests can run several operators one after another in one process.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from ..clients.kube import KubeClient
from ..render.specialist import DEFAULT_FETCHER_IMAGE

GROUP, VERSION = "slmfleet.io", "v1alpha1"
SPECIALISTS = (GROUP, VERSION, "slmspecialists")
POLICIES = (GROUP, VERSION, "routerpolicies")
BUDGETS = (GROUP, VERSION, "budgets")
Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class OperatorConfig:
    router_namespace: str
    router_configmap: str
    debounce_seconds: float = 0.2
    resync_seconds: float = 60.0
    status_delay_seconds: float = 1.0
    min_interval_seconds: float = 1.0
    fetcher_image: str = DEFAULT_FETCHER_IMAGE
    watch_namespaces: tuple[str, ...] = ()  # empty: every namespace

    @classmethod
    def from_environment(cls) -> OperatorConfig:
        ref = os.environ.get("SLMFLEET_ROUTER_CONFIGMAP", "slmfleet-system/slmfleet-router")
        namespace, _, name = ref.partition("/")
        return cls(
            router_namespace=namespace,
            router_configmap=name or "slmfleet-router",
            debounce_seconds=float(os.environ.get("SLMFLEET_DEBOUNCE_SECONDS", "0.2")),
            resync_seconds=float(os.environ.get("SLMFLEET_RESYNC_SECONDS", "60")),
            status_delay_seconds=float(os.environ.get("SLMFLEET_STATUS_DELAY_SECONDS", "1.0")),
            fetcher_image=os.environ.get("SLMFLEET_FETCHER_IMAGE") or DEFAULT_FETCHER_IMAGE,
            watch_namespaces=tuple(
                n for n in os.environ.get("SLMFLEET_WATCH_NAMESPACES", "").split(",") if n
            ),
        )


@dataclass
class Store:
    """Latest known bodies, fed by watch events and by our own write responses."""

    specialists: dict[Key, dict[str, Any]] = field(default_factory=dict)
    policies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[Key, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[Key, dict[str, Any]] = field(default_factory=dict)  # by owner
    children: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    reconciled: dict[Key, int] = field(default_factory=dict)  # owner -> generation applied
    errors: dict[Key, str] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    pending: set[Key] = field(default_factory=set)  # status refreshes scheduled
    attempts: dict[Key, int] = field(default_factory=dict)  # failed reconciles in a row
    reconcile_locks: dict[Key, asyncio.Lock] = field(default_factory=dict)

    def lock(self, key: Key) -> asyncio.Lock:
        """Serialises status writes of one specialist."""
        return self.locks.setdefault(key, asyncio.Lock())

    def reconcile_lock(self, key: Key) -> asyncio.Lock:
        """Serialises reconciles of one specialist (events and retries)."""
        return self.reconcile_locks.setdefault(key, asyncio.Lock())

    def forget(self, key: Key) -> None:
        for table in (self.specialists, self.deployments, self.reconciled, self.errors,
                      self.locks, self.reconcile_locks, self.attempts):  # fmt: skip
            table.pop(key, None)


@dataclass
class Runtime:
    config: OperatorConfig
    kube: KubeClient
    store: Store = field(default_factory=Store)
    fleet_dirty: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    background: set[asyncio.Task[Any]] = field(default_factory=set)


_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the operator has not started")
    return _runtime


def remember(
    table: dict[Key, dict[str, Any]], body: dict[str, Any], key: Key | None = None
) -> bool:
    """Store a body under its key (or ``key``) unless we already hold a newer version
    (a watch event can arrive after the response of our own, later, write)."""
    key = key or key_of(body)
    held = table.get(key)
    if held is not None:
        try:
            if int(held["metadata"]["resourceVersion"]) > int(body["metadata"]["resourceVersion"]):
                return False
        except (KeyError, ValueError):  # resourceVersions are opaque in principle
            pass
    table[key] = body
    return True


def key_of(body: dict[str, Any]) -> Key:
    meta = body["metadata"]
    return meta["namespace"], meta["name"]
