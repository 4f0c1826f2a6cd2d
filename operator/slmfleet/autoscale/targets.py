"""Where the autoscaler scrapes: the router Pods and each specialist's Triton Pods.

Both come from EndpointSlices, listed once per tick with a label selector (the API
server filters; nothing is watched): the router Service's slices give the router Pods'
``metrics`` port, and the slices of every specialist's Service (labelled by the
operator, labels the EndpointSlice controller copies from the Service) give each Triton
Pod's ``metrics`` port. A router outside the cluster (``slmfleet up --cluster``, the
tests) is named by URL instead. The pure half turns slices into URLs (table-tested);
``discover`` does the listing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..render import labels as L
from .scrape import ScrapeTargets

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
METRICS_PORT_NAME = "metrics"
#: The specialists' Services (and so their EndpointSlices), as render/labels.py labels them.
SPECIALIST_SLICES = (
    f"app.kubernetes.io/managed-by={L.MANAGED_BY},app.kubernetes.io/component=specialist"
)


def slice_urls(
    slices: Iterable[Mapping[str, Any]], port_name: str = METRICS_PORT_NAME
) -> list[str]:
    """``http://address:port/metrics`` of every ready, non-terminating endpoint, sorted.

    A Pod that is not ready takes no traffic and one that terminates is leaving: neither
    is scraped (a router's missing scrape would hold every decision)."""
    urls: set[str] = set()
    for sl in slices:
        if sl.get("addressType") not in ("IPv4", "IPv6"):
            continue
        port = next(
            (p.get("port") for p in sl.get("ports") or [] if p.get("name") == port_name), None
        )
        if not port:
            continue
        v6 = sl["addressType"] == "IPv6"
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating") is True:
                continue
            for addr in ep.get("addresses") or []:
                host = f"[{addr}]" if v6 else addr
                urls.add(f"http://{host}:{port}/metrics")
    return sorted(urls)


def triton_urls(slices: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Specialist id (``namespace/name``) -> its Triton Pods' metrics URLs."""
    by_specialist: dict[str, list[Mapping[str, Any]]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        name = (meta.get("labels") or {}).get(L.SPECIALIST_LABEL)
        if name and meta.get("namespace"):
            by_specialist.setdefault(f"{meta['namespace']}/{name}", []).append(sl)
    return {sid: slice_urls(group) for sid, group in sorted(by_specialist.items())}


class SliceLister(Protocol):
    async def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class TargetConfig:
    """Where the operator finds what to scrape (operator settings, never a tenant's)."""

    router_urls: tuple[str, ...] = ()
    """Router /metrics URLs given directly (a router outside the cluster)."""
    router_service: str = ""
    """``namespace/name`` of the router Service whose Pods are scraped (the chart's)."""
    triton: bool = True
    """Also scrape the specialists' Triton Pods (queue time)."""
    namespaces: Sequence[str] = ()
    """Namespaces the operator watches (empty: all)."""


async def discover(kube: SliceLister, config: TargetConfig) -> ScrapeTargets:
    """This tick's targets. Raises on API errors: the loop holds every specialist and
    says why (MetricsUnavailable), it never mistakes an outage for a lull."""
    if config.router_urls:
        router = list(config.router_urls)
    elif config.router_service:
        namespace, _, name = config.router_service.partition("/")
        slices = await kube.list("EndpointSlice", namespace, f"{SERVICE_NAME_LABEL}={name}")
        router = slice_urls(slices)
        if not router:
            return ScrapeTargets(
                router=(), unavailable=f"no ready router Pod behind Service {namespace}/{name}"
            )
    else:
        return ScrapeTargets(
            router=(),
            unavailable="no router to scrape: the operator has neither "
            "SLMFLEET_ROUTER_SERVICE nor SLMFLEET_ROUTER_METRICS_URLS",
        )
    triton: dict[str, list[str]] = {}
    if config.triton:
        slices = []
        for namespace in config.namespaces or (None,):
            slices += await kube.list("EndpointSlice", namespace, SPECIALIST_SLICES)
        triton = triton_urls(slices)
    return ScrapeTargets(router=router, triton=triton)
