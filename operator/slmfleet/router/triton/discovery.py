"""Which Pods serve a specialist: the EndpointSlices of the Service its endpoint names.

In a cluster the operator renders each specialist's ``endpoint`` as its headless
Service's DNS name, ``<service>.<namespace>.svc:<port>``. The router watches that
Service's EndpointSlices (``discovery.k8s.io/v1``, label
``kubernetes.io/service-name=<service>``, in the Service's namespace: list, then watch
from the list's resourceVersion, re-listing when the watch expires or fails) and hands
the ready, non-terminating Pod addresses to the pool, which balances every request
over them. One watch per namespace covers every tracked Service in it.

Until the first list answers (or when the API refuses it), the pool keeps using the DNS
name itself, so a router without the RBAC for EndpointSlices still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

log = logging.getLogger("slmfleet.router")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: The Service port (name) of Triton's gRPC endpoint; see render/specialist.py.
GRPC_PORT_NAME = "grpc"
WATCH_TIMEOUT_S = 300
_DNS = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SERVICE_ENDPOINT = re.compile(
    rf"^(?P<name>{_DNS})\.(?P<namespace>{_DNS})\.svc(\.[a-z0-9.-]+)?\.?:(?P<port>\d{{1,5}})$"
)
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str
    port: int


def service_of(endpoint: str) -> ServiceRef | None:
    """The Service an endpoint names (``name.namespace.svc[.domain]:port``), else None."""
    m = _SERVICE_ENDPOINT.match(endpoint)
    if m is None:
        return None
    return ServiceRef(m["namespace"], m["name"], int(m["port"]))


def _slice_port(ports: list[Mapping[str, Any]], service_port: int) -> int | None:
    """The slice's gRPC port: the one named like the Service port, else the only one,
    else one equal to the Service port (a Service port and its target may differ)."""
    for p in ports:
        if p.get("name") == GRPC_PORT_NAME and p.get("port"):
            return int(p["port"])
    if len(ports) == 1 and ports[0].get("port"):
        return int(ports[0]["port"])
    for p in ports:
        if p.get("port") == service_port:
            return service_port
    return None


def ready_addresses(slices: Iterable[Mapping[str, Any]], service_port: int) -> list[str]:
    """``host:port`` of every ready, non-terminating endpoint of the slices, sorted.

    An unset ``ready`` counts as ready (the API's "unknown"); terminating endpoints are
    left out so a Pod that is going away stops getting new requests (the pool drains it).
    """
    out: set[str] = set()
    for sl in slices:
        port = _slice_port(sl.get("ports") or [], service_port)
        if port is None or sl.get("addressType") not in ("IPv4", "IPv6"):
            continue
        v6 = sl["addressType"] == "IPv6"
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating") is True:
                continue
            for addr in ep.get("addresses") or []:
                out.add(f"[{addr}]:{port}" if v6 else f"{addr}:{port}")
    return sorted(out)


# ---- API access --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiAccess:
    """How to reach the API server: base URL, TLS, and a bearer token (read per call,
    since in-cluster tokens rotate) or a client certificate."""

    base_url: str
    verify: str | bool = True
    cert: tuple[str, str] | None = None
    token: str | None = None
    token_file: str | None = None

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file:
            with contextlib.suppress(OSError):
                token = Path(self.token_file).read_text().strip()
        return {"authorization": f"Bearer {token}"} if token else {}


def in_cluster_access() -> ApiAccess | None:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not host or not (SA_DIR / "token").is_file():
        return None
    if ":" in host:
        host = f"[{host}]"
    return ApiAccess(
        f"https://{host}:{port or 443}",
        verify=str(SA_DIR / "ca.crt"),
        token_file=str(SA_DIR / "token"),
    )


def kubeconfig_access(path: str | None = None) -> ApiAccess:
    """From a kubeconfig (``KUBECONFIG`` or ~/.kube/config), via the kubernetes client's
    own loader (it resolves contexts, embedded certificates and tokens)."""
    from kubernetes.client import Configuration
    from kubernetes.config import kube_config

    cfg = Configuration()
    kube_config.load_kube_config(config_file=path, client_configuration=cfg)
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    token = auth.split(" ", 1)[1] if auth and " " in auth else auth
    return ApiAccess(
        cfg.host,
        verify=(cfg.ssl_ca_cert or True) if cfg.verify_ssl else False,
        cert=(cfg.cert_file, cfg.key_file) if cfg.cert_file and cfg.key_file else None,
        token=token,
    )


def default_access() -> ApiAccess | None:
    """In-cluster credentials, else the kubeconfig, else None (no discovery)."""
    access = in_cluster_access()
    if access is not None:
        return access
    try:
        return kubeconfig_access()
    except Exception as exc:  # no kubeconfig: not in a cluster
        log.info("no Kubernetes credentials, EndpointSlice discovery off: %s", exc)
        return None


# ---- the watch ---------------------------------------------------------------------------

OnChange = Callable[[list[str]], None]


class EndpointSlices:
    """Watches the EndpointSlices of tracked Services; see the module docstring."""

    def __init__(
        self,
        access: ApiAccess,
        *,
        backoff_max_s: float = 30.0,
        map_address: Callable[[str], str] | None = None,
    ) -> None:
        self.access = access
        self.backoff_max_s = backoff_max_s
        self.map_address = map_address
        """Rewrites each discovered ``host:port`` before use (a router that reaches Pods
        through a translation of its own; the tests, whose Pods listen on loopback,
        which the API server refuses in EndpointSlices)."""
        self._subs: dict[str, tuple[ServiceRef, OnChange]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._client: httpx.AsyncClient | None = None
        self.lists = 0
        """Successful lists so far (tests wait on it)."""

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.access.base_url,
                verify=self.access.verify,
                cert=self.access.cert,
                timeout=httpx.Timeout(10.0, read=WATCH_TIMEOUT_S + 30),
            )
        return self._client

    def track(self, endpoint: str, on_change: OnChange) -> bool:
        ref = service_of(endpoint)
        if ref is None:
            return False
        self._subs[endpoint] = (ref, on_change)
        self._restart(ref.namespace)
        return True

    def untrack(self, endpoint: str) -> None:
        sub = self._subs.pop(endpoint, None)
        if sub is not None:
            self._restart(sub[0].namespace)

    def _restart(self, namespace: str) -> None:
        old = self._tasks.pop(namespace, None)
        if old is not None:
            old.cancel()
        if any(ref.namespace == namespace for ref, _ in self._subs.values()):
            self._tasks[namespace] = asyncio.get_running_loop().create_task(
                self._run(namespace), name=f"endpointslices/{namespace}"
            )

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- one namespace ------------------------------------------------------------------
    def _selector(self, namespace: str) -> str:
        names = sorted({ref.name for ref, _ in self._subs.values() if ref.namespace == namespace})
        return f"{SERVICE_NAME_LABEL} in ({','.join(names)})"

    def _publish(self, namespace: str, slices: Mapping[str, Mapping[str, Any]]) -> None:
        for ref, on_change in list(self._subs.values()):
            if ref.namespace != namespace:
                continue
            mine = [
                s
                for s in slices.values()
                if (s.get("metadata", {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == ref.name
            ]
            addresses = ready_addresses(mine, ref.port)
            if self.map_address is not None:
                addresses = [self.map_address(a) for a in addresses]
            on_change(addresses)

    async def _run(self, namespace: str) -> None:
        path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        selector = self._selector(namespace)
        backoff = 1.0
        while True:
            try:
                slices, rv = await self._list(path, selector)
                self.lists += 1
                backoff = 1.0
                self._publish(namespace, slices)
                while True:  # watch until it expires (410 or timeout), then re-list
                    rv = await self._watch(path, selector, rv, slices, namespace)
                    if rv is None:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("EndpointSlices in %s: %s (retrying in %.0fs)", namespace, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(self.backoff_max_s, backoff * 2)

    async def _list(self, path: str, selector: str) -> tuple[dict[str, Any], str]:
        r = await self._http().get(
            path, params={"labelSelector": selector}, headers=self.access.headers()
        )
        r.raise_for_status()
        body = r.json()
        slices = {s["metadata"]["name"]: s for s in body.get("items") or []}
        return slices, body["metadata"]["resourceVersion"]

    async def _watch(
        self, path: str, selector: str, rv: str, slices: dict[str, Any], namespace: str
    ) -> str | None:
        """Apply watch events to ``slices``; the resourceVersion to resume from, or None
        when a re-list is needed."""
        params = {
            "labelSelector": selector,
            "watch": "1",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        async with self._http().stream(
            "GET", path, params=params, headers=self.access.headers()
        ) as r:
            if r.status_code == 410:
                return None
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line:
                    continue
                ev = orjson.loads(line)
                kind, obj = ev.get("type"), ev.get("object") or {}
                if kind == "ERROR":
                    return None  # e.g. 410 Gone: the resourceVersion is too old
                rv = obj.get("metadata", {}).get("resourceVersion", rv)
                if kind == "BOOKMARK":
                    continue
                name = obj["metadata"]["name"]
                if kind == "DELETED":
                    slices.pop(name, None)
                else:
                    slices[name] = obj
                self._publish(namespace, slices)
        return rv
