"""Secret resolution for external tiers: a reference resolves in its own namespace only.

A RouterPolicy's ``apiKey: {name, key}`` used to be joined into a file path under a
directory where the chart mounted *every* team's Secrets: absolute and ``..`` keys read
any file of the container, and any team could name any other team's mounted Secret.
Now a reference is (namespace, name, key), the namespace set by the operator to the
policy's own, and resolved by one of two resolvers with the same confinement:

* :class:`KubeSecretResolver` (in a cluster): a GET of that one Secret through the
  Kubernetes API, as the router's ServiceAccount, which the operator grants ``get`` on
  exactly the Secrets each namespace's policies reference (a Role per namespace,
  ``resourceNames``). Values are cached for ``ttl`` seconds, so a rotated key is used
  within a TTL, without a restart.
* :class:`DirectorySecretResolver` (``slmfleet up``): ``<root>/<namespace>/<name>/<key>``
  files written from the Secret manifests of the folder; names are checked against the
  Kubernetes patterns and the resolved path must stay inside ``root``.

Either way a missing Secret, key or permission is a :class:`SecretUnavailable` with a
reason that names the reference (never the value): the caller fails the tier rather
than call the upstream unauthenticated. A value with control characters is refused
(it could only be a file that is not a key, or an attempt at header injection).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..api.names import CONFIG_KEY, DNS_LABEL, DNS_SUBDOMAIN

_NAMESPACE = re.compile(DNS_LABEL)
_NAME = re.compile(DNS_SUBDOMAIN)
_KEY = re.compile(CONFIG_KEY)
#: Printable ASCII without spaces: what an API key can be, and what an HTTP header takes.
_TOKEN = re.compile(r"^[\x21-\x7e]{1,8192}$")


class SecretUnavailable(Exception):
    """The referenced Secret cannot be used; ``reason`` is safe to show and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SecretRef:
    namespace: str
    name: str
    key: str

    def __str__(self) -> str:
        return f"Secret {self.namespace}/{self.name} key {self.key}"

    def checked(self) -> SecretRef:
        if not (
            _NAMESPACE.fullmatch(self.namespace)
            and len(self.name) <= 253
            and _NAME.fullmatch(self.name)
            and len(self.key) <= 253
            and _KEY.fullmatch(self.key)
        ):
            raise SecretUnavailable("malformed Secret reference")
        return self


def of(ref: Any) -> SecretRef:
    """A SecretRef from the router configuration's ``SecretRefConfig``."""
    return SecretRef(ref.namespace, ref.name, ref.key).checked()


def usable(value: str, ref: SecretRef) -> str:
    value = value.strip()
    if not _TOKEN.fullmatch(value):
        raise SecretUnavailable(f"{ref}: the value is not a usable API key")
    return value


class SecretResolver(Protocol):
    async def get(self, ref: SecretRef) -> str:
        """The value, or SecretUnavailable."""
        ...

    async def close(self) -> None: ...


class DirectorySecretResolver:
    """``<root>/<namespace>/<name>/<key>``: the local equivalent of the API's Secrets."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _read(self, ref: SecretRef) -> str:
        path = (self.root / ref.namespace / ref.name / ref.key).resolve()
        if not path.is_relative_to(self.root):  # a symlink pointing out of the root
            raise SecretUnavailable(f"{ref}: not found")
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError):
            raise SecretUnavailable(f"{ref}: not found") from None

    async def get(self, ref: SecretRef) -> str:
        ref = ref.checked()
        return usable(await asyncio.to_thread(self._read, ref), ref)

    async def close(self) -> None:
        return None


Fetch = Callable[[str, str], Any]
"""(namespace, name) -> the Secret's ``data`` map (base64 values), None if absent;
raises PermissionError when the router may not read it."""


@dataclass
class _Cached:
    data: dict[str, str] | None
    at: float
    denied: bool = False


class KubeSecretResolver:
    """Secrets through the Kubernetes API, one GET per Secret per ``ttl``."""

    def __init__(
        self,
        fetch: Fetch | None = None,
        *,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch or _kube_fetch()
        self.ttl = ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _fresh(self, where: tuple[str, str], ref: SecretRef) -> _Cached | None:
        hit = self._cache.get(where)
        if hit is None or self._clock() - hit.at >= self.ttl:
            return None
        if hit.denied:
            raise SecretUnavailable(f"{ref}: the router may not read it")
        return hit

    async def _data(self, ref: SecretRef) -> dict[str, str] | None:
        """Cached per (namespace, name) for ``ttl``, answers and refusals alike, so a
        burst of requests costs the API server one GET."""
        where = (ref.namespace, ref.name)
        hit = self._fresh(where, ref)
        if hit is not None:
            return hit.data
        async with self._locks.setdefault(where, asyncio.Lock()):
            hit = self._fresh(where, ref)
            if hit is not None:
                return hit.data
            stale = self._cache.get(where)
            try:
                data = await asyncio.to_thread(self._fetch, ref.namespace, ref.name)
            except PermissionError:
                self._cache[where] = _Cached(None, self._clock(), denied=True)
                raise SecretUnavailable(f"{ref}: the router may not read it") from None
            except Exception:
                if stale is not None and not stale.denied:  # API away: keep the known value
                    return stale.data
                raise SecretUnavailable(f"{ref}: the Kubernetes API is unavailable") from None
            self._cache[where] = _Cached(data, self._clock())
            if len(self._cache) > 10_000:  # bounded by the configuration in practice
                self._cache.pop(next(iter(self._cache)))
            return data

    async def get(self, ref: SecretRef) -> str:
        ref = ref.checked()
        data = await self._data(ref)
        if data is None:
            raise SecretUnavailable(f"{ref}: not found")
        encoded = data.get(ref.key)
        if encoded is None:
            raise SecretUnavailable(f"{ref}: no such key")
        try:
            value = base64.b64decode(encoded, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise SecretUnavailable(f"{ref}: the value is not a usable API key") from None
        return usable(value, ref)

    async def close(self) -> None:
        return None


def _kube_fetch() -> Fetch:
    """A fetch through the official client, with in-cluster or kubeconfig credentials."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CoreV1Api()

    def fetch(namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = api.read_namespaced_secret(name, namespace, _request_timeout=5)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                raise PermissionError(name) from None
            raise
        return dict(secret.data or {})

    return fetch


class NoSecrets:
    """No resolver configured: every reference is unavailable (never unauthenticated)."""

    async def get(self, ref: SecretRef) -> str:
        raise SecretUnavailable(f"{ref}: no Secret source is configured")

    async def close(self) -> None:
        return None
