"""Hostile requests against the real router of ``hostile_fleet``: each is refused with a
clear (OpenAI-style, when the router answers it) error, or contained, and none reveals
a URL, a key or another tenant's data; the fleet keeps serving after the lot.

Requests that need timing or many connections (slowloris, slow bodies, the in-flight
cap, rate limits) are in test_hostile_tenants.py; this is the one-shot corpus.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass, field

import httpx
import pytest

from tests.fixtures.hostile import KEYS, POD_ADDR, ROUTER_ADDR

pytestmark = pytest.mark.integration

KEY = {"authorization": f"Bearer {KEYS['corpus']}"}
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes | None = None
    status: tuple[int, ...] = (400,)
    path: str = "/v1/chat/completions"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {**KEY, **JSON})
    code: str | None = None
    """The OpenAI error code expected, when the router answers."""


def chat(model: str = "{support}", **extra: object) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "a refund please"}]}
    return json.dumps({**body, **extra}).encode()


def messages(*msgs: object, model: str = "{support}") -> bytes:
    return json.dumps({"model": model, "messages": list(msgs)}).encode()


CASES = [
    # who may call
    Case("no-api-key", chat(), (401,), headers=JSON, code="invalid_api_key"),
    Case("wrong-api-key", chat(), (401,), headers={"authorization": "Bearer nope", **JSON}),
    Case("basic-auth", chat(), (401,), headers={"authorization": "Basic a2V5OmtleQ==", **JSON}),
    Case(
        "another-tenants-key-digest",
        chat(),
        (401,),
        headers={"authorization": "Bearer " + "0" * 64, **JSON},
    ),
    Case("models-without-key", None, (401,), path="/v1/models", method="GET", headers={}),
    # where
    Case("path-traversal", None, (404,), path="/v1/../../etc/passwd", method="GET"),
    Case("encoded-traversal", None, (404,), path="/v1/%2e%2e/%2e%2e/etc/passwd", method="GET"),
    Case("metrics-on-the-api-port", None, (404,), path="/metrics", method="GET"),
    Case("get-a-post-endpoint", None, (405,), method="GET"),
    Case("unknown-endpoint", chat(), (404,), path="/v1/embeddings", code="not_found"),
    Case("fine-tuning-endpoint", chat(), (404,), path="/v1/fine_tuning/jobs"),
    # what: the body
    Case("not-json", b"not json", code="invalid_json"),
    Case("json-array", b"[]"),
    Case("json-string", b'"x"'),
    Case("json-null", b"null"),
    Case("invalid-utf8", b'{"model": "\xff\xfe"}', code="invalid_json"),
    Case("deep-nesting", b"[" * 100_000 + b"]" * 100_000, code="invalid_json"),
    Case("missing-model", json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode()),
    Case("model-not-a-string", chat(model=123)),  # type: ignore[arg-type]
    Case("unknown-model", chat(model="gpt-4"), (404,), code="model_not_found"),
    Case("model-path-traversal", chat(model="../../../etc/passwd"), (404,)),
    Case("model-other-namespace-id-traversal", chat(model="{team_a}/../kube-system/x"), (404,)),
    Case("model-huge", chat(model="m" * 10_000), (404,)),
    Case("model-newline", chat(model="{support}\nx-injected: 1"), (404,)),
    Case("messages-missing", json.dumps({"model": "{support}"}).encode()),
    Case("messages-not-a-list", chat(messages="hi")),
    Case("messages-empty", chat(messages=[])),
    Case(
        "too-many-messages",
        messages(*[{"role": "user", "content": "x"}] * 300),
        code="too_many_messages",
    ),
    Case("role-unknown", messages({"role": "root", "content": "x"})),
    Case("message-not-an-object", messages("just a string")),
    Case("content-object", messages({"role": "user", "content": {"$ne": 1}})),
    Case(
        "content-image-part",
        messages(
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}],
            }
        ),
    ),
    Case("max-tokens-negative", chat(max_tokens=-1)),
    Case("max-tokens-string", chat(max_tokens="1e9")),
    Case("max-tokens-bool", chat(max_tokens=True)),
    Case("n-many", chat(n=100)),
    Case("stream-not-bool", chat(stream="yes")),
    Case("sampling-parameters-not-object", chat(sampling_parameters=[1])),
    Case("body-too-large", chat(padding="x" * (3 * 1024 * 1024)), (413,), code="request_too_large"),
    Case(
        "content-length-lies",
        b"{}",
        (413,),
        headers={**KEY, **JSON, "content-length": str(50 * 1024 * 1024)},
    ),
    # contained: answered normally, nothing leaks, nothing hangs
    # an upstream failure names no internal endpoint (Service name, port, address)
    Case(
        "upstream-failure-hides-the-endpoint",
        chat(model="{team_b}/failing"),
        (502,),
        code="upstream_error",
    ),
    Case(
        "null-bytes", messages({"role": "user", "content": "refund \u0000\u0000 invoice"}), (200,)
    ),
    Case("huge-request-id", chat(), (200,), headers={**KEY, **JSON, "x-request-id": "r" * 10_000}),
    Case("prompt-3000-chars", messages({"role": "user", "content": "invoice " * 400}), (200,)),
    Case(
        "duplicate-keys",
        b'{"model": "nope", "model": "{support}", "messages": '
        b'[{"role": "user", "content": "refund"}]}',
        (200,),
    ),
]


def _fill(case: Case, fleet) -> tuple[bytes | None, str]:
    names = {
        "{support}": fleet.model("support"),
        "{team_a}": fleet.team_a,
        "{team_b}": fleet.team_b,
    }
    body, path = case.body, case.path
    for token, value in names.items():
        if body is not None:
            body = body.replace(token.encode(), value.encode())
    return body, path


def _raw(fleet, method: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
    """One request on a raw socket: paths and headers exactly as written."""
    port = int(fleet.router_url.rsplit(":", 1)[1])
    lines = [f"{method} {path} HTTP/1.1", f"Host: {ROUTER_ADDR}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None and "content-length" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    chunks = []
    with socket.create_connection((ROUTER_ADDR, port), timeout=30) as s:
        with contextlib.suppress(ConnectionError):  # answered (413) before the whole body
            s.sendall(data)
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionError:
            pass
    return b"".join(chunks)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request(hostile_fleet, case):
    fleet = hostile_fleet
    body, path = _fill(case, fleet)
    raw = _raw(fleet, case.method, path, case.headers, body)
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert status in case.status, (case.id, raw[:500])
    if status != 200 and b"application/json" in head.lower():
        error = json.loads(payload)["error"]  # OpenAI-style: message, type, param, code
        assert {"message", "type", "param", "code"} <= set(error), error
        if case.code:
            assert error["code"] == case.code, error
    lowered = raw.lower()
    leaks = (b"sk-team", b"traceback", b"169.254", POD_ADDR.encode(), b"kubernetes.default",
             b".svc", b":8001", b"stand-in model failure")  # fmt: skip
    for secret in leaks:
        assert secret not in lowered, (case.id, secret)
    if case.id == "huge-request-id":
        echoed = [
            ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"x-slmfleet-request-id")
        ]
        assert echoed and len(echoed[0]) < 200


def test_the_fleet_serves_after_the_corpus(hostile_fleet):
    hostile_fleet.still_serving()
    assert hostile_fleet.router_alive()
    assert httpx.get(f"{hostile_fleet.router_url}/readyz").status_code == 200
