"""The request guard's decisions, driven through ASGI with a stand-in app (the real
router behind it is exercised in tests/integration/test_hostile_tenants.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from slmfleet.router.guard import (
    UNAUTHENTICATED,
    Guard,
    GuardSettings,
    RateLimiter,
    TokenBucket,
    caller_key,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scope(path="/v1/chat/completions", key: bytes | None = b"Bearer k1", client="10.0.0.1"):
    headers = [(b"authorization", key)] if key else []
    return {"type": "http", "path": path, "method": "POST", "headers": headers,
            "client": (client, 1234)}  # fmt: skip


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def __call__(self, message):
        self.messages.append(message)

    @property
    def status(self):
        return next(m["status"] for m in self.messages if m["type"] == "http.response.start")

    def header(self, name: bytes):
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return dict(start["headers"]).get(name)

    def body(self):
        return orjson.loads(b"".join(m.get("body", b"") for m in self.messages))


async def ok_app(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def body_once():
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    return receive


def test_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate=2.0, capacity=2.0, tokens=2.0, stamp=0.0)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token every half second
    assert bucket.take(0.5) == 0.0


def test_rate_limiter_keys_are_bounded_and_digested():
    clock = Clock()
    limiter = RateLimiter(1.0, 1, max_keys=3, clock=clock)
    for i in range(10):
        limiter.wait(f"k{i}")
    assert len(limiter.buckets) == 3
    key = caller_key(scope(key=b"Bearer sk-very-secret"), valid)
    assert key.startswith("key:") and "secret" not in key
    assert caller_key(scope(key=b"Bearer  sk-very-secret "), valid) == key  # as checked


KEYS = {"k1", "k2", "sk-very-secret"}


def valid(s) -> bool:
    """The router's check (RouterApp.authorized) over KEYS."""
    auth = dict(s["headers"]).get(b"authorization", b"").decode("latin-1")
    return auth[:7].lower() == "bearer " and auth[7:].strip() in KEYS


@pytest.mark.parametrize(
    ("key", "authorized", "expected"),
    [
        (b"Bearer k1", valid, "key:"),  # a valid key: its own bucket
        (b"Bearer junk-1", valid, UNAUTHENTICATED),  # any other token: the shared one
        (b"Basic k1", valid, UNAUTHENTICATED),
        (None, valid, UNAUTHENTICATED),
        (b"Bearer k1", None, "addr:10.0.0.1"),  # no API keys: the client's address
        (None, None, "addr:10.0.0.1"),
    ],
)
def test_caller_key(key, authorized, expected):
    assert caller_key(scope(key=key), authorized).startswith(expected)


async def statuses_of(guard, keys) -> list[int]:
    out = []
    for key in keys:
        rec = Recorder()
        await guard(scope(key=key), body_once(), rec)
        out.append(rec.status)
    return out


async def test_junk_tokens_share_one_bucket_and_cannot_evict_a_valid_key():
    """Rotating bogus tokens get no fresh budget each, and 10,000 of them (the bucket
    limit) do not evict a real key's emptied bucket (which would refill it)."""
    clock = Clock()
    guard = Guard(ok_app, GuardSettings(rate_per_second=1.0, burst=5), clock=clock,
                  authorized=valid)  # fmt: skip
    assert await statuses_of(guard, [b"Bearer k1"] * 6) == [200] * 5 + [429]
    junk = [f"Bearer junk-{i}".encode() for i in range(10_000)]
    assert await statuses_of(guard, junk[:6]) == [200] * 5 + [429]  # one shared bucket
    await statuses_of(guard, junk)
    assert len(guard.limiter.buckets) == 2
    assert await statuses_of(guard, [b"Bearer k1"]) == [429]  # still empty: not evicted
    assert await statuses_of(guard, [b"Bearer k2"]) == [200]  # other keys unaffected


async def test_rate_limit_answers_429_with_retry_after_per_key():
    clock = Clock()
    guard = Guard(ok_app, GuardSettings(rate_per_second=1.0, burst=2), clock=clock,
                  authorized=valid)  # fmt: skip
    statuses = []
    for _ in range(3):
        out = Recorder()
        await guard(scope(), body_once(), out)
        statuses.append(out.status)
    assert statuses == [200, 200, 429]
    assert out.header(b"retry-after") == b"1"
    assert out.body()["error"]["code"] == "rate_limit_exceeded"
    other = Recorder()
    await guard(scope(key=b"Bearer k2"), body_once(), other)  # another key is not affected
    assert other.status == 200
    clock.now += 1.0
    again = Recorder()
    await guard(scope(), body_once(), again)
    assert again.status == 200


async def test_in_flight_cap_answers_503_and_frees_its_slot():
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        if scope["path"].startswith("/v1/"):
            await release.wait()
        await ok_app(scope, receive, send)

    guard = Guard(slow_app, GuardSettings(max_in_flight=2))
    first = [asyncio.create_task(guard(scope(), body_once(), Recorder())) for _ in range(2)]
    await asyncio.sleep(0.01)
    over = Recorder()
    await guard(scope(), body_once(), over)
    assert over.status == 503 and over.header(b"retry-after") == b"1"
    assert over.body()["error"]["code"] == "overloaded"
    health = Recorder()
    await guard(scope(path="/healthz"), body_once(), health)  # probes are never capped
    assert health.status == 200
    release.set()
    await asyncio.gather(*first)
    assert guard.in_flight == 0
    after = Recorder()
    await guard(scope(), body_once(), after)
    assert after.status == 200


async def test_a_body_that_never_arrives_is_answered_408_and_the_app_learns_it_is_gone():
    seen = []

    async def app(scope, receive, send):
        message = await receive()
        seen.append(message["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    async def trickle():
        await asyncio.sleep(10)
        return {"type": "http.request", "body": b"x", "more_body": True}

    out = Recorder()
    guard = Guard(app, GuardSettings(body_timeout=0.05))
    await asyncio.wait_for(guard(scope(), trickle, out), timeout=2)
    assert out.status == 408 and out.header(b"connection") == b"close"
    assert seen == ["http.disconnect"]
    assert b"late" not in b"".join(m.get("body", b"") for m in out.messages)


async def test_metrics_are_not_served_on_the_api_port():
    out = Recorder()
    await Guard(ok_app, GuardSettings())(scope(path="/metrics"), body_once(), out)
    assert out.status == 404
    out = Recorder()
    await Guard(ok_app, GuardSettings(metrics_on_api_port=True))(
        scope(path="/metrics"), body_once(), out
    )
    assert out.status == 200
