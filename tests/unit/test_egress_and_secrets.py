"""External tiers: the egress allow-list (checked at connect time) and Secret resolution
(confined to the reference's namespace; never an unauthenticated call)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket

import httpx
import pytest

from slmfleet.api.routerconfig import ExternalConfig
from slmfleet.router import secrets as S
from slmfleet.router.egress import EgressDenied, EgressPolicy, client
from slmfleet.router.errors import UpstreamError
from slmfleet.router.external import ExternalClients

PUBLIC = EgressPolicy.parse(["api.example.com", "*.llm.example.org"])
SVC = "10.96.0.0/12"  # a cluster's Service range


@pytest.mark.parametrize(
    ("policy", "url", "allowed"),
    [
        (PUBLIC, "https://api.example.com/v1/chat/completions", True),
        (PUBLIC, "https://API.Example.com./v1", True),
        (PUBLIC, "https://eu.llm.example.org/v1", True),
        (PUBLIC, "https://llm.example.org/v1", False),  # the wildcard is for subdomains
        (PUBLIC, "https://api.example.com.evil.net/v1", False),
        (PUBLIC, "http://api.example.com/v1", False),  # https only by default
        (PUBLIC, "https://169.254.169.254/latest/meta-data", False),
        (PUBLIC, "https://user:pw@api.example.com/v1", False),
        (PUBLIC, "ftp://api.example.com/", False),
        (EgressPolicy(), "https://api.example.com/v1", False),  # nothing allowed by default
        (EgressPolicy.parse([], ["203.0.113.0/24"]), "https://203.0.113.7/v1", True),
        (EgressPolicy.parse(["127.0.0.1"]), "https://127.0.0.1/v1", False),  # loopback
        (EgressPolicy.parse(["127.0.0.1"], ["127.0.0.1/32"]), "https://127.0.0.1/v1", True),
        (EgressPolicy.parse(["[::1]"]), "https://[::1]/v1", False),
        (EgressPolicy.parse(["x"], allow_http=True), "http://x/v1", True),
    ],
)
def test_urls(policy, url, allowed):
    if allowed:
        policy.check_url(url)
    else:
        with pytest.raises(EgressDenied) as err:
            policy.check_url(url)
        assert "example" not in str(err.value) and "169.254" not in str(err.value)


@pytest.mark.parametrize(
    ("address", "policy", "allowed"),
    [
        ("8.8.8.8", EgressPolicy(), True),
        ("169.254.169.254", EgressPolicy(), False),  # cloud metadata
        ("127.0.0.1", EgressPolicy(), False),
        ("10.0.0.1", EgressPolicy(), False),
        ("100.64.0.1", EgressPolicy(), False),  # shared address space
        ("fd00:ec2::254", EgressPolicy(), False),
        ("::ffff:127.0.0.1", EgressPolicy(), False),  # v4-mapped loopback
        ("0.0.0.0", EgressPolicy(), False),
        ("224.0.0.1", EgressPolicy(), False),
        ("10.0.0.1", EgressPolicy(allow_private=True), True),
        ("169.254.169.254", EgressPolicy(allow_private=True), True),
        ("10.96.0.10", EgressPolicy.parse(allow_private=True, cluster_cidrs=[SVC]), False),
        ("10.96.0.10", EgressPolicy.parse([], ["10.96.0.10/32"], cluster_cidrs=[SVC]), True),
        ("34.1.2.3", EgressPolicy.parse(cluster_cidrs=["34.0.0.0/8"]), False),  # public ranges
    ],
)
def test_addresses(address, policy, allowed):
    addr = ipaddress.ip_address(address)
    addr = getattr(addr, "ipv4_mapped", None) or addr
    if allowed:
        policy.check_address(addr)
    else:
        with pytest.raises(EgressDenied):
            policy.check_address(addr)


async def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time():
    """'localhost' is on the allow-list, yet it resolves to 127.0.0.1: the connection
    is refused when it is made, and no byte reaches the listener."""
    hits = 0

    async def serve(reader, writer):
        nonlocal hits
        hits += 1
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client(EgressPolicy.parse(["localhost"], allow_http=True)) as http:
            with pytest.raises(httpx.ConnectError) as err:
                await http.get(f"http://localhost:{port}/")
            assert "not allowed" in str(err.value)
        assert hits == 0
        async with client(EgressPolicy.parse(["localhost"], ["127.0.0.0/8"], allow_http=True)) as h:
            with pytest.raises(httpx.HTTPError):  # connected this time; the server hangs up
                await h.get(f"http://localhost:{port}/")
        assert hits == 1
    finally:
        server.close()
        await server.wait_closed()


def test_the_egress_client_ignores_proxies_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    http = client(EgressPolicy.parse(["api.example.com"]))
    assert http._trust_env is False and not http._mounts


# -- secrets ---------------------------------------------------------------------------


def ref(ns="team-a", name="llm", key="token"):
    return S.SecretRef(ns, name, key)


async def test_directory_resolver_is_confined_to_namespace_name_key(tmp_path):
    root = tmp_path / "secrets"
    (root / "team-a" / "llm").mkdir(parents=True)
    (root / "team-a" / "llm" / "token").write_text("sk-a\n")
    (tmp_path / "outside").write_text("not a key for you")
    (root / "team-a" / "llm" / "link").symlink_to(tmp_path / "outside")
    resolver = S.DirectorySecretResolver(root)
    assert await resolver.get(ref()) == "sk-a"
    for hostile in (ref(key="../../outside"), ref(name=".."), ref(ns="../team-a"),
                    ref(key="/etc/passwd"), ref(key="link"), ref(ns="team-b")):  # fmt: skip
        with pytest.raises(S.SecretUnavailable) as err:
            await resolver.get(hostile)
        assert "not for you" not in err.value.reason


async def test_a_file_that_is_not_a_key_is_never_sent(tmp_path):
    (tmp_path / "ns" / "s").mkdir(parents=True)
    (tmp_path / "ns" / "s" / "k").write_text("root:x:0:0:root:/root:/bin/bash\nbin:x:1:1\n")
    with pytest.raises(S.SecretUnavailable) as err:
        await S.DirectorySecretResolver(tmp_path).get(S.SecretRef("ns", "s", "k"))
    assert "root:" not in err.value.reason


class FakeApi:
    """Stands in for GET /api/v1/namespaces/<ns>/secrets/<name> (unit test of the cache)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.denied: set[tuple[str, str]] = set()
        self.down = False
        self.calls = 0

    def put(self, ns, name, **keys):
        self.secrets[(ns, name)] = {
            k: base64.b64encode(v.encode()).decode() for k, v in keys.items()
        }

    def __call__(self, ns, name):
        self.calls += 1
        if self.down:
            raise ConnectionError("API away")
        if (ns, name) in self.denied:
            raise PermissionError(name)
        return self.secrets.get((ns, name))


