"""Process-wide state of the operator: its settings, API client, per-object records,
work queues and the supervisor of its loops.

Handlers are thin glue; what they share lives here, created at start-up and torn down
at clean-up, so tests can run several operators one after another in one process.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..api.names import BUDGETS, POLICIES, SPECIALISTS
from ..autoscale.targets import TargetConfig
from ..clients.kube import KubeClient
from ..render.fleet import Problem
from ..render.network import TritonPeers
from ..render.router_objects import RouterTarget
from ..render.specialist import DEFAULT_FETCHER_IMAGE
from .supervisor import Supervisor
from .workqueue import DelayQueue

__all__ = ["BUDGETS", "POLICIES", "SPECIALISTS"]

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class OperatorConfig:
    router_namespace: str
    router_configmap: str
    debounce_seconds: float = 0.2
    resync_seconds: float = 60.0
    status_delay_seconds: float = 1.0
    min_interval_seconds: float = 1.0
    budget_status_seconds: float = 2.0
    """Period of the Budget status loop (a spend change shows within it plus a write)."""
    fetcher_image: str = DEFAULT_FETCHER_IMAGE
    watch_namespaces: tuple[str, ...] = ()  # empty: every namespace
    router_service_account: str = ""
    """The router's ServiceAccount (in router_namespace); empty: no Secret grants."""
    peers: TritonPeers | None = None
    autoscaler: bool = True
    """Run the built-in autoscaler (SLMFLEET_AUTOSCALER=off: not at all)."""
    autoscaler_interval_seconds: float = 5.0
    """Seconds between its ticks (scrape, decide, act)."""
    scrape: TargetConfig = field(default_factory=TargetConfig)
    """Where it scrapes the router and Triton (see autoscale/targets.py)."""
    prometheus_url: str = ""
    """Prometheus address KEDA ScaledObjects query (mode keda); an operator setting."""

    @property
    def router(self) -> RouterTarget:
        return RouterTarget(
            self.router_namespace, self.router_configmap, self.router_service_account
        )

    @property
    def triton_peers(self) -> TritonPeers:
        return self.peers or TritonPeers(router_namespace=self.router_namespace)

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
            budget_status_seconds=float(os.environ.get("SLMFLEET_BUDGET_STATUS_SECONDS", "2.0")),
            fetcher_image=os.environ.get("SLMFLEET_FETCHER_IMAGE") or DEFAULT_FETCHER_IMAGE,
            watch_namespaces=tuple(
                n for n in os.environ.get("SLMFLEET_WATCH_NAMESPACES", "").split(",") if n
            ),
            router_service_account=os.environ.get("SLMFLEET_ROUTER_SERVICEACCOUNT", ""),
            peers=TritonPeers.from_environment(namespace),
            autoscaler=os.environ.get("SLMFLEET_AUTOSCALER", "on") != "off",
            autoscaler_interval_seconds=float(
                os.environ.get("SLMFLEET_AUTOSCALER_INTERVAL_SECONDS", "5")
            ),
            scrape=TargetConfig(
                router_urls=tuple(
                    u for u in os.environ.get("SLMFLEET_ROUTER_METRICS_URLS", "").split(",") if u
                ),
                router_service=os.environ.get("SLMFLEET_ROUTER_SERVICE", ""),
                triton=os.environ.get("SLMFLEET_TRITON_METRICS", "on") != "off",
                namespaces=tuple(
                    n for n in os.environ.get("SLMFLEET_WATCH_NAMESPACES", "").split(",") if n
                ),
            ),
            prometheus_url=os.environ.get("SLMFLEET_PROMETHEUS_URL", ""),
        )


@dataclass
class SpecialistState:
    """Everything the operator knows about one SLMSpecialist, in one record."""

    body: dict[str, Any] | None = None
    """Latest known body (watch events and our own write responses)."""
    deployment: dict[str, Any] | None = None
    """Latest known Deployment it owns."""
    reconciled: int | None = None
    """The generation whose children were last applied (or refused)."""
    dues: int = 0
    """How often the same generation was made due again (an adapter of this base came,
    changed or went; a retry): a reconcile that began before the latest does not mark
    the generation done, so the one queued behind it renders what is current."""
    error: str | None = None
    """Why the last apply failed, while it fails."""
    attempts: int = 0
    """Failed applies in a row (drives the retry backoff)."""
    problem: Problem | None = None
    """Why the fleet render leaves it out of the router configuration."""
    autoscaler_kind: str | None = "?"
    """The autoscaler object (HPA, ScaledObject) we last applied for it; "?" unknown
    (after a restart): the unused kinds are deleted once, then only on a mode change."""
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises status writes."""
    reconcile_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises reconciles (events and retries)."""

    def make_due(self) -> None:
        """Reconcile the current generation again (see ``dues``)."""
        self.dues += 1
        self.reconciled = None


class SpecCache:
    """Validated specs by (kind, namespace, name, generation), least recently used out:
    status changes do not re-validate, and memory stays bounded."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def get(self, key: tuple[Any, ...], make: Any) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


@dataclass
class Store:
    """Latest known state, fed by watch events and by our own write responses."""

    specialists: dict[Key, SpecialistState] = field(default_factory=dict)
    policies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[Key, dict[str, Any]] = field(default_factory=dict)
    children: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    """(kind, namespace, name) -> body of a child we own (watch cache)."""
    fragments: dict[str, str] = field(default_factory=dict)
    """Fragment ConfigMap name -> the data we know is live."""
    secret_grants: dict[str, list[str]] | None = None
    """Namespace -> Secrets the router's Role there grants (None: not listed yet)."""

    def specialist(self, key: Key) -> SpecialistState:
        return self.specialists.setdefault(key, SpecialistState())

    def bodies(self) -> dict[Key, dict[str, Any]]:
        return {k: s.body for k, s in self.specialists.items() if s.body is not None}

    def forget(self, key: Key) -> None:
        self.specialists.pop(key, None)


@dataclass
class Runtime:
    config: OperatorConfig
    kube: KubeClient
    store: Store = field(default_factory=Store)
    fleet_dirty: asyncio.Event = field(default_factory=asyncio.Event)
    refreshes: DelayQueue[Key] = field(default_factory=DelayQueue)
    """Specialists whose status is due to be recomputed."""
    retries: DelayQueue[Key] = field(default_factory=DelayQueue)
    """Specialists whose failed apply is due to be retried."""
    specs: SpecCache = field(default_factory=SpecCache)
    supervisor: Supervisor | None = None
    escalation_feeds: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Specialist id -> (policy, tier) escalations into it, from the last fleet render."""


_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the operator has not started")
    return _runtime


def newer(held: dict[str, Any] | None, body: dict[str, Any]) -> bool:
    """Whether ``body`` may replace ``held``: not when we already hold a newer version (a
    watch event can arrive after the response of our own, later, write)."""
    if held is None:
        return True
    try:
        return int(held["metadata"]["resourceVersion"]) <= int(body["metadata"]["resourceVersion"])
    except (KeyError, ValueError):  # resourceVersions are opaque in principle
        return True


def remember(
    table: dict[Key, dict[str, Any]], body: dict[str, Any], key: Key | None = None
) -> bool:
    """Store a body under its key (or ``key``) unless we already hold a newer version."""
    key = key or key_of(body)
    if not newer(table.get(key), body):
        return False
    table[key] = body
    return True


def key_of(body: dict[str, Any]) -> Key:
    meta = body["metadata"]
    return meta["namespace"], meta["name"]
