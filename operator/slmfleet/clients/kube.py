"""A small async Kubernetes client for what the operator writes.

kopf watches; this client applies children with server-side apply (one field
manager), patches status subresources and reads. It is built on aiohttp (kopf's own
HTTP stack, whose pool stays cheap with hundreds of requests in flight) with the
credentials the official ``kubernetes`` package resolves (kubeconfig or in-cluster),
and counts its writes so benchmarks and tests can hold the operator to "no write when
nothing changed".
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections import Counter
from typing import Any

import aiohttp
import orjson
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from ..api.names import DNS_SUBDOMAIN, FIELD_MANAGER, GROUP, VERSION

USER_AGENT = "slmfleet-operator/0.1"
_CRDS = f"/apis/{GROUP}/{VERSION}"

#: kind -> (API path prefix, plural) for the kinds the operator touches.
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Secret": ("/api/v1", "secrets"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "SLMSpecialist": (_CRDS, "slmspecialists"),
    "RouterPolicy": (_CRDS, "routerpolicies"),
    "Budget": (_CRDS, "budgets"),
    "SLMPool": (_CRDS, "slmpools"),
    "Event": ("/api/v1", "events"),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "ScaledObject": ("/apis/keda.sh/v1alpha1", "scaledobjects"),
}
#: Only the metadata of an object (a Secret's existence without its data).
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_NAME = re.compile(DNS_SUBDOMAIN)


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str) -> None:
        self.status = status
        self.body = body
        try:
            self.message = json.loads(body).get("message", body)
        except ValueError:
            self.message = body
        super().__init__(f"{method} {path}: HTTP {status}: {self.message}")


def _transient(err: BaseException) -> bool:
    if isinstance(err, ApiError):
        return err.status == 429 or err.status >= 500
    return isinstance(err, aiohttp.ClientError | TimeoutError)


def _segment(value: str, what: str) -> str:
    """A namespace or a name, checked before it becomes part of a URL path.

    Names reach this client from user objects (``examplesFrom.name``, a Secret
    reference); the API models already refuse anything but Kubernetes names, and this
    refuses them again where the path is built: no ``/``, ``..``, ``%`` or query can
    ever take a request to another namespace or another resource.
    """
    if len(value) > 253 or not _NAME.fullmatch(value):
        raise ValueError(f"not a Kubernetes {what}: {value!r}")
    return value


def object_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    prefix, plural = KINDS[kind]
    if namespace is not None:
        namespace = _segment(namespace, "namespace")
    if name is not None:
        name = _segment(name, "name")
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


def _load_configuration() -> k8s_client.Configuration:
    cfg = k8s_client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        k8s_config.load_incluster_config(client_configuration=cfg)
    else:
        # The library reads KUBECONFIG once, at import; read it now.
        k8s_config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg
        )
    return cfg


class KubeClient:
    def __init__(
        self, host: str, ssl_context: ssl.SSLContext, headers: dict[str, str], timeout: float
    ) -> None:
        self._host = host
        self._ssl = ssl_context
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.writes: Counter[str] = Counter()

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily, inside the event loop that uses it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self._host,
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=64),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    @classmethod
    def from_environment(cls, *, timeout: float = 30.0, user_agent: str = USER_AGENT) -> KubeClient:
        cfg = _load_configuration()
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else None
        if ctx is None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {"User-Agent": user_agent}
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        if token:
            prefix = cfg.api_key_prefix.get("authorization", "")
            headers["Authorization"] = f"{prefix} {token}".strip()
        return cls(cfg.host, ctx, headers, timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @retry(
        retry=retry_if_exception(_transient),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        stop=stop_after_attempt(6),
        reraise=True,
    )
    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Every request is safe to repeat (reads, server-side apply, merge patches of
        whole values), so throttling, 5xx and dropped connections are retried."""
        async with self._http().request(method, path, **kwargs) as response:
            body = await response.read()
        if method != "GET":
            self.writes[method] += 1
        if response.status >= 400:
            raise ApiError(response.status, body.decode(errors="replace"), method, path)
        return orjson.loads(body)

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", object_path(kind, namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def get_metadata(
        self, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """An object's metadata only: the server never sends its data (used to check
        that a Secret exists without the operator ever receiving its value)."""
        try:
            return await self._request(
                "GET", object_path(kind, namespace, name), headers={"Accept": METADATA_ONLY}
            )
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else {}
        if field_selector:
            params["fieldSelector"] = field_selector
        items: list[dict[str, Any]] = []
        cont = None
        while True:
            if cont:
                params["continue"] = cont
            body = await self._request("GET", object_path(kind, namespace), params=params)
            items.extend(body.get("items", []))
            cont = body.get("metadata", {}).get("continue")
            if not cont:
                return items

    async def apply(self, obj: dict[str, Any], *, manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply, forcing ownership of the fields this manager declares."""
        meta = obj["metadata"]
        path = object_path(obj["kind"], meta.get("namespace"), meta["name"])
        return await self._request(
            "PATCH",
            path,
            params={"fieldManager": manager, "force": "true"},
            data=orjson.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )

    async def patch_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource (lists are replaced whole). With
        ``resource_version`` the write only applies to that version of the object (HTTP
        409 otherwise): a writer that merged into a list it read loses no other
        writer's entries."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._request(
            "PATCH",
            object_path(kind, namespace, name) + "/status",
            data=orjson.dumps(body),
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def patch_scale(
        self, kind: str, namespace: str, name: str, replicas: int
    ) -> dict[str, Any]:
        """Set spec.replicas through the scale subresource (what kubectl scale and an HPA
        write), so only the replica count is touched, whoever owns the rest."""
        return await self._request(
            "PATCH",
            object_path(kind, namespace, name) + "/scale",
            data=orjson.dumps({"spec": {"replicas": replicas}}),
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def apply_status(self, obj: dict[str, Any], *, manager: str) -> dict[str, Any]:
        """Server-side apply of the status subresource under ``manager``: the fields this
        manager sends are its own (a condition of a list-map by its type), the rest of the
        status is left to whoever owns it."""
        meta = obj["metadata"]
        return await self._request(
            "PATCH",
            object_path(obj["kind"], meta["namespace"], meta["name"]) + "/status",
            params={"fieldManager": manager, "force": "true"},
            data=orjson.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST a new object (e.g. an Event, named by metadata.generateName)."""
        path = object_path(obj["kind"], obj["metadata"].get("namespace"))
        return await self._request(
            "POST", path, data=orjson.dumps(obj), headers={"Content-Type": "application/json"}
        )

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        try:
            await self._request("DELETE", object_path(kind, namespace, name))
        except ApiError as err:
            if err.status != 404:
                raise