async def test_kube_resolver_caches_rotates_and_never_guesses():
    api, now = FakeApi(), [0.0]
    resolver = S.KubeSecretResolver(api, ttl=30, clock=lambda: now[0])
    api.put("team-a", "llm", token="sk-1")
    assert await resolver.get(ref()) == "sk-1"
    api.put("team-a", "llm", token="sk-2")
    assert await resolver.get(ref()) == "sk-1" and api.calls == 1  # cached
    now[0] = 31
    assert await resolver.get(ref()) == "sk-2"  # rotation, without a restart
    api.down = True
    now[0] = 62
    assert await resolver.get(ref()) == "sk-2"  # the API away: the known value
    api.down = False
    with pytest.raises(S.SecretUnavailable, match="no such key"):
        await resolver.get(ref(key="other"))
    with pytest.raises(S.SecretUnavailable, match="not found"):
        await resolver.get(ref(name="missing"))
    api.denied.add(("team-b", "llm"))
    for _ in range(3):
        with pytest.raises(S.SecretUnavailable, match="may not read"):
            await resolver.get(ref(ns="team-b"))
    assert api.calls == 6  # refusals are cached too: three requests, one GET


async def test_an_unreadable_key_fails_the_tier_without_calling_the_upstream():
    calls = []

    async def handler(request):
        calls.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})

    ext = ExternalClients(
        egress_policy=EgressPolicy.parse(["api.example.com"]),
        secret_resolver=S.KubeSecretResolver(FakeApi()),
    )
    ext._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    tier = ExternalConfig.model_validate(
        {"baseUrl": "https://api.example.com/v1", "model": "m",
         "apiKey": {"namespace": "team-a", "name": "llm", "key": "token"}}
    )  # fmt: skip
    with pytest.raises(UpstreamError) as err:
        await ext.chat(tier, [], max_tokens=None, sampling={}, timeout_s=1, request_id="r")
    assert "API key unavailable" in str(err.value) and not calls
    denied = ExternalConfig.model_validate(
        {"baseUrl": "https://metadata.internal/v1", "model": "m"}
    )
    with pytest.raises(UpstreamError) as err:
        await ext.chat(denied, [], max_tokens=None, sampling={}, timeout_s=1, request_id="r")
    assert "allow-list" in str(err.value) and "metadata.internal" not in str(err.value)
    await ext.close()


async def test_upstream_errors_never_echo_the_url_or_the_body():
    async def handler(request):
        return httpx.Response(401, text=f"bad key {request.headers['authorization']}")

    api = FakeApi()
    api.put("team-a", "llm", token="sk-secret")
    ext = ExternalClients(
        egress_policy=EgressPolicy.parse(["api.example.com"]),
        secret_resolver=S.KubeSecretResolver(api),
    )
    ext._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    tier = ExternalConfig.model_validate(
        {"baseUrl": "https://api.example.com/v1/secret-path", "model": "m",
         "apiKey": {"namespace": "team-a", "name": "llm", "key": "token"}}
    )  # fmt: skip
    with pytest.raises(UpstreamError) as err:
        await ext.chat(tier, [], max_tokens=None, sampling={}, timeout_s=1, request_id="r")
    text = str(err.value)
    assert text == "external tier: HTTP 401"
    await ext.close()


def test_socket_module_is_what_resolution_uses():
    # CheckedBackend resolves with the event loop's getaddrinfo (the system resolver);
    # a literal address skips resolution entirely.
    assert socket.getaddrinfo("127.0.0.1", 1)[0][4][0] == "127.0.0.1"
